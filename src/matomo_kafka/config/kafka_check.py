"""The Kafka client configuration, validated by librdkafka itself at start-up.

Each client a run builds (the producer, the transactional producer, the consumers and admin
clients of the state topic and `audit`) is constructed without bootstrap servers and dropped
at once: no network call, a few milliseconds. So a misspelt KAFKA_PRODUCER_* property, a
value librdkafka rejects, a CA file that is not PEM or a client key that its password does
not open becomes one config line (exit 2) before Matomo is called, instead of a failure
mid-run. The lines name the key to fix; librdkafka's messages do not echo values, and the
caller redacts them anyway.
"""

from __future__ import annotations

from typing import Any

from confluent_kafka import Consumer, KafkaError, KafkaException, Producer

from matomo_kafka.config.kafka_clients import (
    client_config,
    producer_config,
    transaction_timeout_ms,
    transactional_id,
)
from matomo_kafka.config.kafka_properties import OWNED
from matomo_kafka.config.settings import Settings

#: The probe clients log nothing (librdkafka would warn about the missing bootstrap servers).
_QUIET = {"log_level": 0}


def _build(kind: str, config: dict[str, Any]) -> str | None:
    """Constructs and drops one client; librdkafka's refusal, if any."""
    client_class = Consumer if kind == "consumer" else Producer
    try:
        client = client_class({**config, **_QUIET})
    except KafkaException as exc:
        error = exc.args[0] if exc.args else None
        return error.str() if isinstance(error, KafkaError) else str(exc)
    except (TypeError, ValueError) as exc:  # confluent-kafka's own checks of a value's type
        return str(exc)
    del client
    return None


def _without_bootstrap(config: dict[str, Any]) -> dict[str, Any]:
    return {key: value for key, value in config.items() if key != "bootstrap.servers"}


def problems(settings: Settings) -> list[str]:
    """One line per problem librdkafka finds in the run's Kafka clients; [] when none."""
    passthrough = {prop.name: prop for prop in settings.KAFKA_PRODUCER_PROPERTIES}
    producer = _without_bootstrap(producer_config(settings))
    clients: list[tuple[str, dict[str, Any]]] = [("producer", producer)]
    if settings.exactly_once:
        transactional = {
            "transactional.id": transactional_id(settings.KAFKA_TOPIC, 0),
            "transaction.timeout.ms": transaction_timeout_ms(settings),
        }
        clients.append(("producer", {**producer, **transactional}))
    consumer = {**_without_bootstrap(client_config(settings, "check")), "group.id": "check"}
    clients.append(("consumer", consumer))

    # Our own keys first: if they fail, every client would fail the same way.
    base = {key: value for key, value in producer.items() if key not in passthrough}
    refusal = _build("producer", base)
    if refusal is not None:
        return [_attribute(refusal, settings)]

    # Each property's name and value alone (librdkafka stops at the first bad one, and a
    # property alone cannot fail for want of another: only its own syntax is judged here).
    found: list[str] = []
    for prop in passthrough.values():
        refusal = _build("producer", {prop.name: prop.value.get_secret_value()})
        if refusal is not None and not refusal.startswith("Failed to create"):
            found.append(f"{prop.key} ({prop.name}, from {prop.source}): {refusal}")
    if found:
        return found

    # Then every client as the run builds it: files, keys and combinations.
    for kind, config in clients:
        refusal = _build(kind, config)
        if refusal is not None:
            return [_attribute(refusal, settings)]
    return []


def _attribute(message: str, settings: Settings) -> str:
    """Prefixes librdkafka's message with the key that set the property it names."""
    keys = {prop.name: f"{prop.key} (from {prop.source})" for prop in
            settings.KAFKA_PRODUCER_PROPERTIES}  # fmt: skip
    keys.update({name: key.split(" ")[0] for name, key in OWNED.items()})
    hint = ""
    password = next((p.key for p in settings.KAFKA_PRODUCER_PROPERTIES
                     if p.name == "ssl.key.password"), None)  # fmt: skip
    if "ssl.key.location failed" in message or "ssl.key.pem failed" in message:
        hint = f" (is {password} the key's password?)" if password else " (is the key encrypted?)"
    for name in sorted(keys, key=len, reverse=True):
        if name in message:
            return f"{keys[name]}: librdkafka: {message}{hint}"
    return f"Kafka client configuration: librdkafka: {message}{hint}"
