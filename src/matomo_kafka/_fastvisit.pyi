from collections.abc import Callable
from typing import Any

class VisitRewriter:
    """One site's visit transform in C (_fastvisit.c); transform.py is the reference."""

    def __init__(
        self,
        visit_renames: tuple[tuple[bytes, bytes, bytes], ...],
        visit_columns: tuple[bytes, ...],
        action_renames: tuple[tuple[bytes, bytes, bytes], ...],
        action_columns: tuple[bytes, ...],
        check_goals: bool,
        hash_raw: Callable[[bytes], bytes],
        hash_text: Callable[[str], str],
        hmac_key: bytes | None = None,
    ) -> None: ...
    @property
    def native_hmac(self) -> bool: ...
    def rewrite(self, raw: object) -> tuple[bytes, int | None, int | None] | None: ...
    def rewrite_page(
        self, page: bytes, prefix: bytes, message_type: type[tuple[Any, ...]], keyset: bool
    ) -> tuple[list[Any], list[Any], list[Any], list[tuple[int, int, int]]] | None: ...
