"""Where each configuration value comes from: parm/wa7_conf.ini read as producerMatomo's
configparser did, parm/wa7.env read as python-dotenv does, then the environment, each layer
over the one before. producerMatomo users keep both files with the same keys.

A key set twice with different values is a problem, never a guess, and no problem line quotes
a value (it may be a secret): lines name keys, files, sections and line numbers only.
"""

from __future__ import annotations

import configparser
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path

from dotenv import dotenv_values
from dotenv.parser import parse_stream
from pydantic import SecretStr

from matomo_kafka.config import kafka_properties
from matomo_kafka.config.keys import (
    ALL_KEYS,
    CONF_FILE,
    ENV_FILE,
    SECRET_KEYS,
    known_key,
)
from matomo_kafka.config.settings import ProducerProperty
from matomo_kafka.errors import ConfigError


@dataclass(frozen=True)
class UnknownKey:
    """A key a parm file sets that matomo-kafka does not read."""

    path: str
    name: str


@dataclass(frozen=True)
class FileValues:
    """What one parm file sets for the known keys (names upper-cased) and KAFKA_PRODUCER_*."""

    values: dict[str, str]
    unknown_keys: list[UnknownKey] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    ambiguous: frozenset[str] = frozenset()
    producer: dict[str, str] = field(default_factory=dict)


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
