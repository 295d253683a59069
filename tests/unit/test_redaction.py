"""Redaction never mangles output, and every secret of 8 characters or more is still masked:
the Redactor and the logging filter (tests/integration/test_redaction.py runs the command with
a short salt, which used to turn `Europe/Paris` into `Europe/Pari***`)."""

from __future__ import annotations

import logging
import sys

from matomo_kafka.ops.redaction import RedactingFilter, Redactor

TOKEN_8 = "tk8-Zq7x"  # exactly 8 characters: the shortest secret that is masked


def test_redactor_masks_secrets_of_8_characters_or_more_only() -> None:
    redactor = Redactor(["s", "pw-7chr", TOKEN_8, "a-much-longer-token-value"])
    text = "1 of 2 sites, Europe/Paris; pw-7chr tk8-Zq7x; token_auth=a-much-longer-token-value"
    assert redactor(text) == "1 of 2 sites, Europe/Paris; pw-7chr ***; token_auth=***"


def test_logged_exception_masks_an_8_character_secret() -> None:
    record = logging.LogRecord(
        "matomo_kafka", logging.ERROR, __file__, 1, "login with %s failed", (TOKEN_8,), None
    )
    try:
        raise RuntimeError(f"refused {TOKEN_8} at https://x/?token_auth={TOKEN_8}")
    except RuntimeError:
        record.exc_info = sys.exc_info()
    RedactingFilter(Redactor([TOKEN_8])).filter(record)
    assert record.getMessage() == (
        "login with *** failed (RuntimeError: refused *** at https://x/?token_auth=***)"
    )
