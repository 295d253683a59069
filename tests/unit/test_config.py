"""Config: the seed's files read as they are, env overrides, every problem reported at once."""

from __future__ import annotations

from datetime import date
from pathlib import Path

import pytest

from matomo_kafka.config.load import load_settings
from matomo_kafka.errors import ConfigError
from support.parm import SEED_ENV, SEED_INI


def parm(tmp_path: Path, ini: str = SEED_INI, env: str = SEED_ENV) -> Path:
    (tmp_path / "wa7_conf.ini").write_text(ini, encoding="utf-8")
    (tmp_path / "wa7.env").write_text(env, encoding="utf-8")
    return tmp_path


def test_seed_files_read_as_they_are(tmp_path: Path) -> None:
    settings = load_settings(parm(tmp_path), environ={})
    assert date(2023, 4, 1) == settings.START_DATE
    assert settings.MATOMO_ID_SITE == (6, 15)
    assert settings.COLONNE_ANNOMYSE == ("visitIp", "visitorId")
    assert settings.SALAGE is not None and settings.SALAGE.get_secret_value() == "s3l%with%percent"
    assert settings.MATOMO_API_URL.endswith("/WA7/4752/")
    assert settings.kafka_security_protocol == "SASL_SSL"
    assert settings.KAFKA_SASL_MECHANISM == "SCRAM-SHA-512"
    assert settings.CLUSTERID == "IN02"


def test_ini_with_section_header_and_equals(tmp_path: Path) -> None:
    ini = "[wa7]\n" + SEED_INI.replace(": ", "= ").replace(" : ", " = ")
    settings = load_settings(parm(tmp_path, ini=ini), environ={})
    assert settings.MATOMO_FILTER_LIMIT == 1000


def test_environment_overrides_files(tmp_path: Path) -> None:
    settings = load_settings(
        parm(tmp_path), environ={"MATOMO_ID_SITE": "7", "MATOMO_FILTER_LIMIT": "50"}
    )
    assert settings.MATOMO_ID_SITE == (7,)
    assert settings.MATOMO_FILTER_LIMIT == 50


def test_without_kafka_user_is_plaintext(tmp_path: Path) -> None:
    env = SEED_ENV.replace('KAFKA_USER="wa7-producer"', 'KAFKA_USER=""').replace(
        'KAFKA_PASSWORD="kafka-pw-42"', ""
    )
    settings = load_settings(parm(tmp_path, env=env), environ={})
    assert settings.kafka_security_protocol == "PLAINTEXT"


def test_every_problem_reported_at_once_without_secrets(tmp_path: Path) -> None:
    ini = """START_DATE: 2023-13-45
MATOMO_FILTER_LIMIT: -3
FILE_PATH_LAST_OFFSET: /data/x
FILE_PATH_FILTERDATE: /data/x
COLONNE_ANNOMYSE: visitIp
KAFKA_TOPIC: bad topic!
"""
    env = """MATOMO_ID_SITE="6,abc"
MATOMO_API_URL="ftp://nope"
MATOMO_SPS_USER="only-user"
KAFKA_SERVERS="b:9092"
KAFKA_PASSWORD="lonely-secret-pw"
MATOMO_TIMEOUT="soon"
"""
    with pytest.raises(ConfigError) as caught:
        load_settings(parm(tmp_path, ini=ini, env=env), environ={})
    text = "\n".join(caught.value.problems)
    for key in ("START_DATE", "MATOMO_FILTER_LIMIT", "KAFKA_TOPIC", "MATOMO_ID_SITE",
                "MATOMO_API_URL", "MATOMO_API_TOKEN", "MATOMO_TIMEOUT"):  # fmt: skip
        assert key in text, key
    assert "lonely-secret-pw" not in text
    assert all("\n" not in problem for problem in caught.value.problems)


def test_cross_field_rules(tmp_path: Path) -> None:
    ini = SEED_INI.replace("SALAGE: s3l%with%percent\n", "")
    env = SEED_ENV.replace('MATOMO_SPS_MDP="sps-p@ss"\n', "").replace(
        'KAFKA_PASSWORD="kafka-pw-42"\n', ""
    )
    with pytest.raises(ConfigError) as caught:
        load_settings(parm(tmp_path, ini=ini, env=env), environ={})
    text = "\n".join(caught.value.problems)
    assert "SALAGE: is required" in text
    assert "MATOMO_SPS_USER/MATOMO_SPS_MDP" in text
    assert "KAFKA_USER/KAFKA_PASSWORD" in text


def test_missing_parm_dir(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="does not exist"):
        load_settings(tmp_path / "nope", environ={})


def test_token_in_url_refused(tmp_path: Path) -> None:
    env = SEED_ENV.replace("/WA7/4752/", "/index.php?token_auth=abc")
    with pytest.raises(ConfigError, match="MATOMO_API_URL"):
        load_settings(parm(tmp_path, env=env), environ={})


def test_secret_repr_is_masked(tmp_path: Path) -> None:
    settings = load_settings(parm(tmp_path), environ={})
    shown = repr(settings) + str(settings.model_dump())
    for secret in ("0123456789abcdef", "kafka-pw-42", "sps-p@ss", "s3l%with%percent"):
        assert secret not in shown
