"""Operating runs: audit, reset, run summary, metrics, progress display, logging and redaction."""
