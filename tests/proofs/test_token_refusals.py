"""Issue 14: who refused, named as such. A gateway's refusal names MATOMO_SPS_USER/MATOMO_SPS_MDP
(and says when they are not set), Matomo's refusal of the token names MATOMO_API_TOKEN, and a
valid token that cannot view one site fails that site alone, naming it. Against the simulator
over real HTTP answering as Matomo 5.0.2 and 4.15.1 do (see tests/fixtures/), through the client
and through `run` and `check`; a refused token or gateway login is sent once, never retried
(repeated bad logins can get the caller's IP blocked)."""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import date
from pathlib import Path
from typing import Any

import pytest

from matomo_kafka.errors import (
    GatewayAuthError,
    MatomoAuthError,
    SiteAccessError,
    TokenRefusedError,
)
from matomo_kafka.model import Cursor
from matomo_kafka.simulator import Fault, MatomoSimulator
from matomo_kafka.source.client import MatomoClient, RetryPolicy
from support.cli import CliResult, clean_env, run_cli
from support.parm import TOKEN
from support.runs import DAYS, LIMIT, RUN_DATE, cursor, expected_keys, parm, topic_counts, two_sites
from support.secrets import GATEWAY, WRONG_GATEWAY_PASSWORD, WRONG_TOKEN  # in its list

pytestmark = [pytest.mark.simulator]

VERSIONS = ["5.0.2", "4.15.1"]
#: Retries a transient failure would get: a refusal must get none of them.
RETRY = RetryPolicy(max_retries=5, backoff=0.01, max_wait=0.05)

TOKEN_LINE = (
    "API.getMatomoVersion: token refused by Matomo: MATOMO_API_TOKEN is invalid, expired, or "
    "without view access to any site (Matomo: "
)
#: What each version says, as the line quotes it (5.0.2: from its HTML error page).
MATOMO_SAYS = {
    "5.0.2": "Unable to authenticate with the provided token. It is either invalid or expired.)",
    "4.15.1": "You can't access this resource as it requires view access for at least one "
    "website.)",
}
NOT_VIEWABLE = (
    "MATOMO_API_TOKEN cannot view site 2: give the token view access to it in Matomo, or "
    "remove site 2 from MATOMO_ID_SITE"
)
GATEWAY_NOT_SET = (
    "API.getMatomoVersion: HTTP 401: the gateway asks for credentials and "
    "MATOMO_SPS_USER/MATOMO_SPS_MDP are not set"
)
GATEWAY_REFUSED = (
    "API.getMatomoVersion: HTTP 401 from the gateway: check MATOMO_SPS_USER/MATOMO_SPS_MDP"
)


def client_for(
    sim: MatomoSimulator, token: str = TOKEN, gateway: tuple[str, str] | None = None
) -> MatomoClient:
    return MatomoClient(sim.url, token, gateway_auth=gateway, retry=RETRY)


def methods(sim: MatomoSimulator) -> list[str]:
    return [str(request["method"]) for request in sim.requests]


# ---- the client: which error, which line, one request ---------------------------------------


@pytest.mark.parametrize("version", VERSIONS)
def test_a_refused_token_is_named_and_sent_once(sim_factory: Any, version: str) -> None:
    sim = sim_factory(two_sites(LIMIT), matomo_version=version)
    with client_for(sim, WRONG_TOKEN) as client, pytest.raises(TokenRefusedError) as refused:
        client.version()
    assert str(refused.value) == TOKEN_LINE + MATOMO_SAYS[version]
    assert client.retries_done == 0
    assert methods(sim) == ["API.getMatomoVersion"]


@pytest.mark.parametrize("version", VERSIONS)
def test_the_token_is_refused_by_the_other_run_wide_calls_too(
    sim_factory: Any, version: str
) -> None:
    """MATOMO_ID_SITE=all starts with the list of sites; Matomo 5 refuses any method with a 401.
    (Matomo 4 answers a site's methods with that site's envelope: run and check ask for the
    version first, so the token is named before any site is asked for.)"""
    sim = sim_factory(two_sites(LIMIT), matomo_version=version)
    calls: list[Callable[[MatomoClient], object]] = [lambda c: c.sites_with_view_access()]
    if version == "5.0.2":
        calls += [
            lambda c: c.site(1),
            lambda c: c.goals(1),
            lambda c: c.custom_dimensions(1),
            lambda c: c.visits_page_raw(1, date(2024, 3, 2), LIMIT, 0),
        ]
    with client_for(sim, WRONG_TOKEN) as client:
        for call in calls:
            with pytest.raises(TokenRefusedError, match="MATOMO_API_TOKEN is invalid, expired"):
                call(client)
        assert client.retries_done == 0
    assert len(sim.requests) == len(calls)


