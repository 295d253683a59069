"""Pages whose size follows the size of their visits (PageSizes): heavy visits come in
smaller pages and light ones in full pages again, the run's first page is a small probe,
and every visit is read once with offsets that keep their meaning (visits of the day sent),
whatever the sizes asked for, the ties and the resumes."""

from __future__ import annotations

import random
import threading
from datetime import date, timedelta

from hypothesis import given, settings
from hypothesis import strategies as st

from matomo_kafka.model import Cursor
from matomo_kafka.source.paging import Batch, Pager, PageSizes, Request
from matomo_kafka.source.schedule import PageScheduler, drive

WAIT = 10.0  # seconds a test waits for something that must happen at once, before failing
FIRST = date(2024, 3, 1)


def test_page_sizes_between_the_floor_and_the_limit() -> None:
    sizes = PageSizes(limit=1000, target=8_000_000, floor=50)
    assert sizes.limit_for(None) == 50  # unknown: the probe
    assert sizes.limit_for(3_400) == 1000  # light visits: the configured limit
    assert sizes.limit_for(48_000) == 166
    assert sizes.limit_for(230_000) == 50  # never below the floor
    assert PageSizes(limit=20, target=8_000_000, floor=50).limit_for(None) == 20


class WeightedDays:
    """Visits as (last action second, idVisit, bytes); each request orders visits of the same
    second at random (as MySQL may) and answers with the bytes of the visits it holds."""

    def __init__(self, days: dict[date, list[tuple[int, int, int]]], seed: int = 0) -> None:
        self.days = days
        self.random = random.Random(seed)
        self.lock = threading.Lock()
        self.requests: list[Request] = []

    def fetch(self, request: Request) -> Batch[int]:
        with self.lock:
            self.requests.append(request)
            visits = [
                (stamp, self.random.random(), idvisit, size)
                for stamp, idvisit, size in self.days.get(request.day, [])
                if request.after is None or stamp > request.after
            ]
        visits.sort()
        chosen = visits[request.offset : request.offset + request.limit]
        ids = [idvisit for _, _, idvisit, _ in chosen]
        size = sum(size for *_, size in chosen)
        return Batch(ids, ids, [stamp for stamp, *_ in chosen], size)


def spread(d: int, sizes: list[int]) -> list[tuple[int, int, int]]:
    """Day d's visits, one a second, of the given sizes."""
    second = 1_700_000_000 + d * 86_400
    return [(second + i, (d << 20) | i, size) for i, size in enumerate(sizes)]


def read(
    source: WeightedDays,
    start: Cursor,
    last: date,
    sizes: PageSizes | None,
    lookahead: int = 3,
    keyset: bool = True,
    stop_after: int | None = None,
) -> tuple[list[int], Cursor, list[tuple[date, int, int]]]:
    """The ids read, the checkpoint after the last page, and each page's (day, offset,
    visits)."""
    ids: list[int] = []
    pages: list[tuple[date, int, int]] = []
    cursor = start
    with PageScheduler(slots=4, budget=8) as scheduler:
        pager = Pager(source.fetch, scheduler.submit, start, last, 100, lookahead, keyset,
                      sizes=sizes)  # fmt: skip
        for n, page in enumerate(drive(iter(pager), scheduler)):
            ids.extend(page.items)
            pages.append((page.day, page.offset, len(page.items)))
            cursor = page.checkpoint
            if stop_after is not None and n + 1 >= stop_after:
                break
    return ids, cursor, pages


