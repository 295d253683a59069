"""Kafka: the producer and the delivery protocol (at-least-once, exactly-once)."""
