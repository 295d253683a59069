"""Secrets scan (issue #3): no secret (token, salt, passwords - right or wrong ones) and no raw
value of a pseudonymised column in any log line, error, summary or metrics file, or Kafka
message. Self-contained: each test runs the tool itself with the secrets configured, failing
runs included, and scans what those runs printed and wrote; nothing here depends on other tests
having run (tests/conftest.py also scans every CLI output of every test after it, for the
secrets of support/secrets.py).

- the proofs' secrets (tests/support/reliability.py `Collector`, which the other proofs use on
  their own outputs and messages too): JSON debug logs, runs failing with a wrong token, Kafka
  password or gateway password, every other command, and a self-test of the scanner;
- the suite's secrets (support/secrets.py, the ones the other tests hand the tool): each one
  configured in at least one run here - HTTPS gateway login, SASL login, token, salt, an mTLS
  key password, and the wrong ones - over good runs, refused runs and config errors, with a
  self-test of that scan.
"""

from __future__ import annotations

import hashlib
import hmac
from datetime import date
from pathlib import Path
from typing import Any

import pytest

from matomo_kafka.simulator import SimSite
from support import reliability as rel
from support.certs import Certs
from support.cli import CLI_OUTPUTS, CliResult, run_cli
from support.kafka import (
    KAFKA_MTLS_PORT,
    KAFKA_SSL_DIR,
    SASL_PASSWORD,
    SASL_PORT,
    SASL_USER,
    read_topic,
)
from support.parm import base_values, write_parm
from support.runs import LIMIT, RUN_DATE, two_sites
from support.secrets import (
    GATEWAY,
    SECRETS,
    WRONG_GATEWAY_PASSWORD,
    WRONG_KAFKA_PASSWORD,
    WRONG_KEY_PASSWORD,
    WRONG_TOKEN,
    leaks,
)

IP, VISITOR, USER = "203.0.113.98", "96994ba87619fe38", "user-13707070"


def pseudonym(value: str) -> str:
    return hmac.new(rel.SALT.encode(), value.encode(), hashlib.sha256).hexdigest()


def message(value: str) -> rel.Record:
    return rel.Record("1:42", value.encode(), (("matomo.idsite", b"1"),))


def test_scanner_flags_planted_leaks_and_only_them() -> None:
    def problems(*outputs: str, messages: tuple[rel.Record, ...] = ()) -> list[str]:
        collector = rel.Collector(raw_values={IP, VISITOR, USER})
        for output in outputs:
            collector.add_output(output)
        collector.add_messages(messages)
        return collector.scan().problems

    clean = message(
        f'{{"visitIp":"{pseudonym(IP)}","visitorId":"{pseudonym(VISITOR)}",'
        f'"userId":null,"actionDetails":[{{"url":"{pseudonym("https://x/")}"}}]}}'
    )
    assert problems("site 1: 2024-03-01 page 1: 10 visits", "ip 203.0.113.9 elsewhere",
                    messages=(clean,)) == []  # fmt: skip
    assert problems(f"token_auth={rel.TOKEN}")
    assert problems(f"salt is {rel.SALT}!")
    assert problems(f"ERROR visit from {IP}: refused")
    assert problems(f'{{"message": "visitor {VISITOR}"}}')
    assert problems(messages=(message(f'{{"visitIp":"{IP}"}}'),))
    assert problems(messages=(message(f'{{"note":"seen {USER}"}}'),))
    assert problems(messages=(message('{"visitIp":"not-a-pseudonym"}'),))
    assert problems(messages=(message('{"actionDetails":[{"url":"https://x/"}]}'),))
    reported = problems(f"password {rel.GATEWAY_PASSWORD} here")
    assert reported and rel.GATEWAY_PASSWORD not in reported[0], "the report leaks it again"
    # Cut short (issue 27): an excerpt cut inside a token, the end of a wrapped salt.
    excerpt = repr(f'MATOMO_API_TOKEN="{rel.TOKEN}"'[:30])
    (reported,) = problems(f"checkpoint holds {excerpt}")
    assert reported.startswith("output: a secret in clear (cut short): ") and "***" in reported
    assert rel.TOKEN[:8] not in reported, "the report leaks the piece again"
    assert problems(f"...{rel.SALT[-8:]} (wrapped)")
    assert problems(f"{rel.SALT[:7]} and {rel.SALT[-7:]}") == []  # 7 characters: chance