def test_heavy_visits_come_in_smaller_pages_and_light_ones_in_full_pages_again() -> None:
    """Pages of 100 visits at most, 100,000 bytes a page: light visits (100 bytes) come 100 a
    page; on a day of 10,000-byte visits the requests after its first page ask for 10; the
    next day, light again, goes back to 100. Offsets are the visits of the day sent before
    each page."""
    days = {
        FIRST: spread(0, [100] * 250),
        FIRST + timedelta(days=1): spread(1, [10_000] * 300),
        FIRST + timedelta(days=2): spread(2, [100] * 250),
    }
    source = WeightedDays(days)
    sizes = PageSizes(limit=100, target=100_000, floor=5)
    ids, cursor, pages = read(source, Cursor(FIRST, 0), FIRST + timedelta(days=2), sizes)
    assert sorted(ids) == sorted(i for visits in days.values() for _, i, _ in visits)
    assert cursor == Cursor(FIRST + timedelta(days=3), 0)
    for day in days:
        offsets = [(offset, n) for d, offset, n in pages if d == day]
        assert [offset for offset, _ in offsets] == [sum(n for _, n in offsets[:k])
                                                     for k in range(len(offsets))]  # fmt: skip
    # Once a heavy page was measured, no request of the heavy day asks for more than 10.
    heavy = [r for r in source.requests if r.day == FIRST + timedelta(days=1) and r.offset >= 100]
    assert len(heavy) >= 20 and {r.limit for r in heavy} == {10}
    light_again = [r.limit for r in source.requests if r.day == FIRST + timedelta(days=2)]
    assert light_again[-1] == 100


def test_pages_grow_back_when_visits_of_the_same_day_get_light() -> None:
    days = {FIRST: spread(0, [10_000] * 40 + [100] * 400)}
    source = WeightedDays(days)
    sizes = PageSizes(limit=100, target=100_000, floor=5)
    ids, _, _ = read(source, Cursor(FIRST, 0), FIRST, sizes, lookahead=1)
    assert sorted(ids) == [i for _, i, _ in days[FIRST]]
    limits = [r.limit for r in source.requests]
    assert limits[0] == 5  # the probe: nothing measured yet
    assert 10 in limits and limits[-1] == 100


def test_without_page_sizes_every_page_asks_for_the_limit() -> None:
    days = {FIRST: spread(0, [10_000] * 250)}
    source = WeightedDays(days)
    read(source, Cursor(FIRST, 0), FIRST, None)
    assert {r.limit for r in source.requests} == {100}


def test_the_first_page_of_a_run_is_a_probe_the_other_sites_wait_for() -> None:
    """Before any visit was measured a page of 100 could be 100 heavy visits: the first site
    asks for `floor` visits, the second asks for nothing until that answer is in."""
    one = WeightedDays({FIRST: spread(0, [10_000] * 30)})
    two = WeightedDays({FIRST: spread(1, [10_000] * 30)})
    release = threading.Event()

    def slow(request: Request) -> Batch[int]:
        assert release.wait(WAIT)
        return one.fetch(request)

    sizes = PageSizes(limit=100, target=100_000, floor=5)
    with PageScheduler(slots=4, budget=8) as scheduler:
        first = iter(Pager(slow, scheduler.submit, Cursor(FIRST, 0), FIRST, 100, 3, sizes=sizes))
        second = iter(Pager(two.fetch, scheduler.submit, Cursor(FIRST, 0), FIRST, 100, 3,
                            sizes=sizes))  # fmt: skip
        assert next(first) is None and next(second) is None
        for _ in range(20):
            assert next(second) is None
            scheduler.wait(0.005)
        assert two.requests == []  # waits for the probe's answer
        release.set()
        got = [page for page in drive(first, scheduler)]
        assert sum(len(page.items) for page in got) == 30
        assert one.requests[0].limit == 5
        rest = [page for page in drive(second, scheduler)]
        assert sum(len(page.items) for page in rest) == 30
        assert {r.limit for r in two.requests} == {10}  # measured: 10 visits fill a page


def test_a_probing_site_that_ends_lets_another_one_probe() -> None:
    sizes = PageSizes(limit=100, target=100_000, floor=5)
    assert sizes.may_ask("one") and not sizes.may_ask("two")
    sizes.release("one")
    assert sizes.may_ask("two")


size_lists = st.lists(
    st.lists(st.tuples(st.integers(0, 6), st.sampled_from([100, 3_000, 40_000])), max_size=40),
    min_size=1,
    max_size=3,
)


@settings(max_examples=120, deadline=None)
@given(days_spec=size_lists, keyset=st.booleans(), lookahead=st.integers(1, 3),
       seed=st.integers(0, 2**32), stops=st.lists(st.integers(1, 4), max_size=4))  # fmt: skip
