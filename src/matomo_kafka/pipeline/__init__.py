"""The run loop, in Kafka Connect's order: read pages, transform them, deliver them, and only
once Kafka has acknowledged a page, move its site's checkpoint past it. This package's face is
what `run`, `follow` and `check` use: Pipeline, Horizon, RunObserver, NullObserver,
not_viewable.

Per site (site.py): read its timezone, custom dimensions and goals; then for each closed day
from its checkpoint (or START_DATE) read Live.getLastVisitsDetails page by page (ascending
last action time, `filter_limit` visits a page, keyset-checked boundaries: source/paging.py)
until a short page; then, with MATOMO_RESCAN_DAYS, re-read the days before the start and
re-send what is new or changed (rescan.py, state/sent_log.py), and send a tombstone for each
visit sent for a day that Matomo's fresh listing of the day no longer holds (erased in
Matomo); at most MATOMO_MAX_ERASE a run, and never for a day Matomo now lists empty (its
retention purge). A site that Matomo refuses fails alone; a Kafka, checkpoint or token
failure stops the run, since every other site would hit it too.

Fetching runs ahead, delivery runs in order. One page scheduler (source/schedule.py) keeps up
to MATOMO_MAX_CONCURRENCY Matomo requests in flight for the whole run, taking the most useful
next request of any site; pages are transformed on its parse thread. One loop (loop.py's
`Pipeline._loop`) takes each site's pages strictly in order and hands them over to the
delivery (sink/delivery.py: at-least-once, or exactly-once with the checkpoint in the same
Kafka transaction), which writes the checkpoint files of what Kafka acknowledged, each site's
in order; what was delivered is counted (counting.py). At most MATOMO_MAX_CONCURRENCY pages are
handed over and not yet checkpointed, in all: a kill re-sends at most that. What is fetched and
not yet delivered stays under MATOMO_MAX_BUFFER_MB, and a page asks for as many visits as fill
an eighth of it (source/paging.py's PageSizes), so heavy visits (hundreds of actions) keep the
footprint of light ones.

Up to a horizon (`follow`, one cycle): the closed days are those that ended by the horizon
(visits whose last action is older than MATOMO_VISIT_LENGTH + MATOMO_SETTLE_MINUTES), read as
above; then the day the horizon falls in is read up to it and stays open in the checkpoint
(source/paging.py). A re-scan window is re-read once per site and start day, not every cycle.
"""

from matomo_kafka.pipeline.counting import NullObserver, RunObserver
from matomo_kafka.pipeline.loop import Pipeline
from matomo_kafka.pipeline.site import Horizon, not_viewable

__all__ = ["Horizon", "NullObserver", "Pipeline", "RunObserver", "not_viewable"]
