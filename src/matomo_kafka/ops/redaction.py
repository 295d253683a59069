import logging
from collections.abc import Iterable

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
