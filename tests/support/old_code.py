"""The tool as it was before a change of its state files, run from the repository's own
history: upgrade tests run it, then the current code on the same files and topic."""

from __future__ import annotations

import subprocess
from pathlib import Path

from support.kafka import REPO

#: main before the topic id was kept beside the checkpoints (issue 28): its checkpoint files
#: are those an installation upgrading has.
BEFORE_TOPIC_ID = "1b53024b7744e3257b15aec94438616125447b2b"


def old_source(commit: str, target: Path) -> Path | None:
    """`src/` of `commit` extracted under `target` (put it first on PYTHONPATH to run that
    version's CLI); None when this checkout lacks that commit (a shallow clone)."""
    archive = subprocess.run(["git", "-C", str(REPO), "archive", commit, "src/matomo_kafka"],
                             capture_output=True, timeout=60)  # fmt: skip
    if archive.returncode != 0:
        return None
    target.mkdir(parents=True, exist_ok=True)
    subprocess.run(["tar", "-x", "-C", str(target)], input=archive.stdout, check=True, timeout=60)
    return target / "src"
