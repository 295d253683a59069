"""The `matomo-kafka` command: run, follow, check, status, reset, audit, reconcile, simulate,
schema (one module each).

Every failure ends as one redacted line on stderr and a documented exit code (see errors.py):
0 ok, 1 run failed, 2 bad configuration or arguments, 3 another run holds the lock,
130 interrupted after the last acknowledged page.
"""

from __future__ import annotations

import sys
import traceback
from typing import Annotated

import typer

from matomo_kafka import __version__
from matomo_kafka.cli import (  # the commands
    audit,
    check,
    follow,
    reconcile,
    reset,
    run,
    schema,
    simulate,
    status,
)
from matomo_kafka.cli.common import _redactor, app
from matomo_kafka.errors import EXIT_FAILED, EXIT_INTERRUPTED, EXIT_OK
from matomo_kafka.ops.memory import limit_malloc_arenas

__all__ = [
    "app", "audit", "check", "follow", "main", "reconcile", "reset", "run", "schema", "simulate",
    "status",
]  # fmt: skip


@app.callback(invoke_without_command=True)
def _root(
    version: Annotated[bool, typer.Option("--version", help="Print the version.")] = False,
) -> None:
    if version:
        print(f"matomo-kafka {__version__}")
        raise typer.Exit(EXIT_OK)


def main() -> None:
    """Entry point: unexpected exceptions become one redacted line, never a traceback."""
    limit_malloc_arenas()  # before any thread allocates (ops/memory.py)
    try:
        app()
    except SystemExit:
        raise
    except KeyboardInterrupt:
        print("matomo-kafka: interrupted", file=sys.stderr)
        sys.exit(EXIT_INTERRUPTED)
    except Exception as exc:  # the last line of defence for secrets in tracebacks
        if "--verbose" in sys.argv or "-v" in sys.argv:
            print(_redactor(traceback.format_exc()), file=sys.stderr)
        print(f"matomo-kafka: internal error: {type(exc).__name__}: {_redactor(str(exc))}",
              file=sys.stderr)  # fmt: skip
        sys.exit(EXIT_FAILED)
