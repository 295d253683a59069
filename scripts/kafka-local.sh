#!/usr/bin/env bash
# Run a real single-node Apache Kafka broker (KRaft, broker+controller in one
# JVM) for local development, tests and CI. No Docker: the broker jars are
# resolved from Maven Central with Maven (scripts/kafka-local/pom.xml) and run
# on the local Java (17+). Linux only (uses /proc, setsid, flock).
#
# Usage: scripts/kafka-local.sh start | stop [--kill] | status | logs [-f]
#
#   start        start the broker in the background and wait until it is ready
#                (idempotent: exits 0 if this dir's broker is already up)
#   stop         SIGTERM, wait up to 30 s, then SIGKILL; exit 0 if not running
#   stop --kill  SIGKILL at once (simulates a crash)
#   status       print running/stopped (and the TLS files); exit 0 if running, 3 if stopped
#   logs [-f]    last 100 lines of the broker log (-f: follow)
#
# Environment (defaults in brackets):
#   KAFKA_VERSION              broker version [4.1.1]
#   KAFKA_PORT                 PLAINTEXT listener on 127.0.0.1 [9092]
#   KAFKA_CONTROLLER_PORT      KRaft controller listener [KAFKA_PORT+1]
#   KAFKA_SASL_PORT            SASL_PLAINTEXT listener, PLAIN and SCRAM-SHA-512
#                              [KAFKA_PORT+2]
#   KAFKA_SSL_PORT             SASL_SSL listener, PLAIN and SCRAM-SHA-512 over TLS
#                              [KAFKA_PORT+3]
#   KAFKA_MTLS_PORT            SSL listener that requires a client certificate
#                              (mutual TLS, no SASL) [KAFKA_PORT+4]
#   KAFKA_LOCAL_SASL_USER      SASL user [matomo]
#   KAFKA_LOCAL_SASL_PASSWORD  its password [matomo-local-secret]
#   KAFKA_LOCAL_DIR            state dir: libs/ data/ logs/ server.properties
#                              broker.pid [<repo>/.kafka-local]
#   KAFKA_HEAP                 max heap [512m]
#   KAFKA_START_TIMEOUT        seconds to wait for readiness [120]
#   JAVA_HOME                  java to use [java on PATH]
#
# TLS: the first start makes a throwaway CA and certificates with openssl into
# $KAFKA_LOCAL_DIR/ssl/ (kept across restarts, remade when missing or within a
# week of expiry; the CA is trusted by nothing but what is told to trust it):
#   ssl/ca.pem                 the CA to trust (ssl.ca.location, KAFKA_SSL_CA_LOCATION)
#   ssl/broker.pem             the broker's certificate, SAN DNS:localhost,IP:127.0.0.1
#   ssl/client.pem, client.key a client certificate for the mTLS listener; the key is
#                              encrypted with the password in ssl/client.key.password
set -euo pipefail

script_dir=$(cd -- "$(dirname -- "${BASH_SOURCE[0]}")" && pwd -P)
repo_dir=$(dirname -- "$script_dir")
conf_dir=$script_dir/kafka-local

KAFKA_VERSION=${KAFKA_VERSION:-4.1.1}
KAFKA_PORT=${KAFKA_PORT:-9092}
KAFKA_CONTROLLER_PORT=${KAFKA_CONTROLLER_PORT:-$((KAFKA_PORT + 1))}
KAFKA_SASL_PORT=${KAFKA_SASL_PORT:-$((KAFKA_PORT + 2))}
KAFKA_SSL_PORT=${KAFKA_SSL_PORT:-$((KAFKA_PORT + 3))}
KAFKA_MTLS_PORT=${KAFKA_MTLS_PORT:-$((KAFKA_PORT + 4))}
KAFKA_LOCAL_SASL_USER=${KAFKA_LOCAL_SASL_USER:-matomo}
KAFKA_LOCAL_SASL_PASSWORD=${KAFKA_LOCAL_SASL_PASSWORD:-matomo-local-secret}
KAFKA_LOCAL_DIR=${KAFKA_LOCAL_DIR:-$repo_dir/.kafka-local}
KAFKA_HEAP=${KAFKA_HEAP:-512m}
KAFKA_START_TIMEOUT=${KAFKA_START_TIMEOUT:-120}

