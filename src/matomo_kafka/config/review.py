"""What in a user's parm/ is probably a mistake, said at start: an unknown key (named, with the
known key it most resembles), a privacy key misspelt (refused: pseudonymisation would be
silently off), a published placeholder salt (refused: its pseudonyms can be reversed), a
short salt, TLS or certificate checks turned off, quotes and inline comments kept in values.

Nothing here quotes a secret: lines name keys, files and column names only.
"""

from __future__ import annotations

import difflib
import ipaddress
import re
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

from matomo_kafka.config.keys import ALL_KEYS, CONF_FILE, PRIVACY_KEYS, SECRET_KEYS

if TYPE_CHECKING:
    from matomo_kafka.config.settings import Settings
    from matomo_kafka.config.sources import RawConfig, UnknownKey

#: Below this many bytes, an HMAC key can be searched for from the pseudonyms of values
#: with few possibilities (the 2^32 IPv4 addresses): a warning, never a refusal, since a
#: new salt changes every pseudonym.
MIN_SALT_BYTES = 16

#: Salts printed in matomo-kafka's examples and docs, or the seed README's "xxxxx": a
#: pseudonym made with a published salt is reversed by anyone who hashes the candidates.
PLACEHOLDER_SALTS = frozenset(
    {
        "change-me-demo-salt",
        "a-long-random-secret-salt",
        "my-salt",
        "...",
        "your-salt",
        "salt-here",
        "change-me-salt",
        "change-me",
        "changeme",
        "xxxxx",
        "salt",
        "secret",
    }
)

#: How alike (difflib's ratio) an unknown name and a privacy key must be to be refused.
PRIVACY_LIKENESS = 0.75
#: Words that, in an unknown key's name, can only mean pseudonymisation or its key.
PRIVACY_WORDS = ("ANONYM", "ANNOM", "ANONIM", "PSEUDO", "COLONNE", "COLUMN", "SALAGE", "SALT")
#: In the process environment, only names this close to a privacy key are refused: the
#: environment holds many variables of other programs (PYTHONHASHSEED...).
ENVIRONMENT_LIKENESS = 0.86
#: ... and names holding one of these words, which no other program's variable uses.
ENVIRONMENT_WORDS = ("ANONYM", "ANNOM", "ANONIM", "COLONNE", "SALAGE")

_INLINE_COMMENT = re.compile(r"\s([#;])")
LOOPBACK_NAMES = frozenset({"localhost", "localhost.localdomain", "ip6-localhost"})
_FALSE = frozenset({"false", "0", "no", "off"})


#: Matomo's fields that can hold personal data (plugins/*/VisitorDetails.php, 4.x and 5.x):
#: an entry of COLONNE_ANNOMYSE that is one of these in another case, or an action's field
#: listed as a visit's, would pseudonymise nothing (Matomo's names are case-sensitive).
VISIT_FIELDS = (
    "visitIp", "visitorId", "userId", "fingerprint", "city", "region", "regionCode",
    "country", "countryCode", "latitude", "longitude", "location", "referrerUrl",
    "referrerKeyword", "referrerName", "resolution", "visitLocalTime", "customVariables",
)  # fmt: skip
ACTION_FIELDS = (
    "url", "pageTitle", "title", "subtitle", "siteSearchKeyword", "siteSearchCategory",
    "eventCategory", "eventAction", "eventName", "contentName", "contentPiece",
    "contentTarget", "contentInteraction", "orderId", "itemDetails", "customVariables",
)  # fmt: skip
ACTIONS = "actionDetails"

#: Listed field -> fields that hold the same fact in another form (not copies of the value,
#: so not pseudonymised with it): named at start when left out of the list.
ALSO_CARRIED = {
    "userId": ("visitorId",),  # Matomo derives the visitor id from the user id (SHA-1)
    "country": ("countryCode", "countryFlag"),
    "region": ("regionCode",),
    "city": ("latitude", "longitude"),
    "referrerKeyword": ("referrerUrl",),  # the search's URL carries the query
}


_KEY_LIKE = re.compile(r"^[A-Za-z][A-Za-z0-9]*(_[A-Za-z0-9]+)*$")


def _shown(key: UnknownKey) -> str:
    """The name as the user wrote it (configparser lower-cases the ini's), unless it does not
    look like a key: a secret broken onto a line of its own reads as a name, and only its
    length is shown then."""
    name = key.name.strip()
    if not _KEY_LIKE.match(name) or len(name) > 40 or ("_" not in name and len(name) > 12):
        return f"a name of {len(name)} characters that is not a key"
    return name.upper() if Path(key.path).name == CONF_FILE else name


def resembles(name: str, keys: tuple[str, ...] = ALL_KEYS) -> str | None:
    """The known key an unknown name most resembles, if any is close."""
    matches = difflib.get_close_matches(name.strip().upper(), keys, n=1, cutoff=0.6)
    return matches[0] if matches else None


