"""KAFKA_PRODUCER_<property>: any librdkafka property, for what clusters differ in (a client
certificate for mutual TLS, OAUTHBEARER, socket settings...), without a new key each time.

Naming: the key's suffix names the property. In upper case with underscores (the only form
every shell can export), `_` stands for `.` and `__` for a literal `_`:
`KAFKA_PRODUCER_SSL_KEY_LOCATION` is `ssl.key.location`, `KAFKA_PRODUCER_LOG__LEVEL` is
`log_level` (the only string-settable librdkafka properties with `_` in their name are
`log_level` and `enabled_events`; the others are callbacks). A suffix holding a dot is the
property's own name, taken as written: `KAFKA_PRODUCER_ssl.key.location` (fine in the ini,
in wa7.env and in an environment set with env(1), though not with a shell's export).

Properties that have a key of their own are refused (set that key), and so are those the
delivery guarantees depend on (see OWNED and GUARDED). Librdkafka itself validates names and
values at start-up (cli.load), before any Matomo or Kafka call. Values of properties whose
name says secret (see is_secret) are masked in every output, like KAFKA_PASSWORD.

The producers (at-least-once and transactional) get every property; the consumers and admin
clients (state topic, audit) every one but the producer-only ones (PRODUCER_ONLY), so
security settings reach every client.
"""

from __future__ import annotations

PREFIX = "KAFKA_PRODUCER_"

#: librdkafka properties (and aliases) that a matomo-kafka key sets: that key, instead.
OWNED = {
    "bootstrap.servers": "KAFKA_SERVERS",
    "metadata.broker.list": "KAFKA_SERVERS",
    "security.protocol": "KAFKA_SECURITY_PROTOCOL",
    "sasl.mechanism": "KAFKA_SASL_MECHANISM",
    "sasl.mechanisms": "KAFKA_SASL_MECHANISM",
    "sasl.username": "KAFKA_USER",
    "sasl.password": "KAFKA_PASSWORD",
    "ssl.ca.location": "KAFKA_SSL_CA_LOCATION",
    "compression.type": "KAFKA_COMPRESSION",
    "compression.codec": "KAFKA_COMPRESSION",
    "linger.ms": "KAFKA_LINGER_MS",
    "queue.buffering.max.ms": "KAFKA_LINGER_MS",
    "message.timeout.ms": "KAFKA_DELIVERY_TIMEOUT_MS",
    "delivery.timeout.ms": "KAFKA_DELIVERY_TIMEOUT_MS",
    "client.id": "CLUSTERID (client.id is matomo-kafka-<CLUSTERID>)",
}

_ACKS = "a page is checkpointed only once every in-sync replica has it (acks=all)"
_EOS = "exactly-once names and times its transactions itself (DELIVERY=exactly_once)"
_READ = "checkpoints are read back by consumers of matomo-kafka's own (read_committed)"

#: Properties the guarantees depend on, with the reason they cannot be overridden.
GUARDED = {
    "enable.idempotence": "librdkafka's retries must never duplicate a message",
    "acks": _ACKS,
    "request.required.acks": _ACKS,
    "transactional.id": _EOS,
    "transaction.timeout.ms": _EOS,
    "partitioner": "visits must land where Java clients expect them (murmur2_random)",
    "allow.auto.create.topics": "the topic must exist; the state topic is created compacted",
    "group.id": _READ,
    "group.instance.id": _READ,
    "isolation.level": _READ,
    "enable.auto.commit": _READ,
    "enable.auto.offset.store": _READ,
    "auto.offset.reset": _READ,
    "enable.partition.eof": _READ,
}

#: Producer-only properties (scope P in librdkafka's CONFIGURATION.md): kept from the
#: consumers and admin clients, which would only warn about them.
PRODUCER_ONLY = frozenset(
    {
        "enable.gapless.guarantee",
        "queue.buffering.max.messages",
        "queue.buffering.max.kbytes",
        "message.send.max.retries",
        "retries",
        "queue.buffering.backpressure.threshold",
        "batch.num.messages",
        "batch.size",
        "delivery.report.only.error",
        "sticky.partitioning.linger.ms",
        "request.timeout.ms",
        "queuing.strategy",
        "produce.offset.report",
        "compression.level",
    }
)

#: Words that make a property's value a secret, and the endings that make it a mere path or
#: type again (`ssl.key.location` names a file; `ssl.key.password`, `ssl.key.pem` are secret).
_SECRET_WORDS = ("password", "secret", "passphrase", "token", "credential", "key", "pem", "jaas")
_NOT_SECRET_ENDINGS = (".location", ".file", ".type", ".url", ".id")


def property_name(key: str) -> str:
    """The librdkafka property a KAFKA_PRODUCER_* key sets (see the module docstring)."""
    suffix = key[len(PREFIX) :] if key.startswith(PREFIX) else key
    if "." in suffix:
        return suffix
    return "_".join(part.replace("_", ".") for part in suffix.split("__")).lower()


def refusal(name: str) -> str | None:
    """Why `name` cannot be set through KAFKA_PRODUCER_*, or None if it can."""
    if not name or name.startswith(".") or name.endswith("."):
        return "is not a property name"
    if name in OWNED:
        return f"is set by {OWNED[name]}: use that key"
    if name in GUARDED:
        return f"cannot be overridden: {GUARDED[name]}"
    if name.endswith("_cb") or name in {"logger", "on_delivery", "opaque", "interceptors",
                                        "default_topic_conf"}:  # fmt: skip
        return "is a callback: it cannot be set from a configuration"
    return None


def is_secret(name: str) -> bool:
    """True for a property whose value must never be printed (`ssl.key.password`,
    `sasl.oauthbearer.client.secret`, `ssl.key.pem`, `sasl.oauthbearer.config`...)."""
    lowered = name.lower()
    if name == "sasl.oauthbearer.config":
        return True
    if not any(word in lowered for word in _SECRET_WORDS):
        return False
    strong = ("password", "secret", "passphrase", "credential")
    return any(word in lowered for word in strong) or not lowered.endswith(_NOT_SECRET_ENDINGS)


def shared(properties: dict[str, str]) -> dict[str, str]:
    """The properties consumers and admin clients get too: all but producer-only ones."""
    return {name: value for name, value in properties.items() if name not in PRODUCER_ONLY}
