"""The production transports end to end: Matomo over HTTPS behind basic auth (a corporate CA
in MATOMO_CA_BUNDLE) and Kafka over SASL_SSL with SCRAM-SHA-512 (KAFKA_SSL_CA_LOCATION) or
mutual TLS (KAFKA_PRODUCER_SSL_*), in both delivery modes. The real broker's TLS listeners
(scripts/kafka-local.sh), the simulator over real HTTPS, certificates made by openssl for the
session; nothing is mocked. Every refusal (unknown CA, a host name the certificate does not
have, a wrong password) is one line naming the key to fix, a non-zero exit, nothing sent and
no checkpoint touched, and is never retried."""

from __future__ import annotations

import contextlib
import socket
import ssl
import subprocess
import sys
import threading
from collections.abc import Iterator
from datetime import date
from pathlib import Path
from typing import Any

import httpx
import pytest
from confluent_kafka.admin import AdminClient

from matomo_kafka.errors import MatomoTLSError
from matomo_kafka.model import Cursor
from matomo_kafka.simulator import MatomoSimulator
from matomo_kafka.source.client import MatomoClient, RetryPolicy
from matomo_kafka.state.checkpoint_files import CheckpointStore
from support.certs import Certs
from support.cli import CliResult, clean_env, run_cli
from support.kafka import (
    BOOTSTRAP,
    KAFKA_MTLS_PORT,
    KAFKA_SSL_DIR,
    KAFKA_SSL_PORT,
    read_records,
    read_topic,
)
from support.parm import TOKEN, base_values, write_parm
from support.runs import two_sites
from support.secrets import (  # all in support/secrets.py's list
    GATEWAY,
    WRONG_GATEWAY_PASSWORD,
    WRONG_KAFKA_PASSWORD,
    WRONG_KEY_PASSWORD,
)
from support.simulator_process import free_port

LIMIT = 10
RUN_DATE = "2024-03-06"  # reads 2024-03-01 .. 2024-03-05
DAYS = [date(2024, 3, d) for d in range(1, 6)]
DELIVERIES = ["at_least_once", "exactly_once"]


@pytest.fixture(scope="session")
def kafka_ca(kafka_bootstrap: str) -> Path:
    """The CA that scripts/kafka-local.sh made for the broker's TLS listeners."""
    ca = KAFKA_SSL_DIR / "ca.pem"
    assert ca.is_file(), f"{ca}: the broker's CA is missing (scripts/kafka-local.sh start)"
    return ca


def client_pair() -> tuple[str, str, str]:
    """The broker's throwaway mTLS client certificate, key and key password."""
    password = (KAFKA_SSL_DIR / "client.key.password").read_text().strip()
    return str(KAFKA_SSL_DIR / "client.pem"), str(KAFKA_SSL_DIR / "client.key"), password


def tls_values(
    tmp_path: Path, sim: MatomoSimulator, topic: str, certs: Certs, kafka_ca: Path, **extra: str
) -> dict[str, str]:
    """The production set-up: HTTPS gateway with a corporate CA and basic auth, SASL_SSL with
    SCRAM-SHA-512 (KAFKA_SECURITY_PROTOCOL left to its default: SASL_SSL with a user)."""
    values = {
        "MATOMO_SPS_USER": GATEWAY[0], "MATOMO_SPS_MDP": GATEWAY[1],
        "MATOMO_CA_BUNDLE": str(certs.ca), "KAFKA_SERVERS": f"127.0.0.1:{KAFKA_SSL_PORT}",
        "KAFKA_USER": "matomo", "KAFKA_PASSWORD": "matomo-local-secret",
        "KAFKA_SSL_CA_LOCATION": str(kafka_ca),
    }  # fmt: skip
    return base_values(tmp_path, sim.url, topic, **{**values, **extra})


def https_sim(sim_factory: Any, certs: Certs, cert: tuple[str, str] | None = None) -> Any:
    return sim_factory(two_sites(LIMIT), tls=cert or certs.server, basic_auth=GATEWAY)


def expected_keys(sim: MatomoSimulator) -> set[str]:
    return {f"{idsite}:{int(v['idVisit'])}" for idsite in (1, 2) for d in DAYS
            for v in sim.expected_visits(idsite, d)}  # fmt: skip


