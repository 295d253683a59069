"""`matomo-kafka schema`: the JSON Schema of a message value, for consumers."""

from __future__ import annotations

import sys

from matomo_kafka.cli.common import app
from matomo_kafka.transform.schema import message_schema_text


@app.command()
def schema() -> None:
    """Prints the JSON Schema of a message value (what consumers can rely on)."""
    sys.stdout.write(message_schema_text())
