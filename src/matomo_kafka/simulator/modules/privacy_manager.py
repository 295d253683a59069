"""PrivacyManager for the simulator: GDPR erasure, raw-data anonymisation and the purge of old
raw data, so that tests can make Matomo forget or change visits the tool already sent.

What it reproduces, read from matomo-org/matomo 4.15.1 and 5.0.2 (plugins/PrivacyManager: the
same code in both for what is here):

- ``PrivacyManager.deleteDataSubjects`` (``visits[0][idsite]=1&visits[0][idvisit]=7``;
  API.php, Validators/VisitsDataSubject.php, Model/DataSubjects.php): deletes the visits at
  once and answers the rows deleted per log table, ``log_visit``, ``log_link_visit_action``
  (the visit's actions), ``log_conversion_item`` (always 0 here: no ecommerce),
  ``log_conversion`` (its goal conversions), in that order (Matomo's krsort). A visit already
  deleted, or never there, counts 0, still HTTP 200. A visit without idsite or idvisit: the
  validator's HTTP 200 error envelope. Erased visits leave Live and VisitsSummary (Matomo
  invalidates the archives of their days).
- ``PrivacyManager.anonymizeSomeRawData`` (``idSites``, ``date`` as ``YYYY-MM-DD`` or
  ``YYYY-MM-DD,YYYY-MM-DD``, ``anonymizeIp``, ``anonymizeLocation``, ``anonymizeUserId``,
  ``passwordConfirmation``; Model/LogDataAnonymizations.php, Dao/LogDataAnonymizer.php): the
  visits whose last action falls in the dates, read in UTC as Matomo does, are changed as
  Matomo's scheduled task changes them: the IP masked by 2 bytes (Matomo's minimum: IPv4
  a.b.0.0, IPv6 its first 48 bits), the location removed (continent, country, region, city,
  latitude, longitude as for a visit that cannot be located: Matomo geolocates the masked IP
  again, which finds nothing with a database-less provider), the user id replaced by
  sha1(userId + salt) (RequestProcessor::anonymizeUserId). Real Matomo only schedules the
  change and answers ``{"result":"success","message":"ok"}``; its scheduled task rewrites the
  visits later. The simulator answers the same but applies the change **at once**: a test
  sees what Matomo shows once its task ran. Without ``passwordConfirmation``: Matomo's HTTP
  200 error envelope; a wrong one: "The current password you entered is not correct.";
  nothing selected: "Nothing is selected to be anonymized". ``unsetVisitColumns`` and
  ``unsetLinkVisitActionColumns`` are not simulated (an error envelope says so).
- The raw-data purge ("delete old raw data": ``PrivacyManager.setDeleteLogsSettings`` with
  ``enableDeleteLogs=1&deleteLogsOlderThan=N`` answers ``{"value":true}``, then
  ``PrivacyManager.executeDataPurge`` answers ``{"result":"success","message":"ok"}``;
  LogDataPurger.php): every visit whose last action is before midnight UTC of today minus N
  days (today by the simulator's clock, or the system's) is deleted. Live then lists those days
  empty, while VisitsSummary keeps their counts: Matomo keeps the reports it archived. Real
  Matomo also runs the purge daily by itself once enabled; the simulator purges only when
  asked (executeDataPurge, or ``MatomoSimulator.purge_raw_data_older_than``).

The password the simulator expects is ``PrivacyManager.password`` (SIM_PASSWORD unless a test
changes it). Everything is deterministic: the salt of anonymised user ids derives from the
simulator's seed.
"""

from __future__ import annotations

import hashlib
import ipaddress
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import TYPE_CHECKING

from matomo_kafka.simulator.config import _EPOCH_2000, _MAX_DAYS, JSON, MSG_BAD_DATE
from matomo_kafka.simulator.server import _error, _json_reply, _Reply
from matomo_kafka.simulator.visits.grown import _render
from matomo_kafka.simulator.visits.locations import _GEO_UNKNOWN
from matomo_kafka.simulator.visits.plan import _DayPlan

if TYPE_CHECKING:
    from matomo_kafka.simulator.matomo import MatomoSimulator

