"""Configuration: the seed's parm files plus environment overrides, validated all at once.

producerMatomo users keep their `parm/wa7_conf.ini` and `parm/wa7.env` with the same keys.
Every problem is collected and reported together (one line each) before any network call, and
no error message ever carries a secret value: pydantic's own messages echo inputs, so errors
are rebuilt here from the field name and the reason only.

Besides the named keys, any `KAFKA_PRODUCER_<property>` key passes a librdkafka property
through (kafka_properties.py says how it is named, what is refused and what is secret).
"""

from __future__ import annotations

import configparser
import ipaddress
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from datetime import date
from pathlib import Path
from typing import Annotated, Any, Literal

from dotenv import dotenv_values
from dotenv.parser import parse_stream
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    ValidatorFunctionWrapHandler,
    field_validator,
    model_validator,
)

from matomo_kafka.config import kafka_properties
from matomo_kafka.config.keys import (
    ALL_KEYS,
    CONF_FILE,
    ENV_FILE,
    SECRET_KEYS,
    known_key,
)
from matomo_kafka.config.review import (
    UnknownKey,
    column_review,
    config_warnings,
    inline_comment,
    salt_problems,
    unknown_key_review,
)
from matomo_kafka.errors import ConfigError

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


@dataclass(frozen=True)
class RawConfig:
    """Where each value came from, before validation (kept to explain errors)."""

    values: dict[str, str]
    sources: dict[str, str]
    unknown_keys: list[UnknownKey]
    #: KAFKA_PRODUCER_* by librdkafka property (the highest layer wins, as for any key).
    producer: dict[str, ProducerProperty] = field(default_factory=dict)
    #: Problems of those keys (one property set twice in one place, a refused property).
    producer_problems: list[str] = field(default_factory=list)
    #: Problems found while reading (a key set twice differently): reported with the
    #: validation errors, so every problem shows at once.
    problems: list[str] = field(default_factory=list)
    #: Keys whose value is ambiguous (already reported in `problems`): not validated, so
    #: they are never also reported as missing.
    ambiguous: frozenset[str] = frozenset()
    #: COLONNE_ANNOMYSE's value and source before a higher layer replaced it.
    replaced: dict[str, tuple[str, str]] = field(default_factory=dict)


@dataclass(frozen=True)
class FileValues:
    """What one parm file sets for the known keys (names upper-cased) and KAFKA_PRODUCER_*."""

    values: dict[str, str]
    unknown_keys: list[UnknownKey] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    ambiguous: frozenset[str] = frozenset()
    producer: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class LoadedConfig:
    """Valid settings, and the warnings a run or a check prints once at its start."""

    settings: Settings
    warnings: list[str]


#: Section given to the lines before any [section] header (or to a file without any):
#: configparser needs a header, and no file can name a section this way.
_TOP_SECTION = "\x00top of file"
_KEY_LINE = re.compile(r"^\s*([A-Za-z_][A-Za-z0-9_]*)\s*[:=]")


def producer_key(name: str) -> str | None:
    """A KAFKA_PRODUCER_* name in any case (configparser lower-cases it), prefix upper-cased
    and the property's part kept as written (see kafka_properties.property_name)."""
    name = name.strip()
    if not name.upper().startswith(kafka_properties.PREFIX):
        return None
    return kafka_properties.PREFIX + name[len(kafka_properties.PREFIX) :]


def _quoted(value: str) -> bool:
    return len(value) >= 2 and value[0] == value[-1] and value[0] in "\"'"


def _strip_quotes(value: str) -> str:
    value = value.strip()
    return value[1:-1] if _quoted(value) else value


def _clean(key: str, value: str) -> str:
    """Secrets exactly as the file's format gives them, since a changed salt changes every
    pseudonym and producerMatomo used its ini values verbatim (quotes included). Other values
    are trimmed and unquoted: quotes there were never meant as part of a path or a topic."""
    return value if key in SECRET_KEYS else _strip_quotes(value)


def _and(names: list[str]) -> str:
    return names[0] if len(names) == 1 else f"{', '.join(names[:-1])} and {names[-1]}"