@pytest.mark.parametrize("version", VERSIONS)
def test_a_site_the_token_cannot_view_fails_alone(sim_factory: Any, version: str) -> None:
    sim = sim_factory(two_sites(LIMIT), matomo_version=version, denied_sites=[2])
    with client_for(sim) as client:
        assert client.version() == version
        assert client.site(1).timezone == "UTC"
        for call in (
            lambda: client.site(2),
            lambda: client.goals(2),
            lambda: client.visits_page_raw(2, date(2024, 3, 2), LIMIT, 0),
        ):
            with pytest.raises(SiteAccessError) as denied:
                call()
            assert not isinstance(denied.value, MatomoAuthError), "it must not stop the run"
            assert str(denied.value).endswith(f"for site 2: {NOT_VIEWABLE}")
        assert client.retries_done == 0
    assert sum(request["params"].get("idSite") == "2" for request in sim.requests) == 3


@pytest.mark.parametrize("gateway", [None, (GATEWAY[0], WRONG_GATEWAY_PASSWORD)])
def test_a_gateway_challenge_names_its_credentials(
    sim_factory: Any, gateway: tuple[str, str] | None
) -> None:
    """The simulator's gateway answers like Apache's basic auth: 401, WWW-Authenticate."""
    sim = sim_factory(two_sites(LIMIT), basic_auth=GATEWAY)
    with client_for(sim, gateway=gateway) as client, pytest.raises(GatewayAuthError) as refused:
        client.version()
    assert str(refused.value) == (GATEWAY_REFUSED if gateway else GATEWAY_NOT_SET)
    assert client.retries_done == 0
    assert [request["status"] for request in sim.requests] == [401]


@pytest.mark.parametrize("gateway", [None, GATEWAY])
@pytest.mark.parametrize("status", [401, 403])
def test_a_refusal_without_challenge_that_matomo_did_not_write_is_the_gateways(
    sim_factory: Any, gateway: tuple[str, str] | None, status: int
) -> None:
    """An HTML page that is not Matomo's (here the simulator's injected status page)."""
    fault = Fault(kind="status", method="API.getMatomoVersion", status=status, times=-1)
    sim = sim_factory(two_sites(LIMIT), faults=[fault])
    with client_for(sim, gateway=gateway) as client, pytest.raises(GatewayAuthError) as refused:
        client.version()
    asks = "asks for credentials" if status == 401 else "refuses access"
    assert str(refused.value) == (
        f"API.getMatomoVersion: HTTP {status} from the gateway: check "
        "MATOMO_SPS_USER/MATOMO_SPS_MDP"
        if gateway
        else f"API.getMatomoVersion: HTTP {status}: the gateway {asks} and "
        "MATOMO_SPS_USER/MATOMO_SPS_MDP are not set"
    )
    assert client.retries_done == 0 and len(sim.requests) == 1


# ---- run and check --------------------------------------------------------------------------


def error_lines(result: CliResult) -> list[str]:
    return [line for line in result.stderr.splitlines() if line.startswith("matomo-kafka: error")]


def checkpoints(tmp_path: Path) -> dict[str, bytes]:
    data = tmp_path / "data"
    return {path.name: path.read_bytes() for path in sorted(data.iterdir())
            if path.suffix != ".lock"}  # fmt: skip


def check_rows(result: CliResult) -> dict[str, str]:
    """`check`'s table rows by check name (COLUMNS wide enough for one line each)."""
    rows = {}
    for line in result.stdout.splitlines():
        cells = [cell.strip() for cell in line.strip("│┃ ").split("│")]
        if len(cells) == 3 and cells[1] in ("ok", "FAIL", "disabled"):
            rows[cells[0]] = f"{cells[1]} {cells[2]}"
    return rows


def assert_refused_at_once(
    tmp_path: Path, sim: MatomoSimulator, topic: str, line: str, kind: str, **overrides: str
) -> None:
    """`run` and `check`: one line naming the key to fix, exit 1, one request, nothing sent,
    checkpoints untouched; the summary (and metrics) name the kind of error."""
    directory = parm(tmp_path, sim, topic, MATOMO_MAX_RETRIES="5", **overrides)
    data = tmp_path / "data"
    data.mkdir()
    (data / "filterdate1.txt").write_text("2024-03-03\n")
    (data / "last_filter_offset1.txt").write_text("5\n")
    before = checkpoints(tmp_path)

    summary = tmp_path / "summary.json"
    result = run_cli("run", "--parm-dir", str(directory), "--run-date", RUN_DATE,
                     "--summary-file", str(summary))  # fmt: skip
    assert result.code == 1, result.output
    assert error_lines(result) == [f"matomo-kafka: error: {line}"], result.stderr
    report = json.loads(summary.read_text())
    assert (report["error"], report["error_kind"], report["exit_code"]) == (line, kind, 1)
    # No Matomo retry logged ("Matomo: ...; retry 1/5 in ..."; librdkafka may say "retrying").
    assert "; retry " not in result.stderr and "still failing" not in result.stderr
    assert methods(sim) == ["API.getMatomoVersion"], "refused, so asked once"
    assert checkpoints(tmp_path) == before
    assert topic_counts(topic) == {}

    sim.clear_requests()
    check = run_cli("check", "--parm-dir", str(directory), env=clean_env(COLUMNS="1000"))
    assert check.code == 1, check.output
    rows = check_rows(check)
    assert rows["matomo"] == f"FAIL {line}", check.stdout
    assert rows["kafka"].startswith("ok "), check.stdout
    assert not any(name.startswith("site") for name in rows), "no site asked for"
    assert error_lines(check) == ["matomo-kafka: error: 1 check(s) failed"]
    assert methods(sim) == ["API.getMatomoVersion"]
    assert checkpoints(tmp_path) == before
    for secret in (WRONG_TOKEN, WRONG_GATEWAY_PASSWORD, TOKEN):
        assert secret not in result.output + check.output


