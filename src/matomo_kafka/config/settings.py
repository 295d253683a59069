"""The Settings model: what a valid configuration is -- each key's type and bounds, the checks
of one key's value (a column list, a site selection, a URL, a topic name) and those between keys.

pydantic never echoes an input here (a value may be a secret): load.py rebuilds each error from
the key and the reason only. Besides the named keys, any `KAFKA_PRODUCER_<property>` key passes
a librdkafka property through (kafka_properties.py says how it is named, what is refused and
what is secret).
"""

from __future__ import annotations

import ipaddress
import os
import re
from dataclasses import dataclass
from datetime import date
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    ValidatorFunctionWrapHandler,
    field_validator,
    model_validator,
)

from matomo_kafka.config import kafka_properties
from matomo_kafka.config.keys import SECRET_KEYS

_TOPIC_RE = re.compile(r"^[A-Za-z0-9._-]{1,249}$")


@dataclass(frozen=True)
class ProducerProperty:
    """A librdkafka property set by a KAFKA_PRODUCER_* key (kafka_properties.py): its name, the
    key as written and where it came from (to explain errors), the value kept secret."""

    name: str
    key: str
    value: SecretStr
    source: str


def _blank_to_none(value: Any) -> Any:
    return None if isinstance(value, str) and value.strip() == "" else value


def _split_list(value: Any) -> Any:
    if isinstance(value, str):
        return [part.strip() for part in value.split(",") if part.strip()]
    return value


#: Characters that separate columns in other tools' lists, quote or bracket them: here a
#: typo, never part of a name (a column the tool cannot read would be sent in clear).
_NOT_IN_A_COLUMN = re.compile("[;|\t\"'\\[\\]{}()/*=:\uff0c\u3001\u200b-\u200f\u2060\ufeff]")
_SPACE_AT_A_DOT = re.compile(r"\s\.|\.\s")
#: Shown instead of an entry that may be a `key=secret` line indented by mistake.
_MAY_BE_A_SECRET = "=:"


def parse_columns(value: Any) -> Any:
    """COLONNE_ANNOMYSE: comma-separated, or one per line (an indented continuation line of
    the ini, a newline in a quoted wa7.env value); anything else is refused, since a column
    the tool misreads is sent in clear. A path goes inside objects and lists
    (actionDetails.url). A custom dimension's name may hold spaces."""
    if not isinstance(value, str):
        return value
    columns: list[str] = []
    for part in re.split(r"[,\n]", value):
        column = part.strip()
        if not column:
            continue
        bad = _NOT_IN_A_COLUMN.search(column)
        if bad is not None or not column.isprintable():
            char = bad.group() if bad is not None else "an unprintable character"
            shown = "an entry" if char in _MAY_BE_A_SECRET else repr(column)
            what = {"\t": "a tab"}.get(char, repr(char) if len(char) == 1 else char)
            raise ValueError(
                f"{shown} holds {what}: separate columns with commas (or put one per "
                "indented line), with no quotes or brackets"
            )
        if _SPACE_AT_A_DOT.search(column) or any(not seg.strip() for seg in column.split(".")):
            raise ValueError(
                f"{column!r} is not a column path (a name missing or spaced around a '.')"
            )
        if column not in columns:
            columns.append(column)
    return tuple(columns)


PositiveInt = Annotated[int, Field(gt=0)]


