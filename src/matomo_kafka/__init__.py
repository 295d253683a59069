"""matomo-kafka: moves raw Matomo visit logs into Kafka, resumable and pseudonymised."""

__version__ = "0.1.0"
