import logging
from collections.abc import Iterable, Iterator

#: Secrets shorter than this are not masked, nor pieces of a secret shorter than this: see
#: Redactor.
MIN_MASKED_LENGTH = 8


class Redactor:
    """Replaces every known secret of MIN_MASKED_LENGTH characters or more by *** in any
    text that leaves the process, and every piece of one cut short: its first or its last
    MIN_MASKED_LENGTH characters or more (an excerpt of a file cut at a fixed width showed
    the start of a token; a wrapped line can show its end).

    A shorter secret is not masked: it occurs by chance inside ordinary words (a salt `s`
    turned `Europe/Paris` into `Europe/Pari***` and `sites` into `***ite***`), so masking it
    mangles every output, and the mangling itself gives the secret away (the *** show where
    it was). For the same reason a piece must be as long: 8 characters of a random secret do
    not occur by chance in a log line, and only the piece itself is masked, never the text
    around it. (A secret that starts or ends with 8 characters of everyday text, say
    `matomo-kafka-...`, would mask that text wherever it shows: secrets should be random.)
    No secret is ever written to an output on purpose; masking is the last line of defence
    for one that slips into a message.
    """

    def __init__(self, secrets: Iterable[str] = ()) -> None:
        self._secrets: list[str] = []
        self.add(secrets)

    def add(self, secrets: Iterable[str]) -> None:
        for secret in secrets:
            if len(secret) >= MIN_MASKED_LENGTH and secret not in self._secrets:
                self._secrets.append(secret)

    def __call__(self, text: str) -> str:
        spans = sorted(span for secret in self._secrets for span in _pieces(text, secret))
        if not spans:
            return text
        kept: list[str] = []
        position = 0
        for start, end in spans:  # overlapping or touching pieces are masked as one
            if start > position or not kept:
                kept.append(text[position:start])
                kept.append("***")
            position = max(position, end)
        kept.append(text[position:])
        return "".join(kept)


def _pieces(text: str, secret: str) -> Iterator[tuple[int, int]]:
    """(start, end) of every longest piece of `text` that begins like `secret` or ends like
    it, over MIN_MASKED_LENGTH characters at least (the whole secret is such a piece)."""
    size = MIN_MASKED_LENGTH
    head, tail = secret[:size], secret[-size:]
    start = text.find(head)
    while start != -1:
        end = start + size
        while end < len(text) and end - start < len(secret) and text[end] == secret[end - start]:
            end += 1
        yield start, end
        start = text.find(head, start + 1)
    start = text.find(tail)
    while start != -1:
        begin, matched = start, len(secret) - size  # secret[matched:] is text[begin:end]
        while begin > 0 and matched > 0 and text[begin - 1] == secret[matched - 1]:
            begin, matched = begin - 1, matched - 1
        yield begin, start + size
        start = text.find(tail, start + 1)


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
