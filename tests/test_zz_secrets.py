"""Runs last (file order): every CLI output of the whole session, scanned for secrets."""

from __future__ import annotations

from conftest import CLI_OUTPUTS, SALT, TOKEN

# Every secret the suite hands to the tool: token, salt, gateway and Kafka passwords (and the
# wrong ones of test_tls.py and test_token.py: a gateway password, a client key's password, a
# token).
SECRETS = [TOKEN, SALT, "sps-secret-77", "kafka-pw-do-not-print", "matomo-local-secret",
           "sps-wrong-pw-4b8e1d", "key-wrong-pw-71c0aa",
           "wrong-token-7c2e9a41"]  # fmt: skip


def test_no_secret_in_any_cli_output() -> None:
    assert CLI_OUTPUTS, "no CLI output was collected: run the whole suite"
    for output in CLI_OUTPUTS:
        for secret in SECRETS:
            assert secret not in output
