from typing import Any

from matomo_kafka.config import kafka_properties
from matomo_kafka.config.settings import Settings


def producer_config(settings: Settings) -> dict[str, Any]:
    """librdkafka settings for the run, secrets included (never log this dict). KAFKA_PRODUCER_*
    properties come last: config.py already refused those that would override the above."""
    config: dict[str, Any] = {
        "bootstrap.servers": settings.KAFKA_SERVERS,
        "client.id": f"matomo-kafka-{settings.CLUSTERID}",
        "acks": "all",
        "enable.idempotence": True,
        "compression.type": settings.KAFKA_COMPRESSION,
        "linger.ms": settings.KAFKA_LINGER_MS,
        "message.timeout.ms": settings.KAFKA_DELIVERY_TIMEOUT_MS,
        "partitioner": "murmur2_random",
        "allow.auto.create.topics": False,
        "security.protocol": settings.kafka_security_protocol,
    }
    if settings.KAFKA_USER is not None and settings.KAFKA_PASSWORD is not None:
        config["sasl.mechanism"] = settings.KAFKA_SASL_MECHANISM
        config["sasl.username"] = settings.KAFKA_USER
        config["sasl.password"] = settings.KAFKA_PASSWORD.get_secret_value()
    if settings.KAFKA_SSL_CA_LOCATION:
        config["ssl.ca.location"] = settings.KAFKA_SSL_CA_LOCATION
    config.update(settings.producer_properties)
    return config


def transactional_id(topic: str, idsite: int) -> str:
    """A site's own id, as versions before claims used it (one producer per site): fenced
    when a site whose checkpoint such a version wrote is claimed (state_topic.Owner)."""
    return f"matomo-kafka.{topic}.{idsite}"


def claims_transactional_id(topic: str) -> str:
    """The one id every instance claims sites with: claims of the topic's sites are
    serialised by it (a newer claimer fences an older one's claim in progress)."""
    return f"matomo-kafka.{topic}.claims"


def pool_prefix(topic: str, token: str) -> str:
    """The prefix of one process's transactional ids (`<prefix>.<k>`), new at each start."""
    return f"matomo-kafka.{topic}.pool-{token}"


def transaction_timeout_ms(settings: Settings) -> int:
    """librdkafka wants message.timeout.ms <= transaction.timeout.ms; the broker aborts a
    transaction left open longer (an instance that died) after this time."""
    return max(60_000, settings.KAFKA_DELIVERY_TIMEOUT_MS)


#: Producer settings that an admin or consumer client shares (connection and security), plus
#: every KAFKA_PRODUCER_* property that is not producer-only (a client certificate, say).
_SHARED_KEYS = (
    "bootstrap.servers",
    "security.protocol",
    "sasl.mechanism",
    "sasl.username",
    "sasl.password",
    "ssl.ca.location",
)


def client_config(settings: Settings, purpose: str) -> dict[str, Any]:
    """An admin/consumer client with the run's connection and security settings (secrets
    included: never log this dict)."""
    shared = producer_config(settings)
    config = {key: shared[key] for key in _SHARED_KEYS if key in shared}
    config.update(kafka_properties.shared(settings.producer_properties))
    config["client.id"] = f"matomo-kafka-{settings.CLUSTERID}-{purpose}"
    config["allow.auto.create.topics"] = False  # a missing topic is created compacted, here
    return config
