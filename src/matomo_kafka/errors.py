"""Every error a command can end with, each with its exit code.

Each error carries one human line. The CLI prints that line (redacted) and exits with the
error's `exit_code`, so schedulers can tell a bad config from a Matomo or a Kafka outage:
1 a site or the run failed, 2 the configuration or command line is invalid, 3 another run or
instance holds the work, 130 interrupted after the last acknowledged page.
"""

from __future__ import annotations

EXIT_OK = 0
EXIT_FAILED = 1  # a site or the run failed at run time (Matomo, Kafka, checkpoint)
EXIT_CONFIG = 2  # invalid configuration or command line
EXIT_LOCKED = 3  # another run holds the checkpoint lock
EXIT_INTERRUPTED = 130  # SIGINT/SIGTERM: stopped after the last acknowledged page


class MatomoKafkaError(Exception):
    """Base of every expected failure; its message is safe to print once redacted."""

    exit_code = EXIT_FAILED


# -- configuration and the run's own files ---------------------------------------------------


class ConfigError(MatomoKafkaError):
    """The configuration is invalid; `problems` holds one human line per problem."""

    exit_code = EXIT_CONFIG

    def __init__(self, problems: list[str]) -> None:
        super().__init__("; ".join(problems))
        self.problems = problems


class LockedError(MatomoKafkaError):
    """Another run is working on the same checkpoint files. `holder`: the pid the lock file
    names ("" if none), for callers that word their own message (`follow`)."""

    exit_code = EXIT_LOCKED

    def __init__(self, message: str, holder: str = "") -> None:
        super().__init__(message)
        self.holder = holder


class CheckpointError(MatomoKafkaError):
    """A checkpoint file is unreadable or cannot be written: never guess, never restart."""


class OffsetBeyondDay(CheckpointError):
    """The checkpoint's offset is more visits than Matomo lists for its day (a hand edit, a
    seed file of another day): resuming there would skip the rest of the day silently. The
    pager knows only the day and offset; the pipeline names the checkpoint."""

    def __init__(self, day: object, offset: int) -> None:
        super().__init__(f"offset {offset} is more visits than Matomo lists for {day}")
        self.day = day
        self.offset = offset


# -- Matomo ------------------------------------------------------------------------------------


class MatomoError(MatomoKafkaError):
    """Matomo answered with an error, or could not be reached after the retries."""


class TransientMatomoError(MatomoError):
    """A failure worth retrying; `retry_after` is the server's own hint, when it gave one."""

    def __init__(self, message: str, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class ServerLimitError(TransientMatomoError):
    """Matomo failed a request for its size: PHP's memory or time limit, or a timeout. The
    same request may pass later; a smaller page passes more surely (see PageTooHeavy)."""


class PageTooHeavy(MatomoError):
    """A Live page kept failing for its size (PHP memory or time limit, or a timeout): the
    pager asks for the same position in smaller pages (source/paging.py)."""


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


class MatomoResponseError(MatomoError):
    """Matomo answered something that is not what the API promises (shape, types)."""


class TransformError(MatomoKafkaError):
    """A visit cannot be transformed safely (e.g. a dimension name hides a Matomo field)."""


# -- Kafka -------------------------------------------------------------------------------------


class KafkaDeliveryError(MatomoKafkaError):
    """Kafka did not acknowledge a page (or cannot be reached): the page is not checkpointed."""


class FencedError(KafkaDeliveryError):
    """Another instance started a transactional producer for the same site: this one stops.
    Exit code 3, as for a checkpoint lock held by another run: another instance does the work."""

    exit_code = EXIT_LOCKED


class TopicChangedError(MatomoKafkaError):
    """The topic's id is not the one the checkpoints were written against (deleted and created
    again): its history is gone, so nothing is sent until the operator decides (exit 2)."""

    exit_code = EXIT_CONFIG


class KafkaReadError(MatomoKafkaError):
    """The topic could not be read back to its end (`audit`)."""


# -- how a run stops -------------------------------------------------------------------------


class Interrupted(MatomoKafkaError):
    """SIGINT/SIGTERM: the run stopped cleanly after its last acknowledged page."""

    exit_code = EXIT_INTERRUPTED


class Stopped(MatomoKafkaError):
    """Another site hit a run-wide failure: this one stopped after its last acknowledged page."""