#: The password the simulator's PrivacyManager expects in passwordConfirmation.
SIM_PASSWORD = "demo-password"
#: The rows Matomo reports deleted, in its order (DataSubjects::deleteDataSubjects krsorts).
LOG_TABLES = ("log_visit", "log_link_visit_action", "log_conversion_item", "log_conversion")
MSG_CONFIRM_PASSWORD = "Please enter your password to confirm this change."
MSG_WRONG_PASSWORD = "The current password you entered is not correct."
MSG_NOTHING_SELECTED = "Nothing is selected to be anonymized"
MSG_NO_VISITS = "visits: No list of visits given"
MSG_VISIT_KEY = "visits: No {} key set for visit at index {}"
MSG_EMPTY_DATE = "date: A value needs to be provided."
MSG_UNSET_COLUMNS = "This Matomo simulator does not unset columns (unsetVisitColumns)."
#: Matomo's minimum IP mask for anonymised raw data (Dao/LogDataAnonymizer.php): 2 bytes.
IP_MASK_BYTES = 2
_VISIT_KEY = re.compile(r"visits\[(\d+)\]\[(\w+)\]")


@dataclass(frozen=True)
class Anonymisation:
    """What anonymizeSomeRawData changed in one visit."""

    ip: bool
    location: bool
    user_id: bool

    def merged(self, other: Anonymisation) -> Anonymisation:
        return Anonymisation(
            self.ip or other.ip, self.location or other.location, self.user_id or other.user_id
        )


def masked_ip(ip: str, mask_bytes: int = IP_MASK_BYTES) -> str:
    """The IP as Matomo's IP::anonymize(mask_bytes) leaves it: IPv4 without its last bytes,
    IPv6 keeping 64, 48 or 16 bits for 1, 2 or 3 bytes."""
    address = ipaddress.ip_address(ip)
    if address.version == 4:
        keep = 32 - 8 * mask_bytes
    else:
        keep = {0: 128, 1: 64, 2: 48, 3: 16}[mask_bytes]
    network = ipaddress.ip_network(f"{address}/{keep}", strict=False)
    return str(network.network_address)


def anonymised_user_id(user_id: str, salt: str) -> str:
    """RequestProcessor::anonymizeUserId: sha1(userId . salt), hex."""
    return hashlib.sha1((user_id + salt).encode("utf-8")).hexdigest()


def anonymise(visit: JSON, change: Anonymisation, salt: str) -> JSON:
    """The visit as Live shows it after LogDataAnonymizer changed its log_visit row."""
    if change.ip and visit.get("visitIp"):
        visit["visitIp"] = masked_ip(visit["visitIp"])
    if change.location:
        visit.update(_GEO_UNKNOWN)
    if change.user_id and visit.get("userId"):
        visit["userId"] = anonymised_user_id(visit["userId"], salt)
    return visit


def render_visits(
    plan: _DayPlan,
    indices: Sequence[int],
    seed: int,
    grown: dict[int, int] | None,
    anonymised: Mapping[int, Anonymisation] | None,
) -> list[JSON]:
    """The visits as Live serves them: generated (grown where grown), then anonymised."""
    visits = _render(plan, indices, seed, grown)
    if anonymised:
        salt = user_id_salt(seed)
        for i, visit in zip(indices, visits, strict=True):
            change = anonymised.get(i)
            if change is not None:
                anonymise(visit, change, salt)
    return visits


def user_id_salt(seed: int) -> str:
    """The simulator's user id salt (Matomo draws one at install): fixed by the seed."""
    return hashlib.sha256(b"userid-salt" + seed.to_bytes(8, "little", signed=True)).hexdigest()


def visit_place(id_visit: int) -> tuple[date, int, int] | None:
    """(day, idsite, index) of a simulated idVisit ((days since 2000 << 35) | (idsite << 24) |
    index), or None for an id the simulator cannot have made."""
    if id_visit <= 0:
        return None
    days, idsite, index = id_visit >> 35, (id_visit >> 24) & 0x7FF, id_visit & 0xFFFFFF
    if days >= _MAX_DAYS:
        return None
    return _EPOCH_2000 + timedelta(days=days), idsite, index


def _flag(params: Mapping[str, str], name: str) -> bool:
    return params.get(name, "").strip().lower() in ("1", "true")


