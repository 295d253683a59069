"""The JSON Schema of a message value (message.schema.json beside this module, shipped as
package data): the contract of what the transform makes.

`matomo-kafka schema` prints it; docs/message.schema.json links to the file, and
tests/integration/test_message_schema.py checks every message the transform makes from real
Matomo answers and from the simulator against it.
"""

from __future__ import annotations

import json
from importlib.resources import files
from typing import Any

SCHEMA_FILE = "message.schema.json"


def message_schema_text() -> str:
    """The schema as shipped: JSON text, ending with a newline."""
    return files("matomo_kafka.transform").joinpath(SCHEMA_FILE).read_text(encoding="utf-8")


def message_schema() -> dict[str, Any]:
    """The schema as a dict (JSON Schema draft 2020-12)."""
    schema: dict[str, Any] = json.loads(message_schema_text())
    return schema