def delivered(topic: str, delivery: str) -> list[str]:
    """Keys in the topic; exactly-once as a read_committed consumer sees them."""
    if delivery == "exactly_once":
        return [key for key, _ in read_records(topic, "read_committed")]
    return [record.key for record in read_topic(topic)]


def store(tmp_path: Path) -> CheckpointStore:
    data = tmp_path / "data"
    return CheckpointStore(str(data / "filterdate"), str(data / "last_filter_offset"))


def error_lines(result: CliResult) -> list[str]:
    return [line for line in result.stderr.splitlines() if line.startswith("matomo-kafka: error")]


# ---- the simulator over HTTPS ------------------------------------------------------------


@pytest.mark.simulator
def test_simulator_serves_https_behind_basic_auth(sim_factory: Any, certs: Certs) -> None:
    sim = https_sim(sim_factory, certs)
    assert sim.url.startswith("https://127.0.0.1:")
    form = {"module": "API", "method": "API.getMatomoVersion", "format": "json",
            "token_auth": TOKEN}  # fmt: skip
    with httpx.Client(verify=ssl.create_default_context(cafile=certs.ca)) as client:
        assert client.post(sim.url, data=form, auth=GATEWAY).json() == {"value": "5.0.2"}
        assert client.post(sim.url, data=form).status_code == 401
    with httpx.Client(verify=True) as client, pytest.raises(httpx.ConnectError):
        client.post(sim.url, data=form, auth=GATEWAY)  # the system CAs do not know ours
    for _ in range(600):  # the server learns of the refusal on its own thread, a bit later
        if sim.tls_refusals:
            break
        threading.Event().wait(0.05)
    assert sim.tls_refusals == ["TLSV1_ALERT_UNKNOWN_CA"]
    assert [r["status"] for r in sim.requests] == [200, 401]


@pytest.mark.simulator
def test_simulate_command_over_https(tmp_path: Path, certs: Certs) -> None:
    cert, key = certs.server
    half = run_cli("simulate", "--tls-cert", cert)
    assert half.code == 2 and "--tls-cert and --tls-key go together" in half.stderr
    bad = run_cli("simulate", "--tls-cert", cert, "--tls-key", str(tmp_path / "missing.key"))
    assert bad.code == 2 and "--tls-cert/--tls-key" in bad.stderr

    port = free_port()
    args = [sys.executable, "-m", "matomo_kafka.cli", "simulate", "--port", str(port)]
    args += ["--tls-cert", cert, "--tls-key", key, "--basic-auth", "u:p", "--token", "t"]
    process = subprocess.Popen(args, env=clean_env(), stdout=subprocess.PIPE, text=True)
    try:
        assert process.stdout is not None
        assert process.stdout.readline().strip() == (
            f"matomo simulator on https://127.0.0.1:{port}/index.php"
        )
        form = {"module": "API", "method": "API.getMatomoVersion", "format": "json",
                "token_auth": "t"}  # fmt: skip
        url = f"https://127.0.0.1:{port}/index.php"
        with httpx.Client(
            verify=ssl.create_default_context(cafile=certs.ca), auth=("u", "p")
        ) as client:
            for _ in range(100):  # the line is printed just before the socket is bound
                with contextlib.suppress(httpx.ConnectError):
                    assert client.post(url, data=form).json() == {"value": "5.0.2"}
                    break
                threading.Event().wait(0.05)
            else:
                pytest.fail("simulate --tls-cert never answered")
    finally:
        process.terminate()
        process.wait(timeout=30)


# ---- Matomo: a refused certificate is not transient ---------------------------------------


@pytest.mark.simulator
@pytest.mark.parametrize("case", ["unknown CA", "no CA bundle", "wrong host name"])
def test_a_refused_gateway_certificate_is_never_retried(
    sim_factory: Any, certs: Certs, case: str
) -> None:
    cert = certs.wrong_name if case == "wrong host name" else certs.server
    sim = https_sim(sim_factory, certs, cert)
    ca = {"unknown CA": str(certs.unknown_ca), "no CA bundle": None}.get(case, str(certs.ca))
    client = MatomoClient(
        sim.url,
        TOKEN,
        gateway_auth=GATEWAY,
        ca_bundle=ca,
        retry=RetryPolicy(max_retries=5, backoff=0.01, max_wait=0.05),
    )
    with client, pytest.raises(MatomoTLSError) as refused:
        client.version()
    assert client.retries_done == 0
    assert sim.requests == []  # the handshake failed: no HTTP request reached the gateway
    message = str(refused.value)
    assert message.startswith("API.getMatomoVersion: Matomo TLS: certificate verify failed (")
    expected = {
        "unknown CA": f"unknown CA: unable to get local issuer certificate): MATOMO_CA_BUNDLE "
        f"({certs.unknown_ca}) does not hold the CA",
        "no CA bundle": "unknown CA: unable to get local issuer certificate): set "
        "MATOMO_CA_BUNDLE to the gateway's CA (PEM)",
        "wrong host name": "hostname mismatch: IP address mismatch, certificate is not valid "
        "for '127.0.0.1'): the host of MATOMO_API_URL must be a name the gateway's certificate",
    }[case]
    assert expected in message