@pytest.mark.kafka
@pytest.mark.simulator
@pytest.mark.slow
def test_logs_files_and_messages_of_every_command_leak_nothing(
    kafka_bootstrap: str, tmp_path: Path
) -> None:
    wrong = {"token": "rel-wrong-token-5e1d0c", "kafka": "rel-wrong-kafka-pw-77a1",
             "gateway": "rel-wrong-gw-pw-31f9"}  # fmt: skip
    collector = rel.Collector()
    collector.secrets.update(wrong.values())
    days = {f"2024-03-0{d}": 23 for d in (1, 2, 3)}
    sim = rel.simulator(
        [
            SimSite(idsite=1, name="secrets a", timezone="Europe/Paris", visits=days),
            SimSite(idsite=2, name="secrets b", timezone="UTC+5.5", visits=days),
        ]
    )
    topic = rel.create_topic(kafka_bootstrap)
    reader = rel.TopicReader(kafka_bootstrap, topic)
    try:
        rel.Dataset.build(sim, (1, 2), [date(2024, 3, d) for d in (1, 2, 3)], collector)
        sasl = {"KAFKA_SERVERS": f"127.0.0.1:{rel.SASL_PORT}", "KAFKA_USER": rel.SASL_USER,
                "KAFKA_PASSWORD": rel.SASL_PASSWORD, "KAFKA_SECURITY_PROTOCOL": "SASL_PLAINTEXT",
                "KAFKA_SASL_MECHANISM": "SCRAM-SHA-512"}  # fmt: skip
        metrics = tmp_path / "matomo_kafka.prom"
        base = rel.parm_values(tmp_path / "data", sim.url, topic, kafka_bootstrap,
                               MATOMO_ID_SITE="1,2", LOG_FORMAT="json",
                               METRICS_TEXTFILE=str(metrics), **sasl)  # fmt: skip
        parm = rel.write_parm(tmp_path / "parm", base)
        summary = tmp_path / "summary.json"
        run = ["run", "-v", "--run-date", "2024-03-04", "--summary-file", str(summary)]
        ok = rel.run_cli(collector, *run, "--parm-dir", str(parm))
        assert ok.code == 0, ok.tail()
        collector.add_output(summary.read_text() + metrics.read_text())
        failures = [
            ("token", {"MATOMO_API_TOKEN": wrong["token"]}, "token refused"),
            ("kafka", {"KAFKA_PASSWORD": wrong["kafka"]}, "uthentication"),
            ("gateway", {"MATOMO_SPS_MDP": wrong["gateway"]}, "gateway"),
        ]
        for name, overrides, expected in failures:
            bad = rel.write_parm(tmp_path / f"parm-{name}", {**base, **overrides})
            failed = rel.run_cli(collector, *run, "--parm-dir", str(bad))
            assert failed.code == 1 and expected in failed.stderr, (name, failed.tail())
            collector.add_output(summary.read_text())
        for command in (["status"], ["check"], ["reset", "--site", "1", "--date", "2024-03-02",
                        "--yes"], ["audit", "--site", "1", "--from", "2024-03-01", "--to",
                        "2024-03-03"]):  # fmt: skip
            rel.run_cli(collector, *command, "--parm-dir", str(parm))
        again = rel.run_cli(collector, *run, "--parm-dir", str(parm))  # re-sends 2 days
        assert again.code == 0, again.tail()
        collector.add_messages(reader.catch_up())
    finally:
        reader.close()
        sim.stop()
        CLI_OUTPUTS.extend(collector.outputs)
    figures = rel.assert_clean(collector)
    assert figures.messages == 3 * 2 * 23 + 2 * 23
    assert any('"level": "DEBUG"' in output or '"level":"DEBUG"' in output
               for output in collector.outputs), "no debug line was scanned"  # fmt: skip


# ---- the suite's secrets (support/secrets.py) ------------------------------------------------


def test_the_suite_scan_flags_each_secret_where_it_shows_and_only_there() -> None:
    assert leaks(["site 1: 2024-03-01 page 1: 10 visits", "token_auth=*** salt ***"]) == []
    for name, secret in SECRETS.items():
        assert leaks(["clean", f"error: {secret}!"]) == [f"output 2 line 1: {name}"]
        wrapped = f"error: refused {secret[:5]}\n{secret[5:]} (as a console wraps a long line)"
        assert leaks([wrapped]) == [f"output 1, wrapped over lines: {name}"]
        assert secret not in "".join(leaks([secret])), "the report shows the secret again"
        # Cut short (issue 27): its first or last 8 characters or more, not 7.
        for piece in (secret[:8], secret[:-1], secret[-8:], secret[1:]):
            assert leaks([f"holds '{piece}'"]) == [f"output 1 line 1: {name} (cut short)"]
        assert leaks([f"holds '{secret[:4]}\n{secret[4:9]}'"]) == [
            f"output 1, wrapped over lines: {name} (cut short)"
        ]
        assert leaks([f"{secret[:7]}, {secret[-7:]}"]) == []


