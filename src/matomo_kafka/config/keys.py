"""The keys of parm/ and the environment: the seed's, matomo-kafka's, which are secret, and
which a mistake must never silently turn off (the privacy keys)."""

from __future__ import annotations

CONF_FILE = "wa7_conf.ini"
ENV_FILE = "wa7.env"
LOGGING_FILE = "logging.conf"

#: Keys of the seed (producerMatomo), kept with their exact names (its README lists them, in
#: wa7_conf.ini and wa7.env: a seed installation's files carry no other key).
SEED_KEYS = (
    "START_DATE",
    "MATOMO_FILTER_LIMIT",
    "FILE_PATH_LAST_OFFSET",
    "FILE_PATH_FILTERDATE",
    "COLONNE_ANNOMYSE",
    "SALAGE",
    "KAFKA_TOPIC",
    "MATOMO_ID_SITE",
    "MATOMO_API_URL",
    "MATOMO_SPS_USER",
    "MATOMO_SPS_MDP",
    "MATOMO_API_TOKEN",
    "KAFKA_SERVERS",
    "CLUSTERID",
    "KAFKA_USER",
    "KAFKA_PASSWORD",
)

#: Keys added by matomo-kafka, in the seed's style.
EXTRA_KEYS = (
    "MATOMO_CA_BUNDLE",
    "MATOMO_TIMEOUT",
    "MATOMO_MAX_RETRIES",
    "MATOMO_RETRY_BACKOFF",
    "MATOMO_RETRY_MAX_WAIT",
    "MATOMO_MAX_CONCURRENCY",
    "MATOMO_MAX_REQUESTS_PER_MINUTE",
    "KAFKA_SECURITY_PROTOCOL",
    "KAFKA_SASL_MECHANISM",
    "KAFKA_SSL_CA_LOCATION",
    "KAFKA_COMPRESSION",
    "KAFKA_LINGER_MS",
    "KAFKA_DELIVERY_TIMEOUT_MS",
    "KAFKA_CONNECT_TIMEOUT",
    "MATOMO_STRICT_SITES",
    "LOG_FORMAT",
    "METRICS_TEXTFILE",
    "METRICS_PUSHGATEWAY",
    "DELIVERY",
    "KAFKA_STATE_TOPIC",
    "MATOMO_SETTLE_MINUTES",
    "MATOMO_PAGING",
    "MATOMO_RESCAN_DAYS",
    "MATOMO_FOLLOW_INTERVAL",
    "MATOMO_VISIT_LENGTH",
    "MATOMO_HEALTH_PORT",
    "MATOMO_HEALTH_BIND",
    "MATOMO_MAX_BUFFER_MB",
    "MATOMO_MAX_ERASE",
    "MATOMO_MAX_RECONCILE_DAYS",
)

ALL_KEYS = SEED_KEYS + EXTRA_KEYS
SECRET_KEYS = ("SALAGE", "MATOMO_SPS_MDP", "MATOMO_API_TOKEN", "KAFKA_PASSWORD")

#: Keys whose misspelling would send personal data in clear (pseudonymisation off, or no
#: key for it): a name that resembles one of them is refused, never ignored.
PRIVACY_KEYS = ("COLONNE_ANNOMYSE", "SALAGE")


def known_key(name: str) -> str | None:
    """The known key a file's name stands for: names are case-insensitive in the files
    (configparser lower-cases them, and producerMatomo read its ini through it)."""
    upper = name.strip().upper()
    return upper if upper in ALL_KEYS else None
