#!/usr/bin/env bash
# Installs everything and runs the whole test suite: ruff, mypy, then pytest against the real
# local Kafka broker (started here, stopped at the end if this script started it) and the
# Matomo simulator over real HTTP. Debian's prometheus, prometheus-node-exporter and
# prometheus-pushgateway packages are installed with apt-get when missing (promtool tests the
# alert rules; a real Prometheus evaluates them): root or passwordless sudo needed then.
# Extra arguments go to pytest.
set -euo pipefail
repo=$(cd -- "$(dirname -- "${BASH_SOURCE[0]}")/.." && pwd)
cd "$repo"

python=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$python" -m venv .venv
.venv/bin/python -m pip install -q --upgrade pip
.venv/bin/python -m pip install -q -e '.[dev]'

echo "== ruff"
.venv/bin/ruff check src tests bench
.venv/bin/ruff format --check src tests bench
echo "== mypy"
.venv/bin/mypy

echo "== prometheus"
bash scripts/prometheus-tools.sh install

echo "== kafka"
started_here=0
if ! bash scripts/kafka-local.sh status >/dev/null 2>&1; then started_here=1; fi
bash scripts/kafka-local.sh start
if [ "$started_here" = 1 ]; then trap 'bash scripts/kafka-local.sh stop' EXIT; fi

echo "== pytest"
.venv/bin/python -m pytest "$@"
