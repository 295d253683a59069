#!/usr/bin/env bash
# A real extraction on a fresh clone, nothing else set up: installs the package, starts the
# local Kafka broker and the Matomo simulator, runs `matomo-kafka run` on a demo config built
# from parm.example/, then reads a few messages back from the topic.
# Rerun it: the checkpoints in demo/data make the second run send only what is new.
set -euo pipefail
repo=$(cd -- "$(dirname -- "${BASH_SOURCE[0]}")/.." && pwd)
cd "$repo"
sim_port=${SIM_PORT:-8080}
export KAFKA_PORT=${KAFKA_PORT:-9092}

[ -x .venv/bin/python ] || "${PYTHON:-python3}" -m venv .venv
.venv/bin/python -m pip install -q --upgrade pip
.venv/bin/python -m pip install -q -e .
bash scripts/kafka-local.sh start

# The demo config: parm.example with local paths, the last 3 days, the local broker.
mkdir -p demo/parm demo/data
cp parm.example/* demo/parm/
chmod 600 demo/parm/wa7.env
# parm.example ships no salt (a published one is refused): the demo makes its own, once.
[ -s demo/salt ] || (umask 077 && .venv/bin/python -c 'import secrets; print(secrets.token_hex(32))' >demo/salt)
SALAGE=$(cat demo/salt)
export SALAGE
export START_DATE=${START_DATE:-$(date -u -d '3 days ago' +%F)}
export FILE_PATH_FILTERDATE="$repo/demo/data/filterdate"
export FILE_PATH_LAST_OFFSET="$repo/demo/data/last_filter_offset"
export MATOMO_API_URL="http://127.0.0.1:$sim_port/index.php"
export KAFKA_SERVERS="127.0.0.1:$KAFKA_PORT"

.venv/bin/python - <<'PY'
from confluent_kafka.admin import AdminClient, NewTopic
import os
admin = AdminClient({"bootstrap.servers": os.environ["KAFKA_SERVERS"]})
if "matomo.visits" not in admin.list_topics(timeout=30).topics:
    admin.create_topics([NewTopic("matomo.visits", 3, 1)])["matomo.visits"].result(30)
    print("demo: created topic matomo.visits")
PY

.venv/bin/matomo-kafka simulate --port "$sim_port" --visits-per-day 200 >demo/simulator.log 2>&1 &
sim_pid=$!
trap 'kill $sim_pid 2>/dev/null || true' EXIT
for _ in $(seq 50); do
    curl -fsS -o /dev/null -d 'module=API&method=API.getMatomoVersion&format=json&token_auth=demo-token' \
        "$MATOMO_API_URL" 2>/dev/null && break
    sleep 0.2
done

.venv/bin/matomo-kafka run --parm-dir demo/parm
.venv/bin/matomo-kafka status --parm-dir demo/parm

.venv/bin/python - <<'PY'
import json, os, uuid
from confluent_kafka import Consumer
consumer = Consumer({"bootstrap.servers": os.environ["KAFKA_SERVERS"],
                     "group.id": f"demo-{uuid.uuid4().hex}", "auto.offset.reset": "earliest"})
consumer.subscribe(["matomo.visits"])
shown = 0
while shown < 3:
    message = consumer.poll(10)
    if message is None:
        break
    if message.error():
        continue
    visit = json.loads(message.value())
    print(f"\nkey={message.key().decode()} headers={dict(message.headers() or [])}")
    print(json.dumps({k: visit[k] for k in ("idSite", "idVisit", "visitIp", "visitorId", "Plan",
                                            "lastActionDateTime") if k in visit}))
    shown += 1
consumer.close()
PY
echo
echo "demo: done. The broker keeps running (scripts/kafka-local.sh stop to stop it)."