# ---- end to end: HTTPS + basic auth to Matomo, SASL_SSL + SCRAM-SHA-512 to Kafka ----------


@pytest.mark.kafka
@pytest.mark.simulator
@pytest.mark.parametrize("delivery", DELIVERIES)
def test_https_gateway_and_sasl_ssl_end_to_end(
    tmp_path: Path, topic: str, sim_factory: Any, certs: Certs, kafka_ca: Path, delivery: str
) -> None:
    sim = https_sim(sim_factory, certs)
    values = tls_values(tmp_path, sim, topic, certs, kafka_ca, DELIVERY=delivery)
    parm = write_parm(tmp_path / "parm", **values)
    result = run_cli("run", "--parm-dir", str(parm), "--run-date", RUN_DATE)
    assert result.code == 0, result.output

    keys = delivered(topic, delivery)
    assert sorted(keys) == sorted(expected_keys(sim)), "a visit is missing or was sent twice"
    for idsite in (1, 2):
        assert store(tmp_path).load(idsite) == Cursor(date(2024, 3, 6), 0)
    assert sim.requests and all(r["status"] == 200 for r in sim.requests)
    assert all(r["token_in"] == "body" for r in sim.requests)
    if delivery == "exactly_once":
        state = dict(read_records(f"{topic}.state"))
        checkpoints = {key: value for key, value in state.items() if key.isdigit()}
        assert {key for key, value in checkpoints.items() if value} == {"1", "2"}
        assert all(b'"day":"2024-03-06"' in (value or b"") for value in checkpoints.values())

    check = run_cli("check", "--parm-dir", str(parm), env=clean_env(COLUMNS="400"))
    assert check.code == 0, check.output
    assert "Matomo 5.0.2 at https://" in check.stdout
    assert f"topic {topic} (3 partitions)" in check.stdout


# ---- refusals ------------------------------------------------------------------------------


class TcpRelay:
    """Relays 127.0.0.2:<port> to the broker's SASL_SSL listener: the same broker, reached by
    an address its certificate (SAN localhost, 127.0.0.1) does not name. Plain TCP plumbing;
    the TLS handshake is the client's with the real broker."""

    def __init__(self, target: int) -> None:
        self.target = target
        self.server = socket.socket()
        self.server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            self.server.bind(("127.0.0.2", 0))
        except OSError as exc:
            self.server.close()
            pytest.skip(f"127.0.0.2 is not a loopback address here ({exc})")
        self.server.listen()
        self.port = int(self.server.getsockname()[1])
        self.sockets: list[socket.socket] = []
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.server.accept()
                upstream = socket.create_connection(("127.0.0.1", self.target), timeout=10)
            except OSError:
                return
            upstream.settimeout(None)
            self.sockets += [client, upstream]
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pump, args=(a, b), daemon=True).start()

    @staticmethod
    def _pump(source: socket.socket, sink: socket.socket) -> None:
        with contextlib.suppress(OSError):
            while data := source.recv(65536):
                sink.sendall(data)
        with contextlib.suppress(OSError):
            sink.shutdown(socket.SHUT_WR)

    def close(self) -> None:
        for sock in [self.server, *self.sockets]:
            sock.close()


@pytest.fixture
def relay() -> Iterator[TcpRelay]:
    relay = TcpRelay(KAFKA_SSL_PORT)
    yield relay
    relay.close()


