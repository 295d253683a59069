"""Logging: the seed's `parm/logging.conf` when present, a plain stderr line otherwise.

Whatever the configuration, every handler gets the redacting filter, so no secret can reach
a log line through any logger (librdkafka's included).
"""

from __future__ import annotations

import logging
import logging.config
from pathlib import Path

from matomo_kafka.errors import RedactingFilter, Redactor

FORMAT = "%(asctime)s %(levelname)s [{label}] %(name)s: %(message)s"


def setup_logging(
    parm_dir: Path, redactor: Redactor, level: int = logging.INFO, label: str = "matomo-kafka"
) -> None:
    """`label` (the CLUSTERID) tags every default log line, so mixed job logs stay readable."""
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
    logging.getLogger("httpx").setLevel(logging.WARNING)
    logging.getLogger("httpcore").setLevel(logging.WARNING)


def _all_handlers() -> list[logging.Handler]:
    """Handlers of the root and of every named logger a logging.conf may have set up."""
    handlers = list(logging.getLogger().handlers)
    for logger in logging.Logger.manager.loggerDict.values():
        if isinstance(logger, logging.Logger):
            handlers.extend(logger.handlers)
    return handlers