def _merge(path: Path, entries: list[tuple[str, str, str]]) -> FileValues:
    """One value per known key from (place, name, value) entries. The same key in several
    places (sections, spellings) is fine with one value, a problem with several: never
    guess which one the user meant. Values are never echoed (they may be secrets)."""
    found: dict[str, dict[str, str]] = {}
    unknown: list[UnknownKey] = []
    for place, name, value in entries:
        key = known_key(name) or producer_key(name)
        if key is None:
            unknown.append(UnknownKey(str(path), name))
        else:
            found.setdefault(key, {})[place] = _clean(key, value)
    values: dict[str, str] = {}
    problems: list[str] = []
    for key, by_place in found.items():
        if len(set(by_place.values())) == 1:
            values[key] = next(iter(by_place.values()))
            continue
        places = list(by_place)
        count = "twice" if len(places) == 2 else f"{len(places)} times"
        problems.append(f"{key}: set {count} with different values in {path} ({_and(places)})")
    ambiguous = frozenset(found) - frozenset(values)
    producer = {
        key: values.pop(key) for key in list(values) if key.startswith(kafka_properties.PREFIX)
    }
    return FileValues(values, unknown, problems, ambiguous, producer)


def _place(section: str) -> str:
    return "top of file" if section == _TOP_SECTION else f"[{section}]"


def _ini_read_problems(path: Path, exc: configparser.Error) -> list[str]:
    """configparser's refusals as lines that never quote the file (a line may hold a secret);
    line numbers discount the header added for the lines before any section."""
    if isinstance(exc, configparser.DuplicateOptionError):
        key = known_key(exc.option) or exc.option
        line = f", line {exc.lineno - 1}" if exc.lineno else ""
        return [f"{key}: set twice in {path} ({_place(exc.section)}{line}): keep one"]
    if isinstance(exc, configparser.DuplicateSectionError):
        line = f" (line {exc.lineno - 1})" if exc.lineno else ""
        return [f"{path}: section [{exc.section}] appears twice{line}: merge them"]
    if isinstance(exc, configparser.ParsingError):
        return [
            f"{path}: line {lineno - 1} is not `KEY: value`, `KEY = value`, a [section] "
            "or a comment"
            for lineno, _line in exc.errors
        ]
    return [f"{path}: cannot be read ({type(exc).__name__})"]


def read_ini(path: Path) -> FileValues:
    """Reads wa7_conf.ini as producerMatomo's `configparser.ConfigParser()` did, without
    interpolation (`%` in a salt is kept): any sections, [DEFAULT] included, or none; a
    UTF-8 BOM; `KEY: value` or `KEY = value`; full-line `#`/`;` comments only; names
    case-insensitive; values verbatim (see `_clean`). Raises ConfigError if it cannot."""
    text = path.read_text(encoding="utf-8-sig")
    parser = configparser.ConfigParser(interpolation=None)
    try:
        parser.read_string(f"[{_TOP_SECTION}]\n{text}", source=str(path))
    except configparser.Error as exc:
        raise ConfigError(_ini_read_problems(path, exc)) from None
    defaults = parser.defaults()
    entries = [("[DEFAULT]", name, value) for name, value in defaults.items()]
    for section in parser.sections():
        for name, value in parser.items(section, raw=True):
            # configparser copies [DEFAULT] into every section: the same value there is the
            # default itself, not a second place.
            if name not in defaults or value != defaults[name]:
                entries.append((_place(section), name, value))
    merged = _merge(path, entries)
    problems, ambiguous = list(merged.problems), set(merged.ambiguous)
    for place, name, value in entries:
        for line in value.split("\n")[1:]:
            match = _KEY_LINE.match(line)
            inner = (known_key(match.group(1)) or producer_key(match.group(1))) if match else None
            if inner is not None:
                # An indented line continues the previous value (configparser's multi-line
                # values): a known key there was surely meant as a key of its own.
                outer = known_key(name) or name
                problems.append(
                    f"{inner}: indented under {outer} in {path} ({place}), so read as part "
                    f"of {outer}'s value: remove the indentation"
                )
                ambiguous.update({inner, outer})
    values = {key: value for key, value in merged.values.items() if key not in ambiguous}
    return FileValues(values, merged.unknown_keys, problems, frozenset(ambiguous), merged.producer)