#: case -> (side, the fragments the one error line must hold)
REFUSALS = {
    "matomo unknown CA": ("matomo", [
        "Matomo TLS: certificate verify failed (unknown CA", "MATOMO_CA_BUNDLE (",
        "does not hold the CA that signed the gateway's certificate"]),
    "matomo no CA bundle": ("matomo", [
        "Matomo TLS: certificate verify failed (unknown CA",
        "set MATOMO_CA_BUNDLE to the gateway's CA"]),
    "matomo wrong host name": ("matomo", [
        "Matomo TLS: certificate verify failed (hostname mismatch", "MATOMO_API_URL"]),
    "matomo wrong basic auth": ("matomo", [
        "HTTP 401 from the gateway: check MATOMO_SPS_USER/MATOMO_SPS_MDP"]),
    "kafka unknown CA": ("kafka", [
        f"Kafka TLS: certificate verify failed at 127.0.0.1:{KAFKA_SSL_PORT}",
        "set KAFKA_SSL_CA_LOCATION to the cluster's CA"]),
    "kafka wrong host name": ("kafka", [
        "Kafka TLS: certificate verify failed at 127.0.0.2:", "does not name that host",
        "KAFKA_SERVERS"]),
    "kafka wrong SASL password": ("kafka", [
        f"Kafka refused the SASL login at 127.0.0.1:{KAFKA_SSL_PORT}",
        "invalid credentials with SASL mechanism SCRAM-SHA-512",
        "check KAFKA_USER/KAFKA_PASSWORD"]),
}  # fmt: skip


def snapshot(directory: Path) -> dict[str, tuple[bytes, int]]:
    """Every checkpoint file (locks aside) with its bytes and modification time."""
    return {path.name: (path.read_bytes(), path.stat().st_mtime_ns)
            for path in sorted(directory.iterdir()) if path.suffix != ".lock"}  # fmt: skip


@pytest.mark.kafka
@pytest.mark.simulator
@pytest.mark.parametrize("delivery", DELIVERIES)
@pytest.mark.parametrize("case", list(REFUSALS))
def test_refusals_one_line_nothing_sent_checkpoints_untouched(
    request: pytest.FixtureRequest, tmp_path: Path, topic: str, sim_factory: Any,
    certs: Certs, kafka_ca: Path, case: str, delivery: str,
) -> None:  # fmt: skip
    side, fragments = REFUSALS[case]
    sim = https_sim(sim_factory, certs, certs.wrong_name if "host" in case and
                    side == "matomo" else None)  # fmt: skip
    overrides = {
        "matomo unknown CA": {"MATOMO_CA_BUNDLE": str(certs.unknown_ca)},
        "matomo no CA bundle": {"MATOMO_CA_BUNDLE": ""},
        "matomo wrong basic auth": {"MATOMO_SPS_MDP": WRONG_GATEWAY_PASSWORD},
        "kafka unknown CA": {"KAFKA_SSL_CA_LOCATION": str(certs.unknown_ca)},
        "kafka wrong SASL password": {"KAFKA_PASSWORD": WRONG_KAFKA_PASSWORD},
    }.get(case, {})
    if case == "kafka wrong host name":
        relay = request.getfixturevalue("relay")
        overrides = {"KAFKA_SERVERS": f"127.0.0.2:{relay.port}"}
    values = tls_values(tmp_path, sim, topic, certs, kafka_ca, DELIVERY=delivery,
                        MATOMO_MAX_RETRIES="5", **overrides)  # fmt: skip
    parm = write_parm(tmp_path / "parm", **values)
    data = tmp_path / "data"
    data.mkdir()
    (data / "filterdate1.txt").write_text("2024-03-03\n")
    (data / "last_filter_offset1.txt").write_text("5\n")
    before = snapshot(data)

    result = run_cli("run", "--parm-dir", str(parm), "--run-date", RUN_DATE)
    assert result.code == 1, result.output
    lines = error_lines(result)
    assert len(lines) == 1, result.stderr
    for fragment in fragments:
        assert fragment in lines[0], (fragment, lines[0])
    assert "retry" not in result.stderr and "still failing" not in result.stderr
    for secret in (WRONG_GATEWAY_PASSWORD, WRONG_KAFKA_PASSWORD):
        assert secret not in result.output
    assert snapshot(data) == before, "a checkpoint file was touched"
    assert read_topic(topic) == [], "something was sent"
    if side == "matomo":
        assert all(r["method"] == "API.getMatomoVersion" for r in sim.requests)
    else:
        assert sim.requests == [], "Matomo was called although Kafka refused the client"
    state_topics = AdminClient({"bootstrap.servers": BOOTSTRAP}).list_topics(timeout=30).topics
    assert f"{topic}.state" not in state_topics

    if delivery == "at_least_once":  # `check` does not depend on the delivery mode
        check = run_cli("check", "--parm-dir", str(parm), env=clean_env(COLUMNS="1000"))
        assert check.code == 1, check.output
        row = [line for line in check.stdout.splitlines() if " FAIL " in line]
        assert len(row) == 1 and row[0].split()[1] == side, check.stdout
        for fragment in fragments:
            assert fragment in row[0], (fragment, row[0])
        assert error_lines(check) == ["matomo-kafka: error: 1 check(s) failed"]
        assert snapshot(data) == before