@pytest.mark.kafka
@pytest.mark.parametrize("version", VERSIONS)
def test_run_and_check_name_a_refused_token(
    tmp_path: Path, topic: str, sim_factory: Any, version: str
) -> None:
    sim = sim_factory(two_sites(LIMIT), matomo_version=version)
    line = TOKEN_LINE + MATOMO_SAYS[version]
    assert_refused_at_once(
        tmp_path, sim, topic, line, "TokenRefusedError", MATOMO_API_TOKEN=WRONG_TOKEN
    )


@pytest.mark.kafka
@pytest.mark.parametrize("configured", [False, True])
def test_run_and_check_name_the_gateway_credentials(
    tmp_path: Path, topic: str, sim_factory: Any, configured: bool
) -> None:
    sim = sim_factory(two_sites(LIMIT), basic_auth=GATEWAY)
    if configured:
        credentials = {"MATOMO_SPS_USER": GATEWAY[0], "MATOMO_SPS_MDP": WRONG_GATEWAY_PASSWORD}
        assert_refused_at_once(
            tmp_path, sim, topic, GATEWAY_REFUSED, "GatewayAuthError", **credentials
        )
    else:
        assert_refused_at_once(tmp_path, sim, topic, GATEWAY_NOT_SET, "GatewayAuthError")


@pytest.mark.kafka
@pytest.mark.parametrize("version", VERSIONS)
def test_run_and_check_with_a_site_the_token_cannot_view(
    tmp_path: Path, topic: str, sim_factory: Any, version: str
) -> None:
    """Site 2 fails alone, named, never asked about; site 1 is delivered and checkpointed."""
    sim = sim_factory(two_sites(LIMIT), matomo_version=version, denied_sites=[2])
    directory = parm(tmp_path, sim, topic, MATOMO_MAX_RETRIES="5")
    result = run_cli("run", "--parm-dir", str(directory), "--run-date", RUN_DATE)
    assert result.code == 1, result.output
    site_lines = [line for line in result.stderr.splitlines()
                  if line.startswith("matomo-kafka: site")]  # fmt: skip
    assert len(site_lines) == 1, result.stderr
    assert site_lines[0].startswith("matomo-kafka: site 2: ")
    assert f"site 2: {NOT_VIEWABLE} (Matomo lists no such site" in site_lines[0]
    assert error_lines(result) == ["matomo-kafka: error: 1 of 2 site(s) failed"]
    # Matomo's list of the sites the token can view says it: site 2 is never asked about.
    asked = [
        r
        for r in sim.requests
        if "2" in (r["params"].get("idSite"), r["params"].get("idSites"))
        or any(v.endswith("idSite=2") or "idSite=2&" in v for v in r["params"].values())
    ]
    assert asked == [], asked
    counts = topic_counts(topic)
    assert set(counts) == expected_keys(sim, (1,), DAYS) and max(counts.values()) == 1
    assert cursor(tmp_path, 1) == Cursor(date(2024, 3, 6), 0)
    assert cursor(tmp_path, 2) is None

    check = run_cli("check", "--parm-dir", str(directory), env=clean_env(COLUMNS="1000"))
    assert check.code == 1, check.output
    rows = check_rows(check)
    assert rows["matomo"] == f"ok Matomo {version} at {sim.url}"
    assert rows["site 1"].startswith("ok 'UTC site', UTC"), check.stdout
    # The same line as run's (issue 28): Matomo's list says it, site 2 is not asked about.
    assert rows["site 2"] == f"FAIL {NOT_VIEWABLE} (Matomo lists no such site in " \
        "SitesManager.getSitesWithAtLeastViewAccess)"  # fmt: skip
    assert error_lines(check) == ["matomo-kafka: error: 1 check(s) failed"]