def read_env_file(path: Path) -> FileValues:
    """Reads wa7.env like python-dotenv (`KEY="value"` lines, `export` allowed, quotes and
    escapes as dotenv, a UTF-8 BOM skipped) without touching os.environ."""
    found = dotenv_values(path, interpolate=False, encoding="utf-8-sig")
    merged = _merge(
        path, [(name, name, value) for name, value in found.items() if value is not None]
    )
    return replace(merged, problems=merged.problems + _env_lines_dropped(path))


def _env_lines_dropped(path: Path) -> list[str]:
    """Lines python-dotenv drops without a word: no `=` (an indented list continued on the
    next line, as the ini allows, would lose its columns) or unparsable. Named by line only:
    such a line may be part of a secret."""
    problems = []
    with path.open(encoding="utf-8-sig") as stream:
        for binding in parse_stream(stream):
            if binding.error or (binding.key is not None and binding.value is None):
                problems.append(
                    f"{path}: line {binding.original.line} is not KEY=value (wa7.env has no "
                    "continuation lines: keep a list on one line, or quote it across lines)"
                )
    return problems


def _take_producer_keys(
    layer: Mapping[str, str], source: str, into: dict[str, ProducerProperty], problems: list[str]
) -> None:
    """The KAFKA_PRODUCER_* keys of one layer (a file or the environment) into `into`."""
    seen: dict[str, str] = {}
    for key, value in layer.items():
        if not key.startswith(kafka_properties.PREFIX):
            continue
        name = kafka_properties.property_name(key)
        if name in seen:
            problems.append(f"{key}: sets {name} like {seen[name]} (in {source}): keep one")
            continue
        seen[name] = key
        if value.strip() == "":  # blank means unset, as for every key
            into.pop(name, None)
            continue
        into[name] = ProducerProperty(name, key, SecretStr(value), source)


#: Keys whose replacement by a higher layer (wa7.env over the ini, the environment over
#: both) is said at start: a template rendering an empty value would turn pseudonymisation off.
_WATCHED = ("COLONNE_ANNOMYSE",)


def _note_replaced(
    values: Mapping[str, str],
    sources: Mapping[str, str],
    layer: Mapping[str, str],
    replaced: dict[str, tuple[str, str]],
) -> None:
    for key in _WATCHED:
        if key in layer and key in values and layer[key] != values[key]:
            replaced[key] = (values[key], sources[key])


def collect(parm_dir: Path, environ: Mapping[str, str] | None = None) -> RawConfig:
    """Merges ini < env file < environment for the known keys and KAFKA_PRODUCER_*."""
    environ = os.environ if environ is None else environ
    values: dict[str, str] = {}
    sources: dict[str, str] = {}
    unknown: list[UnknownKey] = []
    unreadable: list[str] = []
    problems: list[str] = []
    ambiguous: set[str] = set()
    producer: dict[str, ProducerProperty] = {}
    producer_problems: list[str] = []
    replaced: dict[str, tuple[str, str]] = {}
    if not parm_dir.is_dir():
        raise ConfigError([f"parm directory {parm_dir} does not exist (use --parm-dir)"])
    for name, reader in ((CONF_FILE, read_ini), (ENV_FILE, read_env_file)):
        path = parm_dir / name
        if not path.exists():
            continue
        try:
            found = reader(path)
        except ConfigError as exc:
            unreadable.extend(exc.problems)
            continue
        except (UnicodeDecodeError, OSError) as exc:
            unreadable.append(f"{path}: cannot be read ({type(exc).__name__})")
            continue
        _note_replaced(values, sources, found.values, replaced)
        values.update(found.values)
        sources.update(dict.fromkeys(found.values, str(path)))
        unknown.extend(found.unknown_keys)
        problems.extend(found.problems)
        ambiguous.update(found.ambiguous)
        _take_producer_keys(found.producer, str(path), producer, producer_problems)
    from_environ = {key: environ[key] for key in ALL_KEYS if key in environ}
    _note_replaced(values, sources, from_environ, replaced)
    for key in ALL_KEYS:
        if key in environ:
            values[key] = environ[key]
            sources[key] = "environment"
    _take_producer_keys(environ, "environment", producer, producer_problems)
    for name, prop in producer.items():
        reason = kafka_properties.refusal(name)
        if reason is not None:
            producer_problems.append(f"{prop.key}: {name or repr(name)} {reason}")
    if unreadable:
        raise ConfigError(unreadable)
    return RawConfig(
        values,
        sources,
        unknown,
        producer=producer,
        producer_problems=producer_problems,
        problems=problems,
        ambiguous=frozenset(ambiguous - set(values)),
        replaced=replaced,
    )


