import hashlib
import hmac
from typing import Any

import orjson


def value_text(value: Any) -> str:
    """The text form of a JSON value that the HMAC is computed over."""
    if isinstance(value, str):
        return value
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    return orjson.dumps(value, option=orjson.OPT_SORT_KEYS).decode()


def pseudonymise(key: bytes, value: Any) -> Any:
    """Keyed hash of one value; None stays None so absent data is not made to look present.
    The reference form of the rule; the hot path uses KeyedHash, which gives the same."""
    if value is None:
        return None
    return hmac.digest(key, value_text(value).encode("utf-8"), "sha256").hex()


_IPAD = bytes(byte ^ 0x36 for byte in range(256))


_OPAD = bytes(byte ^ 0x5C for byte in range(256))


class KeyedHash:
    """`pseudonymise` with the key prepared once: HMAC-SHA256's inner and outer SHA-256
    states (RFC 2104) are computed here and copied per value, where hmac.digest derives them
    again on every call (1.2 us instead of 1.8 us a value on the development machine)."""

    __slots__ = ("_inner", "_outer")

    def __init__(self, key: bytes) -> None:
        block = hashlib.sha256().block_size
        if len(key) > block:
            key = hashlib.sha256(key).digest()
        key = key.ljust(block, b"\0")
        self._inner = hashlib.sha256(key.translate(_IPAD))
        self._outer = hashlib.sha256(key.translate(_OPAD))

    def __repr__(self) -> str:
        return "KeyedHash(<secret key>)"

    def __call__(self, value: Any) -> Any:
        if value is None:
            return None
        return self.of_text(value_text(value))

    def of_text(self, text: str) -> str:
        """The pseudonym of a value given as its text (value_text)."""
        inner = self._inner.copy()
        inner.update(text.encode("utf-8"))
        outer = self._outer.copy()
        outer.update(inner.digest())
        return outer.hexdigest()
