"""Text from outside shown on a terminal by rich: always as plain text.

Matomo's answers (site names, timezones, versions, error messages) and values from parm/
(paths) are not the tool's to style. Rich reads `[...]` in a string as markup (a site named
`[/x] Shop` crashed `check`; `[bold]` would restyle, `[link=...]` make a link) and `:name:` as
an emoji code, and no console filters control characters (an escape sequence in a site name
can move the cursor, retitle or clear the terminal). So every console of the tool prints no
markup and no emoji codes (`plain_console`), and every value from outside goes in as `plain`
Text, its control characters shown escaped; log lines and error lines escape them too (the
CLI's redactor, cli/common.py).
"""

from __future__ import annotations

import re
from typing import Any

from rich.console import Console
from rich.text import Text

#: C0 and C1 controls (tab and newline kept), DEL, and the bidirectional overrides that
#: make a terminal show text in another order than it is.
_CONTROL = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f\u202a-\u202e\u2066-\u2069]")


def _escaped(match: re.Match[str]) -> str:
    return match.group().encode("unicode_escape").decode("ascii")


def escape_controls(text: str) -> str:
    """`text` with its control characters shown escaped (`\\x1b`), tabs and newlines kept:
    for log lines and error lines too, which quote Matomo's messages."""
    return _CONTROL.sub(_escaped, text)


def plain(value: object) -> Text:
    """`value` as rich Text: never markup, never an emoji code, control characters escaped."""
    return Text(escape_controls(str(value)))


def plain_console(**options: Any) -> Console:
    """A rich Console that reads no markup, no emoji codes and highlights nothing."""
    return Console(markup=False, emoji=False, highlight=False, **options)
