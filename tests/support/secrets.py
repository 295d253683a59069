"""Every secret the tests hand the tool, right or wrong, and a scan for them, whole or cut
short (their first or last 8 characters: what an excerpt cut at a fixed width, or a wrapped
line, shows; the redactor masks those too, ops/redaction.py).

tests/conftest.py scans every CLI output of every test for them (`CLI_OUTPUTS`, after each
test); tests/proofs/test_secrets.py runs the tool with all of them configured, failing runs
included, and scans what those runs print and write. A secret a test uses goes here."""

from __future__ import annotations

from collections.abc import Iterable

from matomo_kafka.ops.redaction import MIN_MASKED_LENGTH
from support.kafka import SASL_PASSWORD
from support.parm import SALT, TOKEN

#: The Matomo gateway's basic-auth login (the simulator asks for it when told to).
GATEWAY = ("sps-gateway", "sps-secret-77")
WRONG_GATEWAY_PASSWORD = "sps-wrong-pw-4b8e1d"
#: A wrong SASL password for the local broker.
WRONG_KAFKA_PASSWORD = "kafka-pw-do-not-print"
#: A wrong password for the mTLS client key (KAFKA_PRODUCER_SSL_KEY_PASSWORD).
WRONG_KEY_PASSWORD = "key-wrong-pw-71c0aa"
WRONG_TOKEN = "wrong-token-7c2e9a41"

#: What each secret is, by name (a report names a leak, never shows it again).
SECRETS: dict[str, str] = {
    "MATOMO_API_TOKEN": TOKEN,
    "SALAGE": SALT,
    "MATOMO_SPS_MDP": GATEWAY[1],
    "KAFKA_PASSWORD (the local broker's: KAFKA_LOCAL_SASL_PASSWORD)": SASL_PASSWORD,
    "a wrong MATOMO_SPS_MDP": WRONG_GATEWAY_PASSWORD,
    "a wrong KAFKA_PASSWORD": WRONG_KAFKA_PASSWORD,
    "a wrong client key password": WRONG_KEY_PASSWORD,
    "a wrong MATOMO_API_TOKEN": WRONG_TOKEN,
}


def shows(text: str, secret: str) -> str | None:
    """ "" when `secret` shows whole in `text`, " (cut short)" when only its first or last
    MIN_MASKED_LENGTH characters do (any longer piece holds them), None when neither."""
    if secret in text:
        return ""
    size = MIN_MASKED_LENGTH
    if len(secret) > size and (secret[:size] in text or secret[-size:] in text):
        return " (cut short)"
    return None


def leaks(outputs: Iterable[str], secrets: dict[str, str] | None = None) -> list[str]:
    """Where a secret shows, whole or cut short: "output N line L: <name>[ (cut short)]" (or
    "output N, wrapped over lines: <name>..." when it shows only once the whitespace is gone,
    as a console wraps a long line)."""
    found: list[str] = []
    named = secrets if secrets is not None else SECRETS
    for number, output in enumerate(outputs, 1):
        compact = "".join(output.split())
        for name, secret in named.items():
            how = shows(compact, secret)
            if how is None:
                continue
            lines = [
                n for n, line in enumerate(output.splitlines(), 1) if shows(line, secret) == how
            ]
            found += [f"output {number} line {n}: {name}{how}" for n in lines] or [
                f"output {number}, wrapped over lines: {name}{how}"
            ]
    return found
