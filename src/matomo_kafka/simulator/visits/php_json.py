"""PHP's json_encode look-alike ("\\/" for slashes and \\uXXXX for non-ASCII, as in the
samples), so clients meet Matomo's real escaping; `_p` marks strings for its fast path."""

from __future__ import annotations

import json
import re
from typing import Any

import orjson

_UTF8_CHAR_RE = re.compile(rb"[\xc0-\xf7][\x80-\xbf]+")


def _u_escape(m: re.Match[bytes]) -> bytes:
    cp = ord(m.group().decode("utf-8"))
    if cp < 0x10000:
        return b"\\u%04x" % cp
    cp -= 0x10000
    return b"\\u%04x\\u%04x" % (0xD800 + (cp >> 10), 0xDC00 + (cp & 0x3FF))


class _PStr(str):
    """A non-ASCII str marked for the fast escaping path of php_json.

    orjson hands str subclasses to ``default`` (OPT_PASSTHROUGH_SUBCLASS), which returns the
    precomputed \\uXXXX form; scanning 3 KB per visit with a regex would cost more than
    generating the visit. It compares equal to the plain str.
    """


_FRAGMENTS: dict[str, orjson.Fragment] = {}


def _p(s: str) -> str:
    """Mark s for php_json's fast path if it is not ASCII (call outside hot loops)."""
    if s.isascii():
        return s
    if s not in _FRAGMENTS:
        _FRAGMENTS[s] = orjson.Fragment(json.dumps(s).encode("ascii"))
    return _PStr(s)


def _default(obj: Any) -> orjson.Fragment:
    if isinstance(obj, str):
        frag = _FRAGMENTS.get(obj)
        if frag is None:
            frag = _FRAGMENTS[obj] = orjson.Fragment(json.dumps(str(obj)).encode("ascii"))
        return frag
    raise TypeError(f"not JSON serialisable: {type(obj).__name__}")


def php_json(obj: Any) -> bytes:
    """Serialise like PHP's json_encode ("\\/" and \\uXXXX) so clients meet real escaping."""
    raw = orjson.dumps(obj, default=_default, option=orjson.OPT_PASSTHROUGH_SUBCLASS)
    raw = raw.replace(b"/", b"\\/")
    if raw.isascii():
        return raw
    return _UTF8_CHAR_RE.sub(_u_escape, raw)  # unmarked non-ASCII strings: slow but right