class PrivacyManager:
    """One simulator's erased, anonymised and purged visits, and its PrivacyManager API.

    State is read by days.day_state (under the simulator's lock) to hide, change
    or keep visits; every change here bumps the simulator's version so no stale day is served.
    """

    def __init__(self, simulator: MatomoSimulator) -> None:
        self._sim = simulator
        self.password = SIM_PASSWORD
        #: (idsite, day) -> indices of the erased visits.
        self.erased: dict[tuple[int, date], frozenset[int]] = {}
        #: (idsite, day) -> index -> what was anonymised.
        self.anonymised: dict[tuple[int, date], dict[int, Anonymisation]] = {}
        #: Visits whose last action is before this (Unix seconds) were purged; None: none.
        self.purged_before: int | None = None
        #: setDeleteLogsSettings: (enabled, older than N days).
        self.delete_logs: tuple[bool, int] = (False, 180)

    # ---- what the simulator's days read ----------------------------------------------------
    def touches(self, key: tuple[int, date], plan: _DayPlan) -> bool:
        """Whether erasure, anonymisation or the purge changed anything of this day."""
        cut = self.purged_before
        return (
            key in self.erased
            or key in self.anonymised
            or (cut is not None and plan.n > 0 and plan.start < cut)
        )

    # ---- the operations (also MatomoSimulator's methods) ---------------------------------
    def delete_visits(self, visits: Iterable[tuple[int, int]]) -> dict[str, int]:
        """Erases visits given as (idsite, idVisit) now; the rows deleted per log table."""
        sim = self._sim
        counts = dict.fromkeys(LOG_TABLES, 0)
        erased: dict[tuple[int, date], set[int]] = {}
        for idsite, id_visit in visits:
            place = visit_place(id_visit)
            if place is None or place[1] != idsite or idsite not in sim._sites:
                continue
            day, _, index = place
            key = (idsite, day)
            plan = sim._plan(idsite, day)
            if index >= plan.n or index in erased.get(key, ()) or not self._exists(key, index):
                continue
            visit = sim.visit(idsite, day, index)
            if self._purged(visit):
                continue
            goals = sum(1 for entry in visit["actionDetails"] if entry["type"] == "goal")
            counts["log_visit"] += 1
            counts["log_link_visit_action"] += len(visit["actionDetails"]) - goals
            counts["log_conversion"] += goals
            erased.setdefault(key, set()).add(index)
        with sim._lock:
            for key, indices in erased.items():
                self.erased[key] = self.erased.get(key, frozenset()) | indices
                sim._states.pop(key, None)
            sim._version += 1
        return counts

    def anonymize_raw_data(
        self,
        idsites: Sequence[int] | None,
        start: date,
        end: date,
        ip: bool = False,
        location: bool = False,
        user_id: bool = False,
    ) -> int:
        """Anonymises now the visits of the sites (None: all) whose last action is in
        [start 00:00:00, end 23:59:59] UTC; returns how many visits it changed."""
        sim = self._sim
        change = Anonymisation(ip, location, user_id)
        lo = int(datetime(start.year, start.month, start.day, tzinfo=UTC).timestamp())
        hi = int(datetime(end.year, end.month, end.day, tzinfo=UTC).timestamp()) + 86_399
        sites = sorted(sim._sites) if idsites is None else [i for i in idsites if i in sim._sites]
        changed: dict[tuple[int, date], dict[int, Anonymisation]] = {}
        for idsite in sites:
            # Site-local days that may hold a last action in the UTC range: one either side.
            day = start - timedelta(days=1)
            while day <= end + timedelta(days=1):
                key = (idsite, day)
                plan = sim._plan(idsite, day)
                for index in range(plan.n):
                    stamp = self._last_action(key, plan, index)
                    if (
                        lo <= stamp <= hi
                        and self._exists(key, index)
                        and stamp >= (self.purged_before or 0)
                    ):
                        changed.setdefault(key, {})[index] = change
                day += timedelta(days=1)
        with sim._lock:
            for key, updates in changed.items():
                day_changes = dict(self.anonymised.get(key, {}))
                for index, update in updates.items():
                    old = day_changes.get(index)
                    day_changes[index] = update if old is None else old.merged(update)
                self.anonymised[key] = day_changes
                sim._states.pop(key, None)
            sim._version += 1
        return sum(len(updates) for updates in changed.values())

    def purge_raw_data_older_than(self, days: int, now: float | None = None) -> int:
        """Deletes every visit whose last action is before midnight UTC of today minus
        `days` (LogDataPurger::purgeData; today by `now`, the simulator's clock or the
        system's). Returns the purge line (Unix seconds)."""
        if days < 1:
            raise ValueError(f"days must be >= 1 (Matomo's minimum), got {days}")
        sim = self._sim
        clock = now if now is not None else sim.now
        today = datetime.fromtimestamp(
            clock if clock is not None else datetime.now(UTC).timestamp(), UTC
        ).date()
        limit = today - timedelta(days=days)
        cut = int(datetime(limit.year, limit.month, limit.day, tzinfo=UTC).timestamp())
        with sim._lock:
            self.purged_before = max(cut, self.purged_before or cut)
            sim._states.clear()
            sim._version += 1
        return self.purged_before

    def _exists(self, key: tuple[int, date], index: int) -> bool:
        return index not in self.erased.get(key, ())

    def _purged(self, visit: JSON) -> bool:
        cut = self.purged_before
        return cut is not None and int(visit["lastActionTimestamp"]) < cut

    def _last_action(self, key: tuple[int, date], plan: _DayPlan, index: int) -> int:
        grown = self._sim._grown.get(key, {})
        return grown.get(index, plan.last_ts(index))

    # ---- the HTTP API ---------------------------------------------------------------------
    def methods(self) -> dict[str, Callable[[dict[str, str]], _Reply]]:
        return {
            "PrivacyManager.deleteDataSubjects": self._delete_data_subjects,
            "PrivacyManager.anonymizeSomeRawData": self._anonymize_some_raw_data,
            "PrivacyManager.setDeleteLogsSettings": self._set_delete_logs_settings,
            "PrivacyManager.executeDataPurge": self._execute_data_purge,
        }

    def _password_refused(self, params: Mapping[str, str]) -> _Reply | None:
        given = params.get("passwordConfirmation", "")
        if not given:
            return _error(MSG_CONFIRM_PASSWORD)
        if given != self.password:
            return _error(MSG_WRONG_PASSWORD)
        return None

    def _delete_data_subjects(self, params: dict[str, str]) -> _Reply:
        entries: dict[int, dict[str, str]] = {}
        for name, value in params.items():
            found = _VISIT_KEY.fullmatch(name)
            if found:
                entries.setdefault(int(found.group(1)), {})[found.group(2)] = value
        if not entries:
            return _error(MSG_NO_VISITS)
        visits: list[tuple[int, int]] = []
        for index in sorted(entries):
            entry = entries[index]
            for key in ("idsite", "idvisit"):
                if entry.get(key, "") in ("", "0"):
                    return _error(MSG_VISIT_KEY.format(key, index))
            try:
                visits.append((int(entry["idsite"]), int(entry["idvisit"])))
            except ValueError:
                visits.append((0, 0))  # Matomo matches no row for a non-number
        return _json_reply(self.delete_visits(visits))

    def _anonymize_some_raw_data(self, params: dict[str, str]) -> _Reply:
        refused = self._password_refused(params)
        if refused is not None:
            return refused
        raw_sites = params.get("idSites", "all").strip()
        idsites: list[int] | None = None
        if raw_sites not in ("", "all"):
            try:
                idsites = [int(part) for part in raw_sites.split(",") if part.strip()]
            except ValueError:
                return _error(f"The website id '{raw_sites}' is not valid.")
        raw_date = params.get("date", "").strip()
        if not raw_date:
            return _error(MSG_EMPTY_DATE)
        try:
            parts = [date.fromisoformat(part.strip()) for part in raw_date.split(",")]
        except ValueError:
            return _error(MSG_BAD_DATE)
        if len(parts) > 2:
            return _error(MSG_BAD_DATE)
        if any(k.startswith(("unsetVisitColumns", "unsetLinkVisitActionColumns")) for k in params):
            return _error(MSG_UNSET_COLUMNS)
        ip, location, user_id = (
            _flag(params, "anonymizeIp"),
            _flag(params, "anonymizeLocation"),
            _flag(params, "anonymizeUserId"),
        )
        if not (ip or location or user_id):
            return _error(MSG_NOTHING_SELECTED)
        self.anonymize_raw_data(idsites, parts[0], parts[-1], ip, location, user_id)
        return _json_reply({"result": "success", "message": "ok"})

    def _set_delete_logs_settings(self, params: dict[str, str]) -> _Reply:
        refused = self._password_refused(params)
        if refused is not None:
            return refused
        try:
            older_than = int(params.get("deleteLogsOlderThan", "180") or "0")
        except ValueError:
            older_than = 0  # PHP's (int) of a word
        enabled = params.get("enableDeleteLogs", "0") not in ("", "0")
        self.delete_logs = (enabled, max(1, older_than))
        return _json_reply({"value": True})

    def _execute_data_purge(self, params: dict[str, str]) -> _Reply:
        refused = self._password_refused(params)
        if refused is not None:
            return refused
        enabled, older_than = self.delete_logs
        if enabled:
            self.purge_raw_data_older_than(older_than)
        return _json_reply({"result": "success", "message": "ok"})


def split_purged(
    pairs: Sequence[tuple[int, int]], purged_before: int | None
) -> tuple[list[tuple[int, int]], list[int]]:
    """(last action, index) pairs in Live's order -> (those Live still lists, the indices
    VisitsSummary still counts: all of them, as Matomo keeps its archived reports)."""
    if purged_before is None:
        return list(pairs), []
    kept = [(t, i) for t, i in pairs if t >= purged_before]
    return kept, [i for _, i in pairs]