# ---- mutual TLS through KAFKA_PRODUCER_* --------------------------------------------------


def mtls_values(
    tmp_path: Path, sim: MatomoSimulator, topic: str, certs: Certs, kafka_ca: Path, delivery: str
) -> dict[str, str]:
    return base_values(
        tmp_path, sim.url, topic,
        MATOMO_SPS_USER=GATEWAY[0], MATOMO_SPS_MDP=GATEWAY[1], MATOMO_CA_BUNDLE=str(certs.ca),
        KAFKA_SERVERS=f"127.0.0.1:{KAFKA_MTLS_PORT}", KAFKA_SECURITY_PROTOCOL="SSL",
        KAFKA_SSL_CA_LOCATION=str(kafka_ca), DELIVERY=delivery,
    )  # fmt: skip


@pytest.mark.kafka
@pytest.mark.simulator
@pytest.mark.parametrize("delivery", DELIVERIES)
def test_mutual_tls_through_the_passthrough_keys(
    tmp_path: Path, topic: str, sim_factory: Any, certs: Certs, kafka_ca: Path, delivery: str
) -> None:
    """The client certificate in wa7.env, its key (dotted name) in wa7_conf.ini, the key's
    password in the environment: every client (transactions, state topic) gets them."""
    cert, key, password = client_pair()
    sim = https_sim(sim_factory, certs)
    values = mtls_values(tmp_path, sim, topic, certs, kafka_ca, delivery)
    parm = write_parm(tmp_path / "parm", KAFKA_PRODUCER_SSL_CERTIFICATE_LOCATION=cert, **values)
    with (parm / "wa7_conf.ini").open("a") as ini:
        ini.write(f"KAFKA_PRODUCER_ssl.key.location: {key}\n")
    env = clean_env(KAFKA_PRODUCER_SSL_KEY_PASSWORD=password)
    result = run_cli("run", "-v", "--parm-dir", str(parm), "--run-date", RUN_DATE, env=env)
    assert result.code == 0, result.output
    assert password not in result.output
    assert sorted(delivered(topic, delivery)) == sorted(expected_keys(sim))
    for idsite in (1, 2):
        assert store(tmp_path).load(idsite) == Cursor(date(2024, 3, 6), 0)


@pytest.mark.kafka
@pytest.mark.simulator
def test_mutual_tls_without_a_client_certificate_is_refused(
    tmp_path: Path, topic: str, sim_factory: Any, certs: Certs, kafka_ca: Path
) -> None:
    sim = https_sim(sim_factory, certs)
    parm = write_parm(
        tmp_path / "parm", **mtls_values(tmp_path, sim, topic, certs, kafka_ca, "at_least_once")
    )
    result = run_cli("run", "--parm-dir", str(parm), "--run-date", RUN_DATE)
    assert result.code == 1, result.output
    [line] = error_lines(result)
    assert "Kafka TLS: the broker refused this client's certificate at 127.0.0.1:" in line
    assert "KAFKA_PRODUCER_SSL_CERTIFICATE_LOCATION" in line
    assert sim.requests == [] and read_topic(topic) == []
    assert not (tmp_path / "data" / "filterdate1.txt").exists()


# ---- KAFKA_PRODUCER_*: naming, refusals, validation by librdkafka --------------------------


