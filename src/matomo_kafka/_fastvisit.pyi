from collections.abc import Callable

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
    ) -> None: ...
    def rewrite(self, raw: object) -> tuple[bytes, int | None, int | None] | None: ...