log() { echo "kafka-local: $*"; }
err() { echo "kafka-local: $*" >&2; }
die() { err "$*"; exit 1; }

# The state dir must be absolute and canonical: its server.properties path
# identifies our broker process in /proc, whatever the caller's cwd.
[[ ${1:-} == start ]] && mkdir -p "$KAFKA_LOCAL_DIR"
if [[ -d $KAFKA_LOCAL_DIR ]]; then
    state_dir=$(cd -- "$KAFKA_LOCAL_DIR" && pwd -P)
elif [[ $KAFKA_LOCAL_DIR == /* ]]; then
    state_dir=$KAFKA_LOCAL_DIR
else
    state_dir=$PWD/$KAFKA_LOCAL_DIR
fi
libs_dir=$state_dir/libs/$KAFKA_VERSION  # keyed by version: a new version re-resolves
data_dir=$state_dir/data
logs_dir=$state_dir/logs
props=$state_dir/server.properties
pid_file=$state_dir/broker.pid
ssl_dir=$state_dir/ssl
log_file=$logs_dir/server.log
out_file=$logs_dir/stdout.log   # JVM stdout/stderr: only crashes before log4j is up
java_bin=${JAVA_HOME:+$JAVA_HOME/bin/}java

# Milliseconds since the epoch (bash 5; the separator in EPOCHREALTIME is locale-dependent).
now_ms() {
    local us=${EPOCHREALTIME//[!0-9]/}
    echo $((us / 1000))
}

# True if something accepts TCP connections on 127.0.0.1:$1.
port_open() { timeout 2 bash -c "exec 3<>/dev/tcp/127.0.0.1/$1" 2>/dev/null; }

# True if pid $1 is `java ... kafka.Kafka <this dir>/server.properties`. A dead
# pid, a zombie (empty cmdline) or a recycled pid all fail the check.
is_our_broker() {
    local args
    args=$(tr '\0' '\n' 2>/dev/null <"/proc/$1/cmdline") || return 1
    [[ $(head -n1 <<<"$args") == *java ]] &&
        grep -qxF 'kafka.Kafka' <<<"$args" &&
        grep -qxF "$props" <<<"$args"
}

# Print the pid of this dir's running broker, or fail.
our_pid() {
    local pid
    [[ -f $pid_file ]] || return 1
    pid=$(<"$pid_file")
    [[ $pid =~ ^[0-9]+$ ]] && is_our_broker "$pid" || return 1
    echo "$pid"
}

# The port of listener $1 as configured in server.properties (empty if none).
listener_port() {
    sed -n "s|^listeners=\(.*,\)\{0,1\}$1://127.0.0.1:\([0-9]*\).*|\2|p" "$props" 2>/dev/null
}

# Client listener ports of the broker as configured: "PORT SASL_PORT SSL_PORT MTLS_PORT".
configured_ports() {
    local name ports=()
    for name in PLAINTEXT SASL_PLAINTEXT SASL_SSL MTLS; do
        ports+=("$(listener_port "$name")")
    done
    echo "${ports[*]}"
}

# What start prints about the listeners.
describe_ports() {
    echo "127.0.0.1:$1 (sasl 127.0.0.1:$2, sasl_ssl 127.0.0.1:$3, mtls 127.0.0.1:$4)"
}

# Serialize start/stop on one state dir (fd 9; child processes must not keep it).
lock_state_dir() {
    exec 9>"$state_dir/.lock"
    flock 9
}

check_settings() {
    local p
    for p in "$KAFKA_PORT" "$KAFKA_CONTROLLER_PORT" "$KAFKA_SASL_PORT" "$KAFKA_SSL_PORT" \
        "$KAFKA_MTLS_PORT"; do
        [[ $p =~ ^[0-9]+$ ]] && ((p > 0 && p < 65536)) || die "invalid port: $p"
    done
    [[ $(printf '%s\n' "$KAFKA_PORT" "$KAFKA_CONTROLLER_PORT" "$KAFKA_SASL_PORT" \
        "$KAFKA_SSL_PORT" "$KAFKA_MTLS_PORT" | sort -u | wc -l) == 5 ]] ||
        die "KAFKA_PORT, KAFKA_CONTROLLER_PORT, KAFKA_SASL_PORT, KAFKA_SSL_PORT and KAFKA_MTLS_PORT must differ"
    [[ $KAFKA_START_TIMEOUT =~ ^[0-9]+$ ]] || die "invalid KAFKA_START_TIMEOUT: $KAFKA_START_TIMEOUT"
    [[ $KAFKA_HEAP =~ ^[0-9]+[kKmMgG]?$ ]] || die "invalid KAFKA_HEAP: $KAFKA_HEAP (e.g. 512m, 1g)"
    # The credentials end up unescaped in a JAAS option and in StorageTool's
    # --add-scram syntax, so keep them to characters that need no quoting.
    [[ $KAFKA_LOCAL_SASL_USER =~ ^[A-Za-z0-9_]+$ ]] ||
        die "KAFKA_LOCAL_SASL_USER may only contain letters, digits and _"
    [[ $KAFKA_LOCAL_SASL_PASSWORD =~ ^[A-Za-z0-9._~@%+/-]+$ ]] ||
        die "KAFKA_LOCAL_SASL_PASSWORD may only contain letters, digits and ._~@%+/-"
    command -v "$java_bin" >/dev/null || die "java not found (set JAVA_HOME or PATH); Kafka 4 needs Java 17+"
    command -v openssl >/dev/null || die "openssl not found; it makes the TLS listeners' throwaway certificates"
}

# Copy the broker jars from Maven Central (via ~/.m2) into libs/<version>/.
resolve_libs() {
    compgen -G "$libs_dir/kafka_2.13-*.jar" >/dev/null && return 0
    command -v mvn >/dev/null || die "mvn not found; it is needed once to fetch the Kafka jars"
    err "resolving Kafka $KAFKA_VERSION jars with Maven..."
    mkdir -p "$state_dir/libs"
    local tmp
    tmp=$(mktemp -d "$state_dir/libs/.resolve.XXXXXX")
    # Output goes to a file: mvn -q still emits colour codes on stdout.
    if ! mvn -q -B -f "$conf_dir/pom.xml" dependency:copy-dependencies \
        -Dkafka.version="$KAFKA_VERSION" -DincludeScope=runtime \
        -DoutputDirectory="$tmp" >"$logs_dir/mvn.log" 2>&1 9>&-; then
        cat "$logs_dir/mvn.log" >&2
        rm -rf "$tmp"
        die "Maven could not resolve org.apache.kafka:kafka_2.13:$KAFKA_VERSION"
    fi
    # Rename into place so an interrupted resolve is never mistaken for a cache.
    rm -rf "$libs_dir"
    mv "$tmp" "$libs_dir"
}

# True if the PEM certificate $1 exists and is valid for at least one more week.
cert_fresh() { [[ -s $1 ]] && openssl x509 -checkend 604800 -noout -in "$1" >/dev/null 2>&1; }

# The throwaway CA, the broker's certificate (PKCS#12 keystore) and an mTLS client
# certificate, made once into ssl/ by scripts/tls-cert.sh (in a temp dir renamed into
# place, so a half-made set is never used) and reused while they are valid.
make_certs() {
    local f
    for f in ca.key ca.pem broker.pem broker.p12 keystore.password client.pem client.key \
        client.key.password; do
        [[ -s $ssl_dir/$f ]] || break
    done
    if [[ -s $ssl_dir/$f ]] && cert_fresh "$ssl_dir/ca.pem" && cert_fresh "$ssl_dir/broker.pem" &&
        cert_fresh "$ssl_dir/client.pem"; then
        return 0
    fi
    err "making a throwaway CA and TLS certificates in $ssl_dir..."
    local tmp store_pw client_pw certs="bash $script_dir/tls-cert.sh"
    tmp=$(mktemp -d "$state_dir/.ssl.XXXXXX")
    # Random passwords of throwaway files, kept next to them for the broker and the tests.
    store_pw=$(openssl rand -hex 16)
    client_pw=$(openssl rand -hex 16)
    if ! { $certs ca "$tmp/ca" "kafka-local throwaway CA $(date -u +%Y%m%dT%H%M%SZ)" &&
        $certs server "$tmp/broker" "$tmp/ca" localhost "DNS:localhost,IP:127.0.0.1" &&
        $certs client "$tmp/client" "$tmp/ca" matomo-kafka-local-client "" "$client_pw" &&
        openssl pkcs12 -export -in "$tmp/broker.pem" -inkey "$tmp/broker.key" \
            -certfile "$tmp/ca.pem" -name broker -passout "pass:$store_pw" -out "$tmp/broker.p12" &&
        echo "$store_pw" >"$tmp/keystore.password" &&
        echo "$client_pw" >"$tmp/client.key.password"; } 2>"$logs_dir/ssl.log" 9>&-; then
        cat "$logs_dir/ssl.log" >&2
        rm -rf "$tmp"
        die "could not make the TLS certificates (scripts/tls-cert.sh)"
    fi
    chmod 600 "$tmp"/*.key "$tmp"/*.password "$tmp/broker.p12"
    chmod 755 "$tmp"
    rm -rf "$ssl_dir"
    mv "$tmp" "$ssl_dir"
}

# Regenerated on every start so port/credential changes apply; the data dir
# is independent of it (except SCRAM credentials, see format_storage).
write_props() {
    local u=$KAFKA_LOCAL_SASL_USER pw=$KAFKA_LOCAL_SASL_PASSWORD store_pw
    store_pw=$(<"$ssl_dir/keystore.password")
    cat >"$props.tmp" <<EOF
# Generated by scripts/kafka-local.sh on every start; edits are overwritten.
process.roles=broker,controller
node.id=1
controller.quorum.voters=1@127.0.0.1:$KAFKA_CONTROLLER_PORT
controller.listener.names=CONTROLLER
listeners=PLAINTEXT://127.0.0.1:$KAFKA_PORT,CONTROLLER://127.0.0.1:$KAFKA_CONTROLLER_PORT,SASL_PLAINTEXT://127.0.0.1:$KAFKA_SASL_PORT,SASL_SSL://127.0.0.1:$KAFKA_SSL_PORT,MTLS://127.0.0.1:$KAFKA_MTLS_PORT
advertised.listeners=PLAINTEXT://127.0.0.1:$KAFKA_PORT,SASL_PLAINTEXT://127.0.0.1:$KAFKA_SASL_PORT,SASL_SSL://127.0.0.1:$KAFKA_SSL_PORT,MTLS://127.0.0.1:$KAFKA_MTLS_PORT
listener.security.protocol.map=PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT,SASL_PLAINTEXT:SASL_PLAINTEXT,SASL_SSL:SASL_SSL,MTLS:SSL
inter.broker.listener.name=PLAINTEXT

# SASL for clients only. PLAIN users live in the JAAS option user_<name>;
# SCRAM users live in the metadata log (added by StorageTool at format time).
# No authorizer: an authenticated user may do everything.
sasl.enabled.mechanisms=PLAIN,SCRAM-SHA-512
listener.name.sasl_plaintext.plain.sasl.jaas.config=org.apache.kafka.common.security.plain.PlainLoginModule required user_$u="$pw";
listener.name.sasl_plaintext.scram-sha-512.sasl.jaas.config=org.apache.kafka.common.security.scram.ScramLoginModule required;
listener.name.sasl_ssl.plain.sasl.jaas.config=org.apache.kafka.common.security.plain.PlainLoginModule required user_$u="$pw";
listener.name.sasl_ssl.scram-sha-512.sasl.jaas.config=org.apache.kafka.common.security.scram.ScramLoginModule required;

# TLS (SASL_SSL and MTLS listeners): the throwaway certificates of ssl/ (make_certs).
# The MTLS listener (protocol SSL) accepts only clients with a certificate of that CA.
ssl.keystore.type=PKCS12
ssl.keystore.location=$ssl_dir/broker.p12
ssl.keystore.password=$store_pw
ssl.key.password=$store_pw
ssl.truststore.type=PEM
ssl.truststore.location=$ssl_dir/ca.pem
listener.name.mtls.ssl.client.auth=required

log.dirs=$data_dir
num.partitions=1
auto.create.topics.enable=false
# Single node: internal topics cannot have more than one replica.
offsets.topic.replication.factor=1
transaction.state.log.replication.factor=1
transaction.state.log.min.isr=1
share.coordinator.state.topic.replication.factor=1
share.coordinator.state.topic.min.isr=1
# Fewer internal partitions: faster first group join / transaction, less memory.
offsets.topic.num.partitions=1
transaction.state.log.num.partitions=1
# Tests should not wait 3 s for every consumer group to form.
group.initial.rebalance.delay.ms=0
EOF
    mv "$props.tmp" "$props"
}

java_opts() {
    local xms=256m
    # -Xms above -Xmx would stop the JVM; follow a smaller KAFKA_HEAP down.
    if [[ $KAFKA_HEAP =~ ^([0-9]+)[mM]$ ]] && ((BASH_REMATCH[1] < 256)); then
        xms=$KAFKA_HEAP
    fi
    # Serial GC: fewest threads and least memory on a small (2-core) box.
    printf '%s\n' "-Xms$xms" "-Xmx$KAFKA_HEAP" -XX:+UseSerialGC -XX:+ExitOnOutOfMemoryError \
        -Djava.awt.headless=true \
        "-Dlog4j2.configurationFile=$conf_dir/log4j2.properties" "-Dkafka.logs.dir=$logs_dir"
}

# Format data/ once; afterwards restarts reuse it (topics and data survive).
format_storage() {
    local fp
    fp=$(printf '%s\0%s' "$KAFKA_LOCAL_SASL_USER" "$KAFKA_LOCAL_SASL_PASSWORD" | sha256sum | cut -d' ' -f1)
    if [[ -f $data_dir/meta.properties ]]; then
        # SCRAM credentials were fixed at format time; PLAIN follows the env.
        if [[ -f $state_dir/sasl.sha256 && $(<"$state_dir/sasl.sha256") != "$fp" ]]; then
            err "warning: SASL user/password changed since $data_dir was formatted;"
            err "warning: SCRAM-SHA-512 still uses the old ones (remove $data_dir to re-format)"
        fi
        return 0
    fi
    local cluster_id opts
    mapfile -t opts < <(java_opts)
    if [[ -s $state_dir/cluster.id ]]; then
        cluster_id=$(<"$state_dir/cluster.id")
    else
        cluster_id=$("$java_bin" "${opts[@]}" -cp "$libs_dir/*" kafka.tools.StorageTool random-uuid 9>&-) ||
            die "could not run kafka.tools.StorageTool with $java_bin"
    fi
    err "formatting $data_dir (cluster id $cluster_id)..."
    mkdir -p "$data_dir"
    if ! "$java_bin" "${opts[@]}" -cp "$libs_dir/*" kafka.tools.StorageTool format \
        -t "$cluster_id" -c "$props" \
        --add-scram "SCRAM-SHA-512=[name=$KAFKA_LOCAL_SASL_USER,password=$KAFKA_LOCAL_SASL_PASSWORD]" \
        >"$logs_dir/format.log" 2>&1 9>&-; then
        cat "$logs_dir/format.log" >&2
        die "formatting storage failed"
    fi
    echo "$cluster_id" >"$state_dir/cluster.id"
    echo "$fp" >"$state_dir/sasl.sha256"
}

# Print why start failed, with the broker log, kill what we started, exit 1.
start_failed() {
    local pid=$1
    shift
    err "$*"
    if [[ -s $log_file ]]; then
        # The root cause is usually the first ERROR, often scrolled out by stack traces.
        grep -m1 -F '] ERROR ' "$log_file" | cut -c1-500 >&2 || true
        err "---- last 40 lines of $log_file ----"
        tail -n 40 "$log_file" >&2
    fi
    if [[ -s $out_file ]]; then
        err "---- $out_file ----"
        tail -n 40 "$out_file" >&2
    fi
    # Leave nothing half-started behind.
    if is_our_broker "$pid"; then
        kill -KILL "$pid" 2>/dev/null || true
    fi
    rm -f "$pid_file"
    exit 1
}

cmd_start() {
    check_settings
    mkdir -p "$logs_dir"
    lock_state_dir

    local pid ports want="$KAFKA_PORT $KAFKA_SASL_PORT $KAFKA_SSL_PORT $KAFKA_MTLS_PORT"
    if pid=$(our_pid); then
        ports=$(configured_ports)
        [[ $ports == "$want" ]] ||
            die "broker pid $pid for $state_dir runs with ports ${ports:-?}, not $want; stop it first"
        port_open "$KAFKA_PORT" ||
            die "broker pid $pid is running but 127.0.0.1:$KAFKA_PORT does not answer; try: $0 stop"
        log "already running on $(describe_ports $want) pid $pid"
        return 0
    fi
    rm -f "$pid_file"

    local name port
    for name in PLAINTEXT:$KAFKA_PORT CONTROLLER:$KAFKA_CONTROLLER_PORT \
        SASL_PLAINTEXT:$KAFKA_SASL_PORT SASL_SSL:$KAFKA_SSL_PORT MTLS:$KAFKA_MTLS_PORT; do
        port=${name#*:}
        if port_open "$port"; then
            err "127.0.0.1:$port (${name%%:*} listener) is already in use by another process:"
            ss -ltnp "sport = :$port" >&2 2>/dev/null || true
            die "pick other ports with KAFKA_PORT / KAFKA_CONTROLLER_PORT / KAFKA_SASL_PORT / KAFKA_SSL_PORT / KAFKA_MTLS_PORT"
        fi
    done

    resolve_libs
    make_certs
    write_props
    # Each run gets a fresh server.log (readiness is judged on it); keep one
    # previous run for post-mortems, e.g. after `stop --kill`.
    [[ -f $log_file ]] && mv -f "$log_file" "$log_file.prev"
    [[ -f $out_file ]] && mv -f "$out_file" "$out_file.prev"
    format_storage

    local opts
    mapfile -t opts < <(java_opts)
    err "starting Kafka $KAFKA_VERSION broker..."
    local t0
    t0=$(now_ms)
    # setsid: own session, so the broker outlives the calling shell/CI step and
    # gets no terminal signals. The wrapper writes its own pid, then execs java
    # (same pid). All std fds are redirected so a caller that captures our
    # output (e.g. subprocess.run(capture_output=True)) is not held open.
    (
        cd "$state_dir" # hs_err_pid*.log and the like land here, not in the caller's cwd
        exec setsid bash -c 'echo $$ >"$0"; exec "$@"' "$pid_file" \
            "$java_bin" "${opts[@]}" -cp "$libs_dir/*" kafka.Kafka "$props" \
            </dev/null >"$out_file" 2>&1 9>&-
    ) &

    # Wait for the wrapper to exec java (a few ms).
    pid=
    for _ in $(seq 100); do
        if [[ -s $pid_file ]]; then
            pid=$(<"$pid_file")
            is_our_broker "$pid" && break
        fi
        sleep 0.1
    done
    [[ -n $pid ]] && is_our_broker "$pid" || start_failed "${pid:-0}" "broker process did not start"

    # Ready = the log says so (it is logged after all listeners accept
    # requests) AND the client ports really answer.
    while :; do
        is_our_broker "$pid" || start_failed "$pid" "broker exited during startup"
        if grep -qF 'Kafka Server started' "$log_file" 2>/dev/null &&
            port_open "$KAFKA_PORT" && port_open "$KAFKA_SASL_PORT" &&
            port_open "$KAFKA_SSL_PORT" && port_open "$KAFKA_MTLS_PORT"; then
            break
        fi
        (($(now_ms) - t0 < KAFKA_START_TIMEOUT * 1000)) ||
            start_failed "$pid" "broker not ready after ${KAFKA_START_TIMEOUT}s (KAFKA_START_TIMEOUT); killed it"
        sleep 0.25
    done
    local ms=$(($(now_ms) - t0))
    log "broker ready on $(describe_ports $want) pid $pid in $((ms / 1000)).$((ms % 1000 / 100))s"
    log "TLS: trust $ssl_dir/ca.pem"
}

cmd_stop() {
    local mode=${1:-}
    [[ -z $mode || $mode == --kill ]] || die "usage: $0 stop [--kill]"
    if [[ ! -d $state_dir ]]; then
        log "not running"
        return 0
    fi
    lock_state_dir
    local pid
    if ! pid=$(our_pid); then
        rm -f "$pid_file" # missing, stale or recycled pid: never signal it
        log "not running"
        return 0
    fi
    if [[ $mode == --kill ]]; then
        kill -KILL "$pid" 2>/dev/null || true
    else
        # SIGTERM = controlled shutdown: clean logs, no recovery on next start.
        kill -TERM "$pid" 2>/dev/null || true
        local deadline=$((SECONDS + 30))
        while is_our_broker "$pid" && ((SECONDS < deadline)); do sleep 0.2; done
        if is_our_broker "$pid"; then
            err "pid $pid still running after 30s; sending SIGKILL"
            kill -KILL "$pid" 2>/dev/null || true
        fi
    fi
    local deadline=$((SECONDS + 10))
    while is_our_broker "$pid" && ((SECONDS < deadline)); do sleep 0.1; done
    is_our_broker "$pid" && die "pid $pid did not die"
    rm -f "$pid_file"
    log "stopped pid $pid${mode:+ (killed)}"
}

cmd_status() {
    local pid ports
    if pid=$(our_pid); then
        ports=$(configured_ports)
        # shellcheck disable=SC2086 # the four ports, as separate arguments
        if port_open "${ports%% *}"; then
            log "running pid $pid on $(describe_ports $ports), dir $state_dir"
        else
            log "running pid $pid but 127.0.0.1:${ports%% *} does not answer (starting or hung), dir $state_dir"
        fi
        [[ -s $ssl_dir/ca.pem ]] && log "TLS: CA $ssl_dir/ca.pem, mTLS client $ssl_dir/client.pem + client.key"
        return 0
    fi
    log "stopped (dir $state_dir)"
    return 3
}

cmd_logs() {
    [[ -f $log_file ]] || die "no broker log yet ($log_file)"
    if [[ ${1:-} == -f ]]; then
        exec tail -n 100 -F "$log_file"
    fi
    tail -n 100 "$log_file"
}

cmd=${1:-}
shift || true
case $cmd in
start) cmd_start ;;
stop) cmd_stop "$@" ;;
status) cmd_status ;;
logs) cmd_logs "$@" ;;
*)
    echo "usage: $0 start | stop [--kill] | status | logs [-f]" >&2
    exit 2
    ;;
esac