def test_every_visit_once_whatever_the_page_sizes_ties_and_resumes(
    days_spec: list[list[tuple[int, int]]],
    keyset: bool,
    lookahead: int,
    seed: int,
    stops: list[int],
) -> None:
    """Visits of mixed sizes (pages of 2 to 100 visits), several visits a second in random
    order (keyset; offset paging has stable ties here), stopped and resumed from each
    checkpoint, with the page sizes learnt afresh on each resume: every visit exactly once."""
    days: dict[date, list[tuple[int, int, int]]] = {}
    for d, visits in enumerate(days_spec):
        second = 1_700_000_000 + d * 86_400
        stamp, out = second, []
        for i, (gap, size) in enumerate(visits):
            stamp += gap // 3  # 0: the same second as the visit before
            out.append((stamp, (d << 20) | i, size))
        days[FIRST + timedelta(days=d)] = out
    source = WeightedDays(days, seed if keyset else 0)
    if not keyset:
        source.random = _Stable()
    last = FIRST + timedelta(days=len(days) - 1)
    got: list[int] = []
    cursor = Cursor(FIRST, 0)
    for stop in [*stops, None]:
        sizes = PageSizes(limit=100, target=100_000, floor=2)
        ids, cursor, _ = read(source, cursor, last, sizes, lookahead, keyset, stop)
        got.extend(ids)
        if cursor.day > last:
            break
    assert sorted(got) == sorted(i for visits in days.values() for _, i, _ in visits)


class _Stable(random.Random):
    """Ties in one fixed order (offset paging trusts the order)."""

    def random(self) -> float:
        return 0.0


def test_a_queued_request_of_the_old_size_is_asked_for_again() -> None:
    """Read-ahead asked for at the light size, then a heavy page comes: the queued requests
    are asked for again smaller (those running are kept and continued from)."""
    days = {FIRST: spread(0, [100] * 300 + [10_000] * 200)}
    source = WeightedDays(days)
    sizes = PageSizes(limit=100, target=100_000, floor=5)
    sizes.learn(100.0)
    ids, _, _ = read(source, Cursor(FIRST, 0), FIRST, sizes, lookahead=4)
    assert sorted(ids) == [i for _, i, _ in days[FIRST]]
    assert any(r.limit == 10 for r in source.requests)


def test_no_probe_when_the_limit_is_already_the_floor() -> None:
    sizes = PageSizes(limit=20, target=100_000, floor=50)
    assert not sizes.unknown
    assert sizes.may_ask("one") and sizes.may_ask("two")


def test_a_probe_that_finds_no_visit_holds_nobody_back() -> None:
    """The first site's first day is empty: the other site asks at once after that answer,
    not after every empty day of the first site; pages of unknown size ask for the floor."""
    empty = WeightedDays({FIRST + timedelta(days=d): [] for d in range(5)})
    other = WeightedDays({FIRST: spread(1, [100] * 30)})
    sizes = PageSizes(limit=100, target=100_000, floor=5)
    last = FIRST + timedelta(days=4)
    with PageScheduler(slots=4, budget=8) as scheduler:
        first = iter(Pager(empty.fetch, scheduler.submit, Cursor(FIRST, 0), last, 100, 3,
                           sizes=sizes))  # fmt: skip
        second = iter(Pager(other.fetch, scheduler.submit, Cursor(FIRST, 0), FIRST, 100, 3,
                            sizes=sizes))  # fmt: skip
        assert next(first) is None and next(second) is None
        assert other.requests == []
        page = next(p for p in first if p is not None)  # the empty first day's last page
        assert page.items == [] and page.last
        got = []
        for _ in range(2000):  # bounded: without the fix the second site waits for ever
            step = next(second, None)
            if step is not None:
                got.append(step)
            if got and got[-1].last:
                break
            scheduler.wait(0.005)
        assert sum(len(p.items) for p in got) == 30
        assert len(empty.requests) <= 2  # the other site did not wait for all 5 empty days
        assert other.requests[0].limit == 5  # nothing measured yet: the floor