def _format_errors(exc: ValidationError, raw: RawConfig) -> list[str]:
    lines: list[str] = []
    for error in exc.errors(include_input=False, include_url=False):
        loc = ".".join(str(part) for part in error["loc"] if not isinstance(part, int))
        message = str(error["msg"]).removeprefix("Value error, ")
        if error["type"] == "missing":
            lines.append(f"{loc}: is required (set it in {CONF_FILE}, {ENV_FILE} or the env)")
            continue
        if error["type"] == "extra_forbidden":
            lines.append(f"{loc}: unknown key")
            continue
        where = f" (from {raw.sources[loc]})" if loc in raw.sources else ""
        if loc in raw.values and raw.values[loc].strip() == "":
            lines.append(f"{loc}: is required but empty{where}")
            continue
        mark = inline_comment(loc, raw)
        if mark is not None:
            where = (
                f" (from {raw.sources[loc]}; inline comments are not supported there: "
                f"' {mark}' and what follows are part of the value)"
            )
        for part in message.split("\n"):
            lines.append(f"{loc}: {part}{where}" if loc else part)
    return lines


def _about(problem: str) -> set[str]:
    """The keys a problem line is about (`KEY: ...` or `KEY1/KEY2: ...`)."""
    return set(problem.split(":", 1)[0].split("/"))


def load_config(parm_dir: Path, environ: Mapping[str, str] | None = None) -> LoadedConfig:
    """Reads and validates everything; raises ConfigError listing every problem."""
    environ = os.environ if environ is None else environ
    raw = collect(parm_dir, environ)
    key_problems, key_warnings = unknown_key_review(raw.unknown_keys, environ)
    # An empty optional key means its default (the field's own, not another file's value);
    # an empty required one is kept, to be reported as such.
    values = {
        key: value
        for key, value in raw.values.items()
        if value.strip() or Settings.model_fields[key].is_required()
    }
    try:
        settings = Settings.model_validate(
            {**values, "KAFKA_PRODUCER_PROPERTIES": tuple(raw.producer.values())}
        )
    except ValidationError as exc:
        errors = _format_errors(exc, raw)
        # An ambiguous key is missing from the values: its problem is already listed.
        errors = [line for line in errors if not _about(line) & raw.ambiguous]
        raise ConfigError(key_problems + raw.problems + errors + raw.producer_problems) from None
    column_problems, column_warnings = column_review(settings.COLONNE_ANNOMYSE)
    problems = key_problems + raw.problems + column_problems + salt_problems(settings)
    if problems or raw.producer_problems:
        raise ConfigError(problems + raw.producer_problems)
    warnings = key_warnings + _dropped_columns(settings, raw) + column_warnings
    return LoadedConfig(settings, warnings + config_warnings(settings, raw))


def _dropped_columns(settings: Settings, raw: RawConfig) -> list[str]:
    """Columns a lower layer listed that a higher one (blank included) no longer lists."""
    if "COLONNE_ANNOMYSE" not in raw.replaced:
        return []
    old_value, old_source = raw.replaced["COLONNE_ANNOMYSE"]
    try:
        old = parse_columns(old_value)
    except ValueError:
        return []
    dropped = [column for column in old if column not in settings.COLONNE_ANNOMYSE]
    if not dropped:
        return []
    source = raw.sources.get("COLONNE_ANNOMYSE", "a higher layer")
    return [
        f"COLONNE_ANNOMYSE: {source} replaces the list of {old_source}, so "
        f"{', '.join(dropped)} {'is' if len(dropped) == 1 else 'are'} no longer pseudonymised"
        f"{' (the value there is empty: nothing is)' if not settings.COLONNE_ANNOMYSE else ''}"
    ]


def load_settings(parm_dir: Path, environ: Mapping[str, str] | None = None) -> Settings:
    """Reads and validates everything; raises ConfigError listing every problem."""
    return load_config(parm_dir, environ).settings
