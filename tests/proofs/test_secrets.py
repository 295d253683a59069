"""Secrets scan (issue #3): no secret (token, salt, passwords - right or wrong ones) and no raw
value of a pseudonymised column in any log line, error, summary or metrics file, or Kafka
message. The other tests/test_reliability_*.py scan their own outputs and messages the same
way (bench/reliability.py `Collector`); this one adds JSON debug logs, failing runs that carry
a secret of their own, every other command, and a self-test of the scanner.
"""

from __future__ import annotations

import hashlib
import hmac
import sys
from datetime import date
from pathlib import Path

from conftest import CLI_OUTPUTS

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))
import reliability as rel

from matomo_kafka.simulator import SimSite

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
