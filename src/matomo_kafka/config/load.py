"""From a parm directory to valid Settings and the warnings said at start, or every problem
at once: one line each, before any network call. No line ever carries a secret value:
pydantic's own messages echo inputs, so errors are rebuilt here from the key and the reason
only.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from pydantic import ValidationError

from matomo_kafka.config.keys import CONF_FILE, ENV_FILE
from matomo_kafka.config.review import (
    column_review,
    config_warnings,
    inline_comment,
    salt_problems,
    unknown_key_review,
)
from matomo_kafka.config.settings import Settings, parse_columns
from matomo_kafka.config.sources import RawConfig, collect
from matomo_kafka.errors import ConfigError


@dataclass(frozen=True)
class LoadedConfig:
    """Valid settings, and the warnings a run or a check prints once at its start."""

    settings: Settings
    warnings: list[str]


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
