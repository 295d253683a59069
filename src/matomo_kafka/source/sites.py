"""Which sites a run extracts: the configured list or `all`, cut into shards, and the policy
for sites whose visitor log is disabled.

Shards: `--shard i/n` keeps the sites whose `crc32(str(idsite)) % n == i`. The assignment
depends only on the site id and n, so adding or removing a site never moves another site to
a different shard (only changing n does); every instance computes it alone, with no
coordination, and checkpoint locks are per site, so shards on shared files never block each
other.
"""

from __future__ import annotations

import re
import zlib
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from matomo_kafka.errors import MatomoError
from matomo_kafka.model import DISABLED, SiteReport
from matomo_kafka.source.client import MatomoClient
from matomo_kafka.state.checkpoint_files import CheckpointStore

#: Matomo's message when a site's visitor log (Live) is disabled in its settings.
LOG_DISABLED_MESSAGE = "Visits log is deactivated"


@dataclass(frozen=True)
class Shard:
    """Shard `index` of `count` (0 <= index < count)."""

    index: int
    count: int

    def __str__(self) -> str:
        return f"{self.index}/{self.count}"

    def owns(self, idsite: int) -> bool:
        return shard_of(idsite, self.count) == self.index

    def select(self, sites: Iterable[int]) -> tuple[int, ...]:
        return tuple(idsite for idsite in sites if self.owns(idsite))


def shard_of(idsite: int, count: int) -> int:
    """The shard of a site: crc32 of its decimal id, modulo the number of shards."""
    return zlib.crc32(str(idsite).encode()) % count


def parse_shard(text: str) -> Shard:
    """`i/n` with 0 <= i < n; ValueError with a one-line reason otherwise."""
    match = re.fullmatch(r"\s*(\d+)\s*/\s*(\d+)\s*", text)
    if not match:
        raise ValueError(
            f"--shard {text!r} must be INDEX/COUNT, e.g. 0/4 (a Kubernetes Indexed Job passes "
            "$(JOB_COMPLETION_INDEX)/COUNT)"
        )
    index, count = int(match.group(1)), int(match.group(2))
    if count < 1 or count > 10_000:
        raise ValueError(f"--shard {text!r}: COUNT must be between 1 and 10000")
    if index >= count:
        raise ValueError(f"--shard {text!r}: INDEX must be between 0 and {count - 1}")
    return Shard(index, count)


def resolve_all_sites(matomo: MatomoClient) -> tuple[int, ...]:
    """MATOMO_ID_SITE=all: every site the token can view, in ascending id order."""
    sites = matomo.sites_with_view_access()
    if not sites:
        raise MatomoError(
            "MATOMO_ID_SITE=all: the token can view no site "
            "(SitesManager.getSitesIdWithAtLeastViewAccess is empty)"
        )
    return tuple(sites)


def is_log_disabled(site: SiteReport) -> bool:
    """The site failed only because Matomo's visitor log is disabled for it."""
    return (
        site.status == "failed"
        and site.error_kind == "SiteAccessError"
        and LOG_DISABLED_MESSAGE in (site.error or "")
    )


def skip_disabled_sites(sites: Iterable[SiteReport], strict: bool) -> list[SiteReport]:
    """Unless strict, marks the sites whose visitor log is disabled as `disabled` (reported,
    not a failure); returns them. Nothing was read from them, so their checkpoints are as
    they were."""
    if strict:
        return []
    skipped = [site for site in sites if is_log_disabled(site)]
    for site in skipped:
        site.status = DISABLED
    return skipped


def sites_with_checkpoints(store: CheckpointStore) -> tuple[int, ...]:
    """Site ids that have a checkpoint file (`<FILE_PATH_FILTERDATE><idsite>.txt`)."""
    prefix = Path(store.filterdate_prefix)
    directory = prefix.parent
    if not directory.is_dir():
        return ()
    pattern = re.compile(re.escape(prefix.name) + r"(\d+)\.txt")
    found = {
        int(match.group(1))
        for path in directory.iterdir()
        if (match := pattern.fullmatch(path.name)) and int(match.group(1)) > 0
    }
    return tuple(sorted(found))