class Settings(BaseModel):
    """One validated, immutable view of a run's configuration."""

    # allow_inf_nan=False: "inf" would pass a lower bound and then hang or overflow later.
    model_config = ConfigDict(
        frozen=True, extra="forbid", hide_input_in_errors=True, allow_inf_nan=False
    )

    START_DATE: date
    MATOMO_FILTER_LIMIT: int = Field(default=1000, gt=0, le=100_000)
    FILE_PATH_LAST_OFFSET: str
    FILE_PATH_FILTERDATE: str
    COLONNE_ANNOMYSE: tuple[str, ...] = ()
    SALAGE: SecretStr | None = None
    KAFKA_TOPIC: str
    MATOMO_ID_SITE: tuple[PositiveInt, ...] | Literal["all"]
    MATOMO_API_URL: str
    MATOMO_SPS_USER: str | None = None
    MATOMO_SPS_MDP: SecretStr | None = None
    MATOMO_API_TOKEN: SecretStr
    KAFKA_SERVERS: str
    CLUSTERID: str = "local"
    KAFKA_USER: str | None = None
    KAFKA_PASSWORD: SecretStr | None = None

    MATOMO_CA_BUNDLE: str | None = None
    MATOMO_TIMEOUT: float = Field(default=120.0, gt=0, le=3600)
    MATOMO_MAX_RETRIES: int = Field(default=5, ge=0, le=50)
    MATOMO_RETRY_BACKOFF: float = Field(default=1.0, ge=0, le=600)
    MATOMO_RETRY_MAX_WAIT: float = Field(default=60.0, ge=0, le=3600)
    MATOMO_MAX_CONCURRENCY: int = Field(default=2, ge=1, le=32)
    MATOMO_MAX_REQUESTS_PER_MINUTE: float | None = Field(default=None, ge=1, le=1_000_000)
    KAFKA_SECURITY_PROTOCOL: Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"] | None = None
    KAFKA_SASL_MECHANISM: Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"] = "SCRAM-SHA-512"
    KAFKA_SSL_CA_LOCATION: str | None = None
    KAFKA_COMPRESSION: Literal["none", "gzip", "snappy", "lz4", "zstd"] = "lz4"
    KAFKA_LINGER_MS: int = Field(default=20, ge=0, le=60_000)
    KAFKA_DELIVERY_TIMEOUT_MS: int = Field(default=120_000, ge=1_000, le=2_147_483_647)
    KAFKA_CONNECT_TIMEOUT: float = Field(default=15.0, gt=0, le=3600)
    MATOMO_STRICT_SITES: bool = False
    LOG_FORMAT: Literal["text", "json"] = "text"
    METRICS_TEXTFILE: str | None = None
    METRICS_PUSHGATEWAY: str | None = None
    DELIVERY: Literal["at_least_once", "exactly_once"] = "at_least_once"
    KAFKA_STATE_TOPIC: str | None = None
    MATOMO_SETTLE_MINUTES: int = Field(default=10, ge=0, le=10_080)
    MATOMO_PAGING: Literal["keyset", "offset"] = "keyset"
    MATOMO_RESCAN_DAYS: int = Field(default=0, ge=0, le=366)
    # Erasures (issue 22): most tombstones one run, `follow` cycle or `reconcile` sends on
    # its own (more need `reconcile --yes`); most days one `reconcile` compares.
    MATOMO_MAX_ERASE: int = Field(default=100, ge=0, le=10_000_000)
    MATOMO_MAX_RECONCILE_DAYS: int = Field(default=92, ge=1, le=3660)
    # `follow`: seconds between cycles; Matomo's visit_standard_length (a visit whose last
    # action is older than this is over); the port of /livez, /readyz and /metrics.
    MATOMO_FOLLOW_INTERVAL: float = Field(default=300.0, ge=1, le=86_400)
    MATOMO_VISIT_LENGTH: int = Field(default=1800, ge=0, le=86_400)
    MATOMO_HEALTH_PORT: int | None = Field(default=None, ge=1, le=65_535)
    #: The address the health endpoint listens on: this host only unless told otherwise.
    MATOMO_HEALTH_BIND: str = "127.0.0.1"
    # Megabytes of Live pages fetched and not yet delivered; a page asks for an eighth of it.
    MATOMO_MAX_BUFFER_MB: int = Field(default=64, ge=8, le=65_536)
    #: KAFKA_PRODUCER_* keys, one per librdkafka property (collected, not a key itself).
    KAFKA_PRODUCER_PROPERTIES: tuple[ProducerProperty, ...] = ()

    @field_validator("*", mode="before")
    @classmethod
    def _blank_is_unset(cls, value: Any) -> Any:
        return _blank_to_none(value)

    @field_validator("COLONNE_ANNOMYSE", mode="before")
    @classmethod
    def _columns(cls, value: Any) -> Any:
        return () if value is None else parse_columns(value)

    @field_validator("MATOMO_ID_SITE", mode="wrap")
    @classmethod
    def _site_selection(
        cls, value: Any, _handler: ValidatorFunctionWrapHandler
    ) -> tuple[int, ...] | Literal["all"]:
        """`all` (every site the token can view, resolved at run time) or distinct ids.
        Validated here in full, so an error is one line about the key, not about a union."""
        return parse_site_selection(value)

    @field_validator("LOG_FORMAT", "DELIVERY", "MATOMO_PAGING", mode="before")
    @classmethod
    def _lower(cls, value: Any) -> Any:
        return value.strip().lower() if isinstance(value, str) else value

    @field_validator("METRICS_TEXTFILE")
    @classmethod
    def _textfile(cls, value: str | None) -> str | None:
        if value is None:
            return None
        if not value.endswith(".prom"):
            raise ValueError("must end in .prom (node-exporter's textfile collector reads *.prom)")
        if not Path(value).parent.is_dir():
            raise ValueError("names a file in a directory that does not exist")
        return value

    @field_validator("METRICS_PUSHGATEWAY")
    @classmethod
    def _pushgateway(cls, value: str | None) -> str | None:
        if value is None:
            return None
        if not re.match(r"^https?://[^/\s]+", value):
            raise ValueError("must be an http(s) URL, e.g. http://pushgateway:9091")
        if re.match(r"^https?://[^/]*@", value):
            raise ValueError("must not embed credentials")
        return value

    @field_validator("KAFKA_TOPIC", "KAFKA_STATE_TOPIC")
    @classmethod
    def _topic_name(cls, value: str | None) -> str | None:
        if value is None:
            return None
        if not _TOPIC_RE.match(value) or value in {".", ".."}:
            raise ValueError("is not a valid Kafka topic name (letters, digits, . _ - only)")
        return value

    @field_validator("MATOMO_API_URL")
    @classmethod
    def _http_url(cls, value: str) -> str:
        if not re.match(r"^https?://[^/\s]+", value):
            raise ValueError("must be an http(s) URL (index.php or the gateway base URL)")
        if re.match(r"^https?://[^/]*@", value):
            raise ValueError("must not embed credentials: use MATOMO_SPS_USER/MATOMO_SPS_MDP")
        if "token_auth" in value:
            raise ValueError("must not carry token_auth: use MATOMO_API_TOKEN (sent by POST)")
        return value

    @field_validator("MATOMO_CA_BUNDLE", "KAFKA_SSL_CA_LOCATION")
    @classmethod
    def _existing_file(cls, value: str | None) -> str | None:
        if value is not None and not Path(value).is_file():
            raise ValueError("names a file that does not exist")
        return value

    @field_validator("MATOMO_HEALTH_BIND")
    @classmethod
    def _ip_address(cls, value: str) -> str:
        """An IP address, not a host name: which interfaces the endpoint is exposed on is
        then plain from the configuration, and no name resolution can widen it."""
        try:
            return str(ipaddress.ip_address(value.strip()))
        except ValueError:
            raise ValueError(
                "must be an IP address of this host: 127.0.0.1 (the default, this host only), "
                "0.0.0.0 (every interface: a pod's probes) or an IPv6 address such as ::1"
            ) from None

    @field_validator("FILE_PATH_LAST_OFFSET", "FILE_PATH_FILTERDATE")
    @classmethod
    def _checkpoint_prefix(cls, value: str) -> str:
        if value.endswith(("/", os.sep)):
            raise ValueError("must be a file prefix such as /data/filterdate, not a directory")
        return value

    @model_validator(mode="after")
    def _consistent(self) -> Settings:
        problems: list[str] = []
        if self.COLONNE_ANNOMYSE and self.SALAGE is None:
            problems.append("SALAGE: is required when COLONNE_ANNOMYSE lists columns")
        if (self.MATOMO_SPS_USER is None) != (self.MATOMO_SPS_MDP is None):
            problems.append("MATOMO_SPS_USER/MATOMO_SPS_MDP: set both or neither")
        if (self.KAFKA_USER is None) != (self.KAFKA_PASSWORD is None):
            problems.append("KAFKA_USER/KAFKA_PASSWORD: set both or neither")
        if self.KAFKA_USER is not None and self.kafka_security_protocol in ("PLAINTEXT", "SSL"):
            problems.append("KAFKA_SECURITY_PROTOCOL: KAFKA_USER needs SASL_SSL or SASL_PLAINTEXT")
        if self.FILE_PATH_LAST_OFFSET == self.FILE_PATH_FILTERDATE:
            problems.append("FILE_PATH_LAST_OFFSET: must differ from FILE_PATH_FILTERDATE")
        if self.state_topic == self.KAFKA_TOPIC:
            problems.append("KAFKA_STATE_TOPIC: must differ from KAFKA_TOPIC")
        elif not _TOPIC_RE.match(self.state_topic):
            problems.append("KAFKA_STATE_TOPIC: KAFKA_TOPIC + '.state' is too long; set it")
        if problems:
            raise ValueError("\n".join(problems))
        return self

    @property
    def all_sites(self) -> bool:
        """MATOMO_ID_SITE=all: the sites are listed by Matomo at run time."""
        return self.MATOMO_ID_SITE == "all"

    @property
    def state_topic(self) -> str:
        """DELIVERY=exactly_once: the compacted topic holding each site's checkpoint."""
        return self.KAFKA_STATE_TOPIC or f"{self.KAFKA_TOPIC}.state"

    @property
    def follow_margin_seconds(self) -> int:
        """`follow` reads visits whose last action is at least this old: a visit ends after
        MATOMO_VISIT_LENGTH of inactivity, and MATOMO_SETTLE_MINUTES covers late tracking."""
        return self.MATOMO_VISIT_LENGTH + 60 * self.MATOMO_SETTLE_MINUTES

    @property
    def exactly_once(self) -> bool:
        return self.DELIVERY == "exactly_once"

    @property
    def kafka_security_protocol(self) -> str:
        """SASL_SSL when a Kafka user is set (the corporate cluster), PLAINTEXT otherwise."""
        if self.KAFKA_SECURITY_PROTOCOL is not None:
            return self.KAFKA_SECURITY_PROTOCOL
        return "SASL_SSL" if self.KAFKA_USER is not None else "PLAINTEXT"

    @property
    def producer_properties(self) -> dict[str, str]:
        """KAFKA_PRODUCER_* as librdkafka properties, secrets in clear (never log this)."""
        return {p.name: p.value.get_secret_value() for p in self.KAFKA_PRODUCER_PROPERTIES}

    def secret_values(self) -> list[str]:
        """Every secret in clear, for the log/error redactor only."""
        values: list[str] = []
        for key in SECRET_KEYS:
            secret = getattr(self, key)
            if secret is not None and secret.get_secret_value():
                values.append(secret.get_secret_value())
        for prop in self.KAFKA_PRODUCER_PROPERTIES:
            if kafka_properties.is_secret(prop.name):
                values.append(prop.value.get_secret_value())
        return values


def parse_site_selection(value: Any) -> tuple[int, ...] | Literal["all"]:
    """MATOMO_ID_SITE (or --sites): `all`, or comma-separated distinct positive site ids."""
    if isinstance(value, str) and value.strip().lower() == "all":
        return "all"
    items = _split_list(value) if value is not None else []
    bad = "must be comma-separated site ids (positive integers), e.g. 6,15, or all"
    if not isinstance(items, list | tuple):
        raise ValueError(bad)
    ids: list[int] = []
    for item in items:
        if isinstance(item, int) and not isinstance(item, bool) and item > 0:
            ids.append(item)
        elif isinstance(item, str) and item.strip().isdigit() and int(item) > 0:
            ids.append(int(item))
        else:
            raise ValueError(bad)
    if not ids:
        raise ValueError("must list at least one site id, e.g. 6,15, or all")
    if len(set(ids)) != len(ids):
        raise ValueError("lists a site id twice")
    return tuple(ids)