def privacy_near_miss(name: str, likeness: float = PRIVACY_LIKENESS) -> str | None:
    """The privacy key an unknown name was surely meant as (COLONNE_ANONYMISE, SALT...)."""
    upper = name.strip().upper()
    best = max(PRIVACY_KEYS, key=lambda key: difflib.SequenceMatcher(None, upper, key).ratio())
    if difflib.SequenceMatcher(None, upper, best).ratio() >= likeness:
        return best
    words = PRIVACY_WORDS if likeness <= PRIVACY_LIKENESS else ENVIRONMENT_WORDS
    for word in words:
        if word in upper:
            return "SALAGE" if word in ("SALAGE", "SALT") else "COLONNE_ANNOMYSE"
    return None


def unknown_key_review(
    unknown: list[UnknownKey], environ: Mapping[str, str]
) -> tuple[list[str], list[str]]:
    """(problems, warnings): a name resembling a privacy key refuses the start (ignoring it
    would send the configured columns in clear); any other unknown key is named once."""
    problems: list[str] = []
    warnings: list[str] = []
    for key in unknown:
        meant = privacy_near_miss(key.name)
        if meant is not None:
            problems.append(
                f"{meant}: {key.path} sets {_shown(key)}, which is not a key: did you mean "
                f"{meant}? (the seed's spelling; ignoring it would leave personal columns in "
                "clear, so nothing starts until it is renamed or removed)"
            )
            continue
        like = resembles(key.name)
        hint = f"; did you mean {like}?" if like else ""
        warnings.append(
            f"{_shown(key)}: unknown key in {key.path}, ignored{hint} (the keys: "
            "parm.example/ and docs/configuration.md)"
        )
    for name in environ:
        if name in ALL_KEYS or len(name) < 6:
            continue
        meant = privacy_near_miss(name, ENVIRONMENT_LIKENESS)
        if meant is not None:
            problems.append(
                f"{meant}: the environment sets {name}, which is not a key: did you mean "
                f"{meant}? (ignoring it would leave personal columns in clear)"
            )
    return problems, warnings


def _case_typo(name: str, fields: tuple[str, ...]) -> str | None:
    """The field `name` is, spelt in another case."""
    for known in fields:
        if name != known and name.lower() == known.lower():
            return known
    return None


def column_review(columns: tuple[str, ...]) -> tuple[list[str], list[str]]:
    """(problems, warnings) of COLONNE_ANNOMYSE's entries that can be judged without Matomo:
    a personal field in the wrong case or an action's field listed as a visit's would
    leave that field in clear (refused); a field whose fact another field also carries is
    named. Custom dimensions and unknown names are judged against Matomo's answers, at the
    start of each site, at the end of a run and by `check`."""
    problems: list[str] = []
    warnings: list[str] = []
    for column in columns:
        head, *rest = column.split(".")
        if head != ACTIONS and head.lower() == ACTIONS.lower():
            problems.append(f"COLONNE_ANNOMYSE: {column}: did you mean {ACTIONS}? (case)")
            continue
        inner = rest[0] if head == ACTIONS and rest else None
        meant = _case_typo(inner, ACTION_FIELDS) if inner else _case_typo(head, VISIT_FIELDS)
        if meant is not None:
            right = f"{ACTIONS}.{meant}" if inner else meant
            problems.append(
                f"COLONNE_ANNOMYSE: {column} is not a Matomo field: did you mean {right}? "
                "(Matomo's names are case-sensitive; as written it pseudonymises nothing; for "
                "a custom dimension of that name, write its dimensionN)"
            )
            continue
        if inner is None and head not in VISIT_FIELDS:
            action_field = head if head in ACTION_FIELDS else _case_typo(head, ACTION_FIELDS)
            if action_field is not None:
                problems.append(
                    f"COLONNE_ANNOMYSE: {column} is a field of each action: write "
                    f"{ACTIONS}.{action_field} (for a custom dimension of that name, write "
                    "its dimensionN)"
                )
    listed = set(columns)
    for column, carriers in ALSO_CARRIED.items():
        missing = [carrier for carrier in carriers if carrier not in listed]
        if column in listed and missing:
            warnings.append(
                f"COLONNE_ANNOMYSE: {column} is pseudonymised, but {', '.join(missing)} still "
                f"carr{'ies' if len(missing) == 1 else 'y'} the same information in clear: "
                "add them if they must not be read"
            )
    return problems, warnings


