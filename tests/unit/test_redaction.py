"""Redaction never mangles output, and every secret of 8 characters or more is still masked:
the Redactor and the logging filter (tests/integration/test_redaction.py runs the command with
a short salt, which used to turn `Europe/Paris` into `Europe/Pari***`)."""

from __future__ import annotations

import logging
import string
import sys

from hypothesis import assume, given, settings
from hypothesis import strategies as st

from matomo_kafka.ops.redaction import MIN_MASKED_LENGTH, RedactingFilter, Redactor

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


# -- issue 27: a secret cut short ------------------------------------------------------------

#: What secrets are made of here; never `*` (the mask) nor what the text around them uses.
SECRET_CHARS = string.ascii_letters + string.digits + "-_.~+/="
AROUND_CHARS = " ,:;'\"()[]{}<>!?#@%&|\n\t"
secrets = st.text(SECRET_CHARS, min_size=MIN_MASKED_LENGTH, max_size=64)
around = st.text(AROUND_CHARS, max_size=30)

#: Lines the tool prints, words operators read: none may change for a random secret.
EVERYDAY_LINES = [
    "matomo-kafka 0.1.0 run: sites 1,2, topic matomo.visits, cluster PROD01",
    "site 2: 2024-03-05 done: 48 visits, 5 page(s) in 0.8s; 3/5 days, ETA 0:00:02",
    "checkpoint /data/matomo-kafka/filterdate2.txt does not hold a YYYY-MM-DD day",
    "Matomo 5.0.2 at https://matomo.example/index.php; Europe/Paris, visits log readable",
    "follow: cycle 12 up to 2024-03-05 09:20:00Z: 34 visit(s) from 2 site(s) in 0.8s",
    '{"level": "WARNING", "message": "config: SALAGE: shorter than 16 bytes"}',
]


@settings(max_examples=200)
@given(secret=secrets, before=around, after=around, length=st.integers(MIN_MASKED_LENGTH, 64),
       end=st.booleans())  # fmt: skip
def test_a_piece_of_8_characters_or_more_is_masked_and_only_it(
    secret: str, before: str, after: str, length: int, end: bool
) -> None:
    piece = secret[-length:] if end else secret[:length]
    assert Redactor([secret])(before + piece + after) == before + "***" + after


@settings(max_examples=200)
@given(secret=secrets, data=st.data())
def test_no_first_or_last_8_characters_survive(secret: str, data: st.DataObject) -> None:
    """Whatever the text: pieces of the secret, of other secrets, joined, repeated."""
    other = data.draw(secrets)
    parts = st.one_of(
        st.text(SECRET_CHARS + AROUND_CHARS, max_size=12),
        st.integers(0, len(secret)).map(lambda n: secret[:n]),
        st.integers(0, len(secret)).map(lambda n: secret[n:]),
        st.just(other),
    )
    text = "".join(data.draw(st.lists(parts, max_size=8)))
    masked = Redactor([secret, other])(text)
    for known in (secret, other):
        assert known[:MIN_MASKED_LENGTH] not in masked and known[-MIN_MASKED_LENGTH:] not in masked


@settings(max_examples=200)
@given(secret=secrets, text=st.text(max_size=200))
def test_text_without_a_piece_of_a_secret_is_left_as_it_is(secret: str, text: str) -> None:
    assume(secret[:MIN_MASKED_LENGTH] not in text and secret[-MIN_MASKED_LENGTH:] not in text)
    assert Redactor([secret])(text) == text


@given(token=st.binary(min_size=8, max_size=32).map(bytes.hex), salt=st.text(
    SECRET_CHARS, min_size=16, max_size=40))  # fmt: skip
def test_random_secrets_leave_everyday_lines_whole(token: str, salt: str) -> None:
    redactor = Redactor([token, salt])
    for line in EVERYDAY_LINES:
        assert redactor(line) == line


def test_an_excerpt_cut_in_a_secret_is_masked() -> None:
    """The review's case: 40 characters of an env file, cut inside the token."""
    token = "3f9c2a7e51d04b8c9e6f1a2b3c4d5e6f"
    excerpt = repr(f'MATOMO_API_TOKEN="{token}"\n'[:40])
    assert Redactor([token])(f"checkpoint holds {excerpt}") == (
        "checkpoint holds 'MATOMO_API_TOKEN=\"***'"
    )
    assert Redactor([token])('...1a2b3c4d5e6f" (wrapped)') == '...***" (wrapped)'
