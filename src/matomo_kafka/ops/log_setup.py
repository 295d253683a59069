"""Logging: the seed's `parm/logging.conf` when present, a plain stderr line otherwise.

Whatever the configuration, every handler gets the redacting filter, so no secret can reach
a log line through any logger (librdkafka's included). With LOG_FORMAT=json every handler
writes one JSON object per record (time, level, logger, message, clusterid), for log
collectors; the redaction happens before formatting, so it applies to JSON lines too.
"""

from __future__ import annotations

import logging
import logging.config
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson

from matomo_kafka.ops.redaction import RedactingFilter, Redactor

FORMAT = "%(asctime)s %(levelname)s [{label}] %(name)s: %(message)s"


class JsonFormatter(logging.Formatter):
    """One compact JSON object per record: time (UTC, ISO 8601, ms), level, logger, message,
    clusterid; plus the record's structured `fields` (site, day, visits...) when it has some."""

    def __init__(self, clusterid: str, redactor: Redactor | None = None) -> None:
        super().__init__()
        self.clusterid = clusterid
        self.redactor = redactor or Redactor()

    def format(self, record: logging.LogRecord) -> str:
        moment = datetime.fromtimestamp(record.created, UTC)
        entry: dict[str, Any] = {
            "time": moment.isoformat(timespec="milliseconds").replace("+00:00", "Z"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
            "clusterid": self.clusterid,
        }
        fields = getattr(record, "fields", None)
        if isinstance(fields, dict):
            for key, value in fields.items():
                entry.setdefault(str(key), value)
        if record.exc_info:  # only when a handler has no redacting filter (never here)
            entry["exception"] = self.formatException(record.exc_info)
        # The message is already redacted by the handler's filter; `fields` are not.
        return self.redactor(orjson.dumps(entry, default=str).decode())


def setup_logging(
    parm_dir: Path,
    redactor: Redactor,
    level: int = logging.INFO,
    label: str = "matomo-kafka",
    json_format: bool = False,
) -> None:
    """`label` (the CLUSTERID) tags every default log line, so mixed job logs stay readable.
    `json_format` (LOG_FORMAT=json) gives every handler, logging.conf's too, JSON lines."""
    root = logging.getLogger()
    conf = parm_dir / "logging.conf"
    if conf.is_file():
        logging.config.fileConfig(conf, disable_existing_loggers=False)
    else:
        for handler in list(root.handlers):
            root.removeHandler(handler)
        handler = logging.StreamHandler()
        handler.setFormatter(logging.Formatter(FORMAT.format(label=label.replace("%", "%%"))))
        root.addHandler(handler)
        root.setLevel(level)
    if level != logging.INFO:
        root.setLevel(level)
    for handler in _all_handlers():
        if not any(isinstance(f, RedactingFilter) for f in handler.filters):
            handler.addFilter(RedactingFilter(redactor))
        if json_format:
            handler.setFormatter(JsonFormatter(label, redactor))
    logging.getLogger("httpx").setLevel(logging.WARNING)
    logging.getLogger("httpcore").setLevel(logging.WARNING)


def _all_handlers() -> list[logging.Handler]:
    """Handlers of the root and of every named logger a logging.conf may have set up."""
    handlers = list(logging.getLogger().handlers)
    for logger in logging.Logger.manager.loggerDict.values():
        if isinstance(logger, logging.Logger):
            handlers.extend(logger.handlers)
    return handlers