def salt_problems(settings: Settings) -> list[str]:
    """A published placeholder salt is refused when columns are pseudonymised with it."""
    if not settings.COLONNE_ANNOMYSE or settings.SALAGE is None:
        return []
    salt = settings.SALAGE.get_secret_value().strip().strip("\"'<>[]{}").strip().lower()
    if salt.replace("_", "-") in PLACEHOLDER_SALTS or (len(salt) >= 3 and not salt.strip("x*.#")):
        return [
            "SALAGE: is a placeholder published in examples: anyone can recompute pseudonyms "
            "made with it (an IP address comes back in a second); set a secret of your own in "
            "wa7.env (chmod 600), e.g. the output of `openssl rand -hex 32`"
        ]
    return []


def _quoted(value: str) -> bool:
    return len(value) >= 2 and value[0] == value[-1] and value[0] in "\"'"


def is_loopback(host: str | None) -> bool:
    """True for an address that never leaves the machine (127.0.0.0/8, ::1, localhost)."""
    if not host:
        return False
    if host.lower() in LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def transport_warnings(settings: Settings) -> list[str]:
    """Every way the configuration sends secrets or data without TLS or without checking the
    peer's certificate: said at every start (run, follow, check), never silently accepted."""
    warnings: list[str] = []
    url = urlsplit(settings.MATOMO_API_URL)
    if url.scheme == "http" and not is_loopback(url.hostname):
        sent = "the token_auth" + (
            " and the gateway password" if settings.MATOMO_SPS_USER is not None else ""
        )
        warnings.append(
            f"MATOMO_API_URL: plain http:// to {url.hostname}: {sent} and every visit cross "
            "the network in clear; use https://"
        )
    properties = {prop.name: prop for prop in settings.KAFKA_PRODUCER_PROPERTIES}
    verify = properties.get("enable.ssl.certificate.verification")
    if verify is not None and verify.value.get_secret_value().strip().lower() in _FALSE:
        warnings.append(
            f"{verify.key}: Kafka brokers' TLS certificates are not verified (from "
            f"{verify.source}): anyone on the path can pose as the cluster and read the "
            "password and every visit"
        )
    identity = properties.get("ssl.endpoint.identification.algorithm")
    if identity is not None and identity.value.get_secret_value().strip().lower() == "none":
        warnings.append(
            f"{identity.key}: the Kafka brokers' host names are not checked against their "
            f"certificates (from {identity.source}): any certificate of the CA passes"
        )
    protocol = settings.kafka_security_protocol
    brokers = [server.strip() for server in settings.KAFKA_SERVERS.split(",") if server.strip()]
    remote = [broker for broker in brokers if not is_loopback(urlsplit(f"//{broker}").hostname)]
    if protocol in ("PLAINTEXT", "SASL_PLAINTEXT") and remote:
        warnings.append(
            f"KAFKA_SECURITY_PROTOCOL: {protocol} to {remote[0]}: every visit crosses the "
            "network unencrypted; use SSL or SASL_SSL"
        )
    if protocol == "SASL_PLAINTEXT" and settings.KAFKA_SASL_MECHANISM == "PLAIN":
        warnings.append(
            "KAFKA_SASL_MECHANISM: PLAIN over SASL_PLAINTEXT sends KAFKA_PASSWORD in clear at "
            "every connection; use SASL_SSL (or SCRAM)"
        )
    return warnings


def config_warnings(settings: Settings, raw: RawConfig) -> list[str]:
    """What is accepted but probably not what the user meant (never quoting a value)."""
    warnings: list[str] = []
    salt = settings.SALAGE.get_secret_value() if settings.SALAGE is not None else ""
    if settings.COLONNE_ANNOMYSE and len(salt.encode()) < MIN_SALT_BYTES:
        warnings.append(
            f"SALAGE: shorter than {MIN_SALT_BYTES} bytes: pseudonyms of values with few "
            "possibilities (IPv4 addresses, numeric ids) can be brute-forced with a short key; "
            "a longer salt is safer but changes every pseudonym (this one is kept)"
        )
    for key in SECRET_KEYS:
        source = raw.sources.get(key)
        if source is not None and Path(source).name == CONF_FILE and _quoted(raw.values[key]):
            warnings.append(
                f"{key}: the quotes around its value in {source} are part of it (configparser "
                "keeps them, as producerMatomo did)"
            )
    for key in ALL_KEYS:
        mark = inline_comment(key, raw) if key in raw.values else None
        if mark is not None:
            warnings.append(
                f"{key}: its value in {raw.sources[key]} contains ' {mark}': inline comments "
                "are not supported there, so that text is part of the value"
            )
    return warnings + transport_warnings(settings)


def inline_comment(key: str, raw: RawConfig) -> str | None:
    """The comment mark (`#` or `;`) in a non-secret value of wa7_conf.ini that looks like an
    inline comment, which configparser keeps as part of the value."""
    source = raw.sources.get(key)
    if key in SECRET_KEYS or source is None or Path(source).name != CONF_FILE:
        return None
    match = _INLINE_COMMENT.search(raw.values[key])
    return match.group(1) if match else None
