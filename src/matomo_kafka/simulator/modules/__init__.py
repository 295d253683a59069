"""The Matomo API modules the simulator answers, one file each: `live` (Live), `visits_summary`
(VisitsSummary), `sites_manager` (SitesManager), `custom_dimensions` (CustomDimensions),
`goals` (Goals), `privacy_manager` (PrivacyManager); `params` reads their parameters as Matomo
does. Which method runs which function is decided in one place: ``simulator/api.py``."""
