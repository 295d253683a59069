"""Why Matomo's gateway or Kafka refused the connection, in one line naming the key to fix.

A refused certificate or login is not transient: retrying it for minutes only delays the
one message an operator needs (and repeated bad logins can lock an account). The raw texts
come from Python's ssl (through httpx) and from librdkafka; neither ever holds a password,
and they are redacted anyway where they are printed.
"""

from __future__ import annotations

import re
import ssl

# OpenSSL's X509_V_ERR_* codes (ssl.SSLCertVerificationError.verify_code) by cause.
_UNKNOWN_CA = {2, 18, 19, 20, 21}  # issuer not found, self-signed leaf or chain, no local CA
_NAME_MISMATCH = {62, 63, 64}  # hostname, e-mail, IP address
_DATES = {9, 10}  # not yet valid, expired


def _cause(exc: BaseException, kind: type[BaseException]) -> BaseException | None:
    """The first exception of `kind` in exc's chain (httpx wraps httpcore wraps ssl)."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        if isinstance(current, kind):
            return current
        seen.add(id(current))
        current = current.__cause__ or current.__context__
    return None


def matomo_tls_refusal(exc: BaseException, ca_bundle: str | None) -> str | None:
    """The line for a certificate the client refused, or None when `exc` is something else
    (a timeout, a reset: those stay transient)."""
    error = _cause(exc, ssl.SSLCertVerificationError)
    if not isinstance(error, ssl.SSLCertVerificationError):
        return None
    reason = str(error.verify_message or error.reason or "unknown reason").rstrip(".")
    code = error.verify_code
    if code in _UNKNOWN_CA:
        cause = f"unknown CA: {reason}"
        fix = (
            f"MATOMO_CA_BUNDLE ({ca_bundle}) does not hold the CA that signed the gateway's "
            "certificate"
            if ca_bundle
            else "set MATOMO_CA_BUNDLE to the gateway's CA (PEM)"
        )
    elif code in _NAME_MISMATCH:
        cause = f"hostname mismatch: {reason}"
        fix = "the host of MATOMO_API_URL must be a name the gateway's certificate has"
    elif code in _DATES:
        cause = reason
        fix = "the gateway's certificate is out of date: tell its owners"
    else:
        cause = reason
        fix = "check MATOMO_CA_BUNDLE and MATOMO_API_URL"
    return f"Matomo TLS: certificate verify failed ({cause}): {fix}"


#: librdkafka's error texts: "<proto>://<host:port>/<broker id>: <what> (after Nms in state X)".
_LIBRDKAFKA = re.compile(r"^(?:\w+://(?P<broker>[^/\s]+)/\S+: )?(?P<what>.*?)(?: \(after .*\))?$")

#: Transport errors that no retry will cure: the broker refuses our certificate (or our
#: lack of one), or the listener does not speak TLS at all.
_TLS_DEAD_ENDS = (
    "alert bad certificate",
    "alert certificate required",
    "alert unknown ca",
    "alert certificate unknown",
    "connecting to a PLAINTEXT broker listener",
)


def kafka_dead_end(text: str) -> bool:
    """A librdkafka transport error that is a refusal, not an outage (see _TLS_DEAD_ENDS)."""
    return any(marker in text for marker in _TLS_DEAD_ENDS)


def kafka_refusal(text: str) -> str:
    """One line for librdkafka's refusal `text` (an error_cb text), naming the keys to fix."""
    match = _LIBRDKAFKA.match(text.strip())
    broker = match.group("broker") if match else None
    what = match.group("what") if match else text
    at = f" at {broker}" if broker else ""
    if "certificate verify failed" in what:
        return (
            f"Kafka TLS: certificate verify failed{at} (the broker's certificate is not "
            "signed by a CA in KAFKA_SSL_CA_LOCATION, or does not name that host): set "
            "KAFKA_SSL_CA_LOCATION to the cluster's CA (PEM) and name the brokers in "
            "KAFKA_SERVERS as their certificates do"
        )
    if "connecting to a PLAINTEXT broker listener" in what:
        return (
            f"Kafka TLS: handshake failed{at}, the listener does not speak TLS: check "
            "KAFKA_SECURITY_PROTOCOL and the port in KAFKA_SERVERS"
        )
    if any(marker in what for marker in _TLS_DEAD_ENDS):
        return (
            f"Kafka TLS: the broker refused this client's certificate{at} ({_short(what)}): "
            "a listener requiring mutual TLS needs KAFKA_PRODUCER_SSL_CERTIFICATE_LOCATION and "
            "KAFKA_PRODUCER_SSL_KEY_LOCATION (and KAFKA_PRODUCER_SSL_KEY_PASSWORD), signed by a "
            "CA the cluster trusts"
        )
    if "SASL" in what and "uthentication" in what:
        return (
            f"Kafka refused the SASL login{at} ({_short(what)}): check "
            "KAFKA_USER/KAFKA_PASSWORD (and KAFKA_SASL_MECHANISM)"
        )
    if "SSL" in what or "TLS" in what:
        return (
            f"Kafka TLS{at}: {_short(what)}: check KAFKA_SECURITY_PROTOCOL, "
            "KAFKA_SSL_CA_LOCATION and any KAFKA_PRODUCER_SSL_* setting"
        )
    return f"Kafka refused the client: {text}"


def _short(what: str) -> str:
    """librdkafka's reason without OpenSSL's error-queue prefix (error:0A000086:...::)."""
    what = re.sub(r"error:[0-9A-Fa-f]{8}:[^:]*:[^:]*:", "", what)
    what = what.removeprefix("SASL authentication error: ")
    return " ".join(what.split())
