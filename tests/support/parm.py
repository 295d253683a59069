"""parm/ directories in the seed's format (conf keys in wa7_conf.ini, the rest in wa7.env), the
values a test run starts from, and the seed's own files."""

from __future__ import annotations

from pathlib import Path

from support.kafka import BOOTSTRAP

#: The simulator's token and the salt of the tests' runs (both in support/secrets.py's list).
TOKEN = "sim-token-5f1e9c0b7a"
SALT = "sel-de-guerande-3a9d"

#: The keys of wa7_conf.ini; every other key goes to wa7.env.
CONF_KEYS = frozenset(
    {"START_DATE", "MATOMO_FILTER_LIMIT", "FILE_PATH_LAST_OFFSET", "FILE_PATH_FILTERDATE",
     "COLONNE_ANNOMYSE", "SALAGE", "KAFKA_TOPIC"}
)  # fmt: skip

#: The seed's parm files as producerMatomo's users have them (tests/unit/test_config.py and
#: test_parm_files.py load them and their variants).
SEED_INI = """START_DATE : 2023-04-01
MATOMO_FILTER_LIMIT : 1000
FILE_PATH_LAST_OFFSET: /dz-matomo/applis/wa7/data/last_filter_offset
FILE_PATH_FILTERDATE: /dz-matomo/applis/wa7/data/filterdate
COLONNE_ANNOMYSE: visitIp,visitorId
SALAGE: s3l%with%percent
KAFKA_TOPIC: wa7.matomo.visits
"""
SEED_ENV = """MATOMO_ID_SITE="6,15"
MATOMO_API_URL="https://sps-support-interne-int.example/WA7/4752/"
MATOMO_SPS_USER="spsuser"
MATOMO_SPS_MDP="sps-p@ss"
MATOMO_API_TOKEN="0123456789abcdef"
KAFKA_SERVERS="broker1:9093,broker2:9093"
CLUSTERID="IN02"
KAFKA_USER="wa7-producer"
KAFKA_PASSWORD="kafka-pw-42"
"""


def write_parm(directory: Path, **values: str) -> Path:
    """A parm/ directory in the seed's format: conf keys in the ini, the rest in wa7.env."""
    directory.mkdir(parents=True, exist_ok=True)
    ini = [f"{key}: {value}" for key, value in values.items() if key in CONF_KEYS]
    env = [f'{key}="{value}"' for key, value in values.items() if key not in CONF_KEYS]
    (directory / "wa7_conf.ini").write_text("\n".join(ini) + "\n", encoding="utf-8")
    (directory / "wa7.env").write_text("\n".join(env) + "\n", encoding="utf-8")
    return directory


def base_values(tmp_path: Path, simulator_url: str, topic: str, **overrides: str) -> dict[str, str]:
    values = {
        "START_DATE": "2024-03-01",
        "MATOMO_FILTER_LIMIT": "10",
        "FILE_PATH_LAST_OFFSET": str(tmp_path / "data" / "last_filter_offset"),
        "FILE_PATH_FILTERDATE": str(tmp_path / "data" / "filterdate"),
        "COLONNE_ANNOMYSE": "visitIp,visitorId,userId,actionDetails.url,actionDetails.subtitle",
        "SALAGE": SALT,
        "KAFKA_TOPIC": topic,
        "MATOMO_ID_SITE": "1,2",
        "MATOMO_API_URL": simulator_url,
        "MATOMO_API_TOKEN": TOKEN,
        "KAFKA_SERVERS": BOOTSTRAP,
        "CLUSTERID": "TEST01",
        "MATOMO_RETRY_BACKOFF": "0.05",
        "MATOMO_RETRY_MAX_WAIT": "2",
        "MATOMO_TIMEOUT": "5",
        "KAFKA_CONNECT_TIMEOUT": "5",
    }
    values.update(overrides)
    return values