@pytest.mark.kafka
@pytest.mark.simulator
@pytest.mark.slow
def test_runs_configured_with_every_suite_secret_leak_none(
    tmp_path: Path, topic: str, sim_factory: Any, certs: Certs
) -> None:
    """HTTPS gateway with basic auth, SASL/SCRAM, JSON debug logs, a metrics textfile and a
    summary file: a good run, runs refused for a wrong token, gateway password and Kafka
    password, an mTLS key password librdkafka refuses, config errors that carry secrets, and
    `check`, `status`, `reset`, `audit`. Every output, summary, metrics file and message."""
    sim = sim_factory(two_sites(LIMIT), tls=certs.server, basic_auth=GATEWAY)
    metrics, summary = tmp_path / "matomo_kafka.prom", tmp_path / "summary.json"
    good = base_values(
        tmp_path, sim.url, topic,
        MATOMO_SPS_USER=GATEWAY[0], MATOMO_SPS_MDP=GATEWAY[1], MATOMO_CA_BUNDLE=str(certs.ca),
        KAFKA_SERVERS=f"127.0.0.1:{SASL_PORT}", KAFKA_USER=SASL_USER,
        KAFKA_PASSWORD=SASL_PASSWORD, KAFKA_SECURITY_PROTOCOL="SASL_PLAINTEXT",
        KAFKA_SASL_MECHANISM="SCRAM-SHA-512", LOG_FORMAT="json", METRICS_TEXTFILE=str(metrics),
        MATOMO_MAX_RETRIES="1",
    )  # fmt: skip
    client = KAFKA_SSL_DIR / "client"
    mtls: dict[str, str | None] = {
        "KAFKA_SERVERS": f"127.0.0.1:{KAFKA_MTLS_PORT}", "KAFKA_SECURITY_PROTOCOL": "SSL",
        "KAFKA_USER": None, "KAFKA_PASSWORD": None, "KAFKA_SASL_MECHANISM": None,
        "KAFKA_SSL_CA_LOCATION": str(KAFKA_SSL_DIR / "ca.pem"),
        "KAFKA_PRODUCER_SSL_CERTIFICATE_LOCATION": f"{client}.pem",
        "KAFKA_PRODUCER_SSL_KEY_LOCATION": f"{client}.key",
        "KAFKA_PRODUCER_SSL_KEY_PASSWORD": WRONG_KEY_PASSWORD,
    }  # fmt: skip
    #: name -> (overrides (None: key left out), exit code, what stderr says)
    runs: dict[str, tuple[dict[str, str | None], int, str]] = {
        "good": ({}, 0, "matomo-kafka"),
        "wrong token": ({"MATOMO_API_TOKEN": WRONG_TOKEN}, 1, "MATOMO_API_TOKEN"),
        "wrong gateway password": ({"MATOMO_SPS_MDP": WRONG_GATEWAY_PASSWORD}, 1,
                                   "MATOMO_SPS_USER/MATOMO_SPS_MDP"),
        "wrong Kafka password": ({"KAFKA_PASSWORD": WRONG_KAFKA_PASSWORD}, 1,
                                 "KAFKA_USER/KAFKA_PASSWORD"),
        "wrong mTLS key password": (mtls, 2, "KAFKA_PRODUCER_SSL_KEY_PASSWORD"),
        "config errors": ({"KAFKA_USER": None, "START_DATE": "2024-02-30",
                           "METRICS_PUSHGATEWAY": f"http://u:{GATEWAY[1]}@pg:9091"}, 2,
                          "METRICS_PUSHGATEWAY"),
    }  # fmt: skip
    outputs: list[str] = []
    configured: set[str] = set()

    def scanned(result: CliResult, *files: Path) -> CliResult:
        outputs.append(result.output)
        outputs.extend(path.read_text() for path in files if path.is_file())
        return result

    for name, (overrides, code, says) in runs.items():
        values = {k: v for k, v in {**good, **overrides}.items() if v is not None}
        configured.update(values.values())
        parm = write_parm(tmp_path / f"parm-{name.replace(' ', '-')}", **values)
        summary.unlink(missing_ok=True)
        result = scanned(run_cli("run", "-v", "--parm-dir", str(parm), "--run-date", RUN_DATE,
                                 "--summary-file", str(summary)), summary, metrics)  # fmt: skip
        assert result.code == code and says in result.stderr, (name, result.output[-2000:])
        if code == 1:
            assert summary.is_file(), f"{name}: no summary of the failed run"
    parm = tmp_path / "parm-good"
    for command in (["check"], ["status"], ["reset", "--site", "1", "--date", "2024-03-02",
                    "--yes"], ["audit", "--site", "1", "--from", "2024-03-01", "--to",
                    "2024-03-05"]):  # fmt: skip
        scanned(run_cli(*command, "--parm-dir", str(parm)))
    records = read_topic(topic)
    outputs.extend(record.value.decode() + repr(record.headers) for record in records)

    unused = [name for name, secret in SECRETS.items() if secret not in configured]
    assert not unused, f"secrets of support/secrets.py configured in no run here: {unused}"
    assert len(records) == 2 * (0 + 9 + 10 + 11 + 20), "the good run delivered nothing to scan"
    assert any('"level": "DEBUG"' in o or '"level":"DEBUG"' in o for o in outputs), (
        "no JSON debug line was scanned"
    )
    found = leaks(outputs)
    assert not found, f"{len(found)} leak(s): {'; '.join(found[:10])}"
