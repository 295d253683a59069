"""KAFKA_PRODUCER_<property> passthrough: property names, which look secret, every client gets
them and the secrets are registered for redaction. No broker: the settings and client configs
only."""

from __future__ import annotations

from pathlib import Path

import pytest

from matomo_kafka.config.kafka_clients import client_config, producer_config
from matomo_kafka.config.kafka_properties import is_secret, property_name
from matomo_kafka.config.load import load_settings
from matomo_kafka.config.sources import collect
from support.parm import base_values, write_parm


@pytest.mark.parametrize(
    ("key", "name"),
    [
        ("KAFKA_PRODUCER_SSL_CERTIFICATE_LOCATION", "ssl.certificate.location"),
        ("KAFKA_PRODUCER_SASL_OAUTHBEARER_CLIENT_SECRET", "sasl.oauthbearer.client.secret"),
        ("KAFKA_PRODUCER_LOG__LEVEL", "log_level"),
        ("KAFKA_PRODUCER_ENABLED__EVENTS", "enabled_events"),
        ("KAFKA_PRODUCER_ssl.key.location", "ssl.key.location"),
        ("KAFKA_PRODUCER_socket_keepalive_enable", "socket.keepalive.enable"),
    ],
)
def test_property_names(key: str, name: str) -> None:
    assert property_name(key) == name


def test_secret_looking_properties() -> None:
    secret = [
        "ssl.key.password",
        "ssl.keystore.password",
        "ssl.key.pem",
        "sasl.oauthbearer.config",
        "sasl.oauthbearer.client.secret",
        "sasl.oauthbearer.assertion.private.key.passphrase",
    ]
    plain = [
        "ssl.key.location",
        "ssl.keystore.location",
        "ssl.certificate.location",
        "socket.keepalive.enable",
        "ssl.keystore.type",
        "sasl.oauthbearer.client.id",
    ]
    assert [name for name in secret if not is_secret(name)] == []
    assert [name for name in plain if is_secret(name)] == []


def test_passthrough_reaches_every_client_and_secrets_are_registered(tmp_path: Path) -> None:
    values = base_values(tmp_path, "https://matomo.example/index.php", "t",
                         KAFKA_PRODUCER_SSL_KEY_LOCATION="/keys/client.key",
                         KAFKA_PRODUCER_BATCH_SIZE="65536")  # fmt: skip
    parm = write_parm(tmp_path / "parm", **values)
    with (parm / "wa7_conf.ini").open("a") as ini:
        ini.write("KAFKA_PRODUCER_ssl.certificate.location: /c.pem\n")
    environ = {"KAFKA_PRODUCER_SSL_KEY_PASSWORD": "kp-3f9a", "KAFKA_PRODUCER_BATCH_SIZE": "1024"}
    raw = collect(parm, environ)
    assert raw.unknown_keys == [] and raw.producer_problems == []
    settings = load_settings(parm, environ)
    producer = producer_config(settings)
    assert producer["ssl.key.location"] == "/keys/client.key"
    assert producer["ssl.certificate.location"] == "/c.pem"
    assert producer["ssl.key.password"] == "kp-3f9a"
    assert producer["batch.size"] == "1024"  # the environment wins, as for every key
    assert producer["enable.idempotence"] is True and producer["acks"] == "all"
    shared = client_config(settings, "state")
    assert shared["ssl.key.password"] == "kp-3f9a" and "ssl.certificate.location" in shared
    assert "batch.size" not in shared  # producer-only
    assert "kp-3f9a" in settings.secret_values()
    assert "/keys/client.key" not in settings.secret_values()
    assert "kp-3f9a" not in repr(settings)
