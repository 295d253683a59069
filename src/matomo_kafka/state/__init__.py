"""What a run remembers: checkpoint files, the exactly-once state topic, the re-scan's sent log."""