@pytest.mark.simulator
@pytest.mark.parametrize(
    ("extra", "expected"),
    [
        ({"KAFKA_PRODUCER_ENABLE_IDEMPOTENCE": "false"},
         "KAFKA_PRODUCER_ENABLE_IDEMPOTENCE: enable.idempotence cannot be overridden"),
        ({"KAFKA_PRODUCER_ACKS": "1"}, "KAFKA_PRODUCER_ACKS: acks cannot be overridden"),
        ({"KAFKA_PRODUCER_BOOTSTRAP_SERVERS": "x:9093"},
         "bootstrap.servers is set by KAFKA_SERVERS: use that key"),
        ({"KAFKA_PRODUCER_SASL_PASSWORD": "p"}, "sasl.password is set by KAFKA_PASSWORD"),
        ({"KAFKA_PRODUCER_ISOLATION_LEVEL": "read_uncommitted"}, "isolation.level cannot"),
        ({"KAFKA_PRODUCER_TRANSACTIONAL_ID": "x"}, "transactional.id cannot be overridden"),
        ({"KAFKA_PRODUCER_ERROR__CB": "x"}, "error_cb is a callback"),
        ({"KAFKA_PRODUCER_SOCKET_KEEPALIVE_ENABLE": "true",
          "KAFKA_PRODUCER_socket.keepalive.enable": "true"}, "keep one"),
        ({"KAFKA_PRODUCER_SSL_CERTIFICATE_LOCATON": "/c.pem"},
         'KAFKA_PRODUCER_SSL_CERTIFICATE_LOCATON (ssl.certificate.locaton, from '),
        ({"KAFKA_PRODUCER_LOG_LEVEL": "7"}, 'No such configuration property: "log.level"'),
        ({"KAFKA_PRODUCER_SOCKET_TIMEOUT_MS": "soon"},
         'KAFKA_PRODUCER_SOCKET_TIMEOUT_MS (socket.timeout.ms, from '),
        ({"KAFKA_PRODUCER_ENABLE_SSL_CERTIFICATE_VERIFICATION": "maybe"},
         'Expected bool value for "enable.ssl.certificate.verification"'),
        ({"KAFKA_PRODUCER_MAX_IN_FLIGHT": "10"}, "must be set <= 5 when `enable.idempotence`"),
    ],
)  # fmt: skip
def test_bad_passthrough_is_one_config_line_before_any_call(
    tmp_path: Path, sim_factory: Any, extra: dict[str, str], expected: str
) -> None:
    """Exit 2 before Matomo is called, even with MATOMO_ID_SITE=all (a Matomo call)."""
    sim = sim_factory(two_sites(LIMIT))
    values = base_values(tmp_path, sim.url, "t", MATOMO_ID_SITE="all", **extra)
    result = run_cli("run", "--parm-dir", str(write_parm(tmp_path / "parm", **values)))
    assert result.code == 2, result.output
    config_lines = [line for line in result.stderr.splitlines() if "config:" in line]
    assert len(config_lines) == 1 and expected in config_lines[0], result.stderr
    assert "Traceback" not in result.output
    assert sim.requests == [] and not (tmp_path / "data").exists()


@pytest.mark.kafka
@pytest.mark.simulator
def test_files_librdkafka_cannot_use_are_config_errors_and_secrets_stay_hidden(
    tmp_path: Path, sim_factory: Any, kafka_ca: Path
) -> None:
    cert, key, _ = client_pair()
    sim = sim_factory(two_sites(LIMIT))
    not_pem = tmp_path / "not-a-ca.pem"
    not_pem.write_text("not a certificate\n")
    cases = [
        ({"KAFKA_SSL_CA_LOCATION": str(not_pem)}, "KAFKA_SSL_CA_LOCATION: librdkafka: "
         "Failed to create producer: ssl.ca.location failed"),
        ({"KAFKA_SSL_CA_LOCATION": str(kafka_ca), "KAFKA_PRODUCER_SSL_CERTIFICATE_LOCATION": cert,
          "KAFKA_PRODUCER_SSL_KEY_LOCATION": key,
          "KAFKA_PRODUCER_SSL_KEY_PASSWORD": WRONG_KEY_PASSWORD},
         "is KAFKA_PRODUCER_SSL_KEY_PASSWORD the key's password?"),
    ]  # fmt: skip
    for extra, expected in cases:
        values = base_values(tmp_path, sim.url, "t", KAFKA_SECURITY_PROTOCOL="SSL", **extra)
        parm = write_parm(tmp_path / "parm", **values)
        for command in (["run"], ["check"], ["status"]):
            result = run_cli(*command, "--parm-dir", str(parm))
            assert result.code == 2, result.output
            assert expected in result.stderr, result.stderr
            assert WRONG_KEY_PASSWORD not in result.output
    assert sim.requests == []
