"""Deterministic visits in Matomo 5.0.2's shapes: visit i of a (site, day) is a pure function of
(seed, idsite, day, i, n), so any page costs only itself. One module per part of a visit:
`plan` (the deterministic random source: a day's bounds and each visit's hash), `visit` (the
record, in Matomo's field order), `visitor` (who visits), `actions` (page views, events, site
searches, outlinks, downloads, goal conversions), `referrers`, `devices`, `locations`,
`catalogue` (the pages, events, goals and currencies visits pick from), `dates` (Matomo's
date and time strings), `grown` (a visit given one more page view), `hazards` (late visits,
shuffled ties) and `php_json` (PHP's json_encode)."""
