"""Reading Matomo: the HTTP client, the page scheduler, paging by day, days and site lists."""
