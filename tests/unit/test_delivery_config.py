"""DELIVERY and its keys: validated with every other problem (KAFKA_STATE_TOPIC,
MATOMO_SETTLE_MINUTES)."""

from __future__ import annotations

from pathlib import Path

import pytest

from support.parm import base_values, write_parm


def test_delivery_keys_are_validated(tmp_path: Path) -> None:
    from matomo_kafka.config.load import load_settings
    from matomo_kafka.errors import ConfigError

    values = base_values(tmp_path, "http://127.0.0.1:1/", "t.visits")
    settings = load_settings(write_parm(tmp_path / "ok", **values), environ={})
    assert settings.DELIVERY == "at_least_once" and not settings.exactly_once
    assert settings.state_topic == "t.visits.state"
    assert settings.MATOMO_SETTLE_MINUTES == 10
    upper = load_settings(tmp_path / "ok", environ={"DELIVERY": "EXACTLY_ONCE"})
    assert upper.exactly_once
    bad = {"DELIVERY": "twice", "KAFKA_STATE_TOPIC": "t.visits", "MATOMO_SETTLE_MINUTES": "-1"}
    with pytest.raises(ConfigError) as caught:
        load_settings(tmp_path / "ok", environ=bad)
    text = "\n".join(caught.value.problems)
    assert "DELIVERY" in text and "MATOMO_SETTLE_MINUTES" in text
    with pytest.raises(ConfigError, match="KAFKA_STATE_TOPIC: must differ"):
        load_settings(tmp_path / "ok", environ={"KAFKA_STATE_TOPIC": "t.visits"})
