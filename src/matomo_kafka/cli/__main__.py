"""`python -m matomo_kafka.cli`: the same commands as `matomo-kafka`."""

from matomo_kafka.cli import main

main()
