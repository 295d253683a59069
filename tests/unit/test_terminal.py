"""Text from outside on the terminal (issue 27): rich reads no markup or emoji code in it, and
its control characters show escaped (tests/integration/test_terminal_text.py runs the
commands on such values)."""

from __future__ import annotations

import io

from hypothesis import given
from hypothesis import strategies as st
from rich.table import Table
from rich.text import Text

from matomo_kafka.ops.terminal import escape_controls, plain, plain_console


def printed(*cells: str | Text) -> str:
    out = io.StringIO()
    table = Table()
    table.add_column("value")
    for cell in cells:
        table.add_row(cell)
    plain_console(file=out, width=200).print(table)
    return out.getvalue()


def test_markup_and_emoji_codes_print_as_they_are() -> None:
    for value in ("[/x] Shop", "a [bold]b[/bold]", "[link=https://e.example]x[/link]",
                  ":smile: x", "x\\[y]", "C:\\data\\[prod]\\"):  # fmt: skip
        assert value in printed(value), value  # a str cell: the console reads no markup
        assert value in printed(plain(value)), value


def test_control_characters_show_escaped() -> None:
    assert escape_controls("a\x1b[2Jb\x07\r\x7f\x85\u202e\tc\nd") == (
        "a\\x1b[2Jb\\x07\\r\\x7f\\x85\\u202e\tc\nd"
    )
    assert "\x1b" not in printed(plain("shop \x1b]0;owned\x07"))


@given(st.text())
def test_escaping_leaves_no_control_and_is_stable(text: str) -> None:
    once = escape_controls(text)
    assert escape_controls(once) == once
    assert not [c for c in once if c not in "\t\n" and _control(c)]


def _control(char: str) -> bool:
    code = ord(char)
    return (
        code < 0x20 or 0x7F <= code <= 0x9F or 0x202A <= code <= 0x202E or 0x2066 <= code <= 0x2069
    )
