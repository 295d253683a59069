"""Bad inputs through the real command: one clear line each, a non-zero exit, nothing
touched; and no secret in any output of the whole test session."""

from __future__ import annotations

from pathlib import Path

import pytest

from support.cli import clean_env, run_cli
from support.parm import base_values, write_parm


@pytest.mark.parametrize(
    ("overrides", "expected"),
    [
        ({"START_DATE": "2024-02-30"}, "START_DATE"),
        ({"MATOMO_FILTER_LIMIT": "0"}, "MATOMO_FILTER_LIMIT"),
        ({"MATOMO_FILTER_LIMIT": "mille"}, "MATOMO_FILTER_LIMIT"),
        ({"MATOMO_ID_SITE": ""}, "MATOMO_ID_SITE"),
        ({"MATOMO_ID_SITE": "6;15"}, "MATOMO_ID_SITE"),
        ({"MATOMO_ID_SITE": "6,6"}, "MATOMO_ID_SITE"),
        ({"KAFKA_TOPIC": "topic with spaces"}, "KAFKA_TOPIC"),
        ({"MATOMO_API_URL": "matomo.example/index.php"}, "MATOMO_API_URL"),
        ({"MATOMO_API_TOKEN": ""}, "MATOMO_API_TOKEN"),
        ({"SALAGE": ""}, "SALAGE"),
        ({"KAFKA_USER": "u"}, "KAFKA_USER/KAFKA_PASSWORD"),
        ({"KAFKA_PASSWORD": "kafka-pw-do-not-print"}, "KAFKA_USER/KAFKA_PASSWORD"),
        ({"MATOMO_SPS_MDP": "sps-secret-77"}, "MATOMO_SPS_USER/MATOMO_SPS_MDP"),
        ({"KAFKA_SECURITY_PROTOCOL": "TLS"}, "KAFKA_SECURITY_PROTOCOL"),
        ({"KAFKA_SASL_MECHANISM": "GSSAPI"}, "KAFKA_SASL_MECHANISM"),
        ({"MATOMO_CA_BUNDLE": "/no/such/ca.pem"}, "MATOMO_CA_BUNDLE"),
        ({"MATOMO_TIMEOUT": "-1"}, "MATOMO_TIMEOUT"),
        ({"FILE_PATH_FILTERDATE": "/tmp/"}, "FILE_PATH_FILTERDATE"),
    ],
)
def test_bad_config_exit_2(tmp_path: Path, overrides: dict[str, str], expected: str) -> None:
    values = base_values(tmp_path, "http://127.0.0.1:9/index.php", "t", **overrides)
    parm = write_parm(tmp_path / "parm", **values)
    result = run_cli("run", "--parm-dir", str(parm))
    assert result.code == 2, result.output
    assert expected in result.stderr
    assert "Traceback" not in result.output
    assert not (tmp_path / "data").exists()


def test_all_problems_at_once(tmp_path: Path) -> None:
    values = base_values(tmp_path, "nope", "bad topic", START_DATE="x", MATOMO_ID_SITE="a")
    result = run_cli("run", "--parm-dir", str(write_parm(tmp_path / "parm", **values)))
    assert result.code == 2
    problems = [line for line in result.stderr.splitlines() if "config:" in line]
    assert len(problems) == 4, result.stderr


def test_environment_overrides_the_files(tmp_path: Path) -> None:
    values = base_values(tmp_path, "http://127.0.0.1:9/index.php", "t", START_DATE="x")
    parm = write_parm(tmp_path / "parm", **values)
    env = clean_env(START_DATE="2024-03-01", KAFKA_TOPIC="bad topic")
    result = run_cli("run", "--parm-dir", str(parm), env=env)
    assert result.code == 2
    assert "START_DATE" not in result.stderr and "KAFKA_TOPIC" in result.stderr


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["run", "--run-date", "2024-13-01"], "--run-date"),
        (["run", "--sites", "1,x"], "--sites"),
        (["run", "--parm-dir", "/no/such/parm"], "does not exist"),
    ],
)
def test_bad_arguments(tmp_path: Path, args: list[str], expected: str) -> None:
    values = base_values(tmp_path, "http://127.0.0.1:9/index.php", "t")
    parm = write_parm(tmp_path / "parm", **values)
    if "--parm-dir" not in args:
        args = [*args, "--parm-dir", str(parm)]
    result = run_cli(*args)
    assert result.code == 2, result.output
    assert expected in result.stderr


def test_logging_conf_is_used(tmp_path: Path) -> None:
    values = base_values(tmp_path, "http://127.0.0.1:9/index.php", "t", MATOMO_ID_SITE="1")
    parm = write_parm(tmp_path / "parm", **values)
    (parm / "logging.conf").write_text(
        "[loggers]\nkeys=root\n[handlers]\nkeys=h\n[formatters]\nkeys=f\n"
        "[logger_root]\nlevel=INFO\nhandlers=h\n"
        "[handler_h]\nclass=StreamHandler\nlevel=INFO\nformatter=f\nargs=(sys.stderr,)\n"
        "[formatter_f]\nformat=CUSTOM|%(levelname)s|%(message)s\n"
    )
    result = run_cli("status", "--parm-dir", str(parm))
    assert result.code == 0
    broken = parm / "logging.conf"
    broken.write_text("[loggers]\nkeys=root\n")
    result = run_cli("status", "--parm-dir", str(parm))
    assert result.code == 2 and "logging.conf" in result.stderr


def test_status_shows_nothing_of_a_checkpoint_that_is_an_env_file(tmp_path: Path) -> None:
    """Issue 27: `status` quoted 40 characters of a corrupt checkpoint, so an env file copied
    over one showed the start of the token (too short for the redactor, then). Now: the file
    named, nothing of it shown; a link there refused, named as such."""
    token = "tok-5c1f0e9d8b7a69584736251403"
    values = base_values(tmp_path, "http://127.0.0.1:9/index.php", "t", MATOMO_API_TOKEN=token,
                         MATOMO_ID_SITE="1,2")  # fmt: skip
    parm = write_parm(tmp_path / "parm", **values)
    env_file = parm / "wa7.env"
    data = tmp_path / "data"
    data.mkdir()
    (data / "filterdate1.txt").write_text(env_file.read_text())  # copied over it
    (data / "filterdate2.txt").symlink_to(env_file)  # linked to it
    result = run_cli("status", "--parm-dir", str(parm), env=clean_env(COLUMNS="400"))
    assert result.code == 1, result.output
    assert "filterdate1.txt does not hold a YYYY-MM-DD day" in result.stdout
    assert "filterdate2.txt is a symbolic link: refused" in result.stdout
    for piece in (token[:8], token[-8:], token[8:16]):
        assert piece not in result.output, result.output
    assert env_file.read_text().count(token) == 1
