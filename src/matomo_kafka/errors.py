"""The errors a run can end with, their exit codes, and the secret redactor.

Each error carries one human line. The CLI prints that line (redacted) and exits with the
error's code, so schedulers can tell a bad config from a Matomo or a Kafka outage.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable

EXIT_OK = 0
EXIT_FAILED = 1  # a site or the run failed at run time (Matomo, Kafka, checkpoint)
EXIT_CONFIG = 2  # invalid configuration or command line
EXIT_LOCKED = 3  # another run holds the checkpoint lock
EXIT_INTERRUPTED = 130  # SIGINT/SIGTERM: stopped after the last acknowledged page


class MatomoKafkaError(Exception):
    """Base of every expected failure; its message is safe to print once redacted."""

    exit_code = EXIT_FAILED


class LockedError(MatomoKafkaError):
    """Another run is working on the same checkpoint files."""

    exit_code = EXIT_LOCKED


class CheckpointError(MatomoKafkaError):
    """A checkpoint file is unreadable or cannot be written: never guess, never restart."""


class MatomoError(MatomoKafkaError):
    """Matomo answered with an error, or could not be reached after the retries."""


class MatomoAuthError(MatomoError):
    """Matomo or its gateway refused the caller: every site would be refused too, so the run
    stops (exit 1), and it is never retried (repeated bad logins can get the IP blocked)."""


class GatewayAuthError(MatomoAuthError):
    """The gateway in front of Matomo refused the request (a 401/403 that is not Matomo's own
    answer): MATOMO_SPS_USER/MATOMO_SPS_MDP are wrong, or missing."""


class TokenRefusedError(MatomoAuthError):
    """Matomo itself refused MATOMO_API_TOKEN: invalid, expired, or without view access to any
    site (Matomo 4 answers the last two alike: a token it does not know is anonymous)."""


class MatomoTLSError(MatomoError):
    """The gateway's certificate was refused (unknown CA, wrong name, expired): not transient,
    so never retried."""


class SiteAccessError(MatomoError):
    """The site is unknown to Matomo, its visitor log is disabled, or the (valid) token cannot
    view it: this site only fails, the others go on."""


class PageTooHeavy(MatomoError):
    """A Live page kept failing for its size (PHP memory or time limit, or a timeout): the
    pager asks for the same position in smaller pages (paging.py)."""


class MatomoResponseError(MatomoError):
    """Matomo answered something that is not what the API promises (shape, types)."""


class TransformError(MatomoKafkaError):
    """A visit cannot be transformed safely (e.g. a dimension name hides a Matomo field)."""


class KafkaDeliveryError(MatomoKafkaError):
    """Kafka did not acknowledge a page (or cannot be reached): the page is not checkpointed."""


class KafkaReadError(MatomoKafkaError):
    """The topic could not be read back to its end (`audit`)."""


#: Secrets shorter than this are not masked: see Redactor.
MIN_MASKED_LENGTH = 8


class Redactor:
    """Replaces every known secret of MIN_MASKED_LENGTH characters or more by *** in any
    text that leaves the process.

    A shorter secret is not masked: it occurs by chance inside ordinary words (a salt `s`
    turned `Europe/Paris` into `Europe/Pari***` and `sites` into `***ite***`), so masking it
    mangles every output, and the mangling itself gives the secret away (the *** show where
    it was). No secret is ever written to an output on purpose; masking is the last line of
    defence for one that slips into a message, and it only works for a secret long enough
    not to be part of everyday text.
    """

    def __init__(self, secrets: Iterable[str] = ()) -> None:
        self._secrets: list[str] = []
        self.add(secrets)

    def add(self, secrets: Iterable[str]) -> None:
        for secret in secrets:
            if len(secret) >= MIN_MASKED_LENGTH and secret not in self._secrets:
                self._secrets.append(secret)
        # Longest first, so a secret containing another is fully masked.
        self._secrets.sort(key=len, reverse=True)

    def __call__(self, text: str) -> str:
        for secret in self._secrets:
            if secret in text:
                text = text.replace(secret, "***")
        return text


class RedactingFilter(logging.Filter):
    """Logging filter: renders the record once, redacted, so no handler sees a secret."""

    def __init__(self, redactor: Redactor) -> None:
        super().__init__()
        self.redactor = redactor

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        if record.exc_info:
            # Tracebacks are replaced by their last line: locals or URLs never reach a log.
            exc = record.exc_info[1]
            message = f"{message} ({type(exc).__name__}: {exc})"
            record.exc_info = None
            record.exc_text = None
        record.msg = self.redactor(message)
        record.args = None
        return True
