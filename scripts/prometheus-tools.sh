#!/usr/bin/env bash
# Installs, when missing, the Prometheus tools the tests of deploy/prometheus/ and
# deploy/grafana/ use, from Debian's packages (as scripts/kafka-local.sh fetches the Kafka jars):
#   prometheus                promtool (check and test the rules) and the Prometheus server
#   prometheus-node-exporter  its textfile collector reads the file a run writes
#   prometheus-pushgateway    where a run pushes (METRICS_PUSHGATEWAY)
# Needs Debian or Ubuntu's apt and root (or sudo without a password). No service is started:
# the tests start their own processes on 127.0.0.1.
#
#   bash scripts/prometheus-tools.sh install   # quiet; installs only what is missing
#   bash scripts/prometheus-tools.sh check     # exit 1 and names what is missing
set -euo pipefail

# binary -> Debian package
declare -A packages=(
    [promtool]=prometheus
    [prometheus]=prometheus
    [prometheus-node-exporter]=prometheus-node-exporter
    [prometheus-pushgateway]=prometheus-pushgateway
)

missing() {
    local binary
    for binary in "${!packages[@]}"; do
        command -v "$binary" >/dev/null 2>&1 || echo "${packages[$binary]}"
    done | sort -u
}

as_root() {
    if [ "$(id -u)" = 0 ]; then
        "$@"
    elif command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then
        sudo -n "$@"
    else
        echo "prometheus-tools: installing $* needs root (or sudo without a password)" >&2
        return 1
    fi
}

install_missing() {
    local wanted
    wanted=$(missing)
    [ -n "$wanted" ] || return 0
    if ! command -v apt-get >/dev/null 2>&1; then
        echo "prometheus-tools: missing $(echo $wanted), and no apt-get to install them:" \
            "install Debian's packages of that name, or put their binaries on PATH" >&2
        return 1
    fi
    echo "prometheus-tools: installing $(echo $wanted) with apt-get"
    # Without a policy-rc.d, a host without systemd would start the packages' services
    # (a Prometheus on :9090, ...): forbid it for the time of the installation.
    local policy=/usr/sbin/policy-rc.d placed=0
    if [ ! -e "$policy" ]; then
        as_root sh -c "printf '#!/bin/sh\nexit 101\n' >$policy && chmod 755 $policy"
        placed=1
    fi
    local log rc=0
    log=$(mktemp)
    # A failed update (one unreachable repository) leaves the lists as they were: try anyway.
    as_root env DEBIAN_FRONTEND=noninteractive apt-get -q -o DPkg::Lock::Timeout=600 update \
        >"$log" 2>&1 ||
        echo "prometheus-tools: apt-get update failed; installing from the package lists as they are" >&2
    as_root env DEBIAN_FRONTEND=noninteractive apt-get -q -y -o DPkg::Lock::Timeout=600 \
        install --no-install-recommends $wanted >>"$log" 2>&1 || rc=$?
    if [ "$placed" = 1 ]; then as_root rm -f "$policy"; fi
    if [ "$rc" != 0 ]; then
        tail -n 20 "$log" >&2
        echo "prometheus-tools: apt-get failed (exit $rc): the lines above say why" >&2
        rm -f "$log"
        return "$rc"
    fi
    rm -f "$log"
    # A host with systemd starts the services despite everything: stop them, the tests
    # start their own on free ports.
    if command -v systemctl >/dev/null 2>&1 && [ -d /run/systemd/system ]; then
        for unit in $wanted; do as_root systemctl disable --now "$unit" >/dev/null 2>&1 || true; done
    fi
    wanted=$(missing)
    if [ -n "$wanted" ]; then
        echo "prometheus-tools: still missing after the installation: $(echo $wanted)" >&2
        return 1
    fi
}

case "${1:-install}" in
install) install_missing ;;
check)
    wanted=$(missing)
    if [ -n "$wanted" ]; then
        echo "missing: $(echo $wanted) (bash scripts/prometheus-tools.sh install)" >&2
        exit 1
    fi
    ;;
*)
    echo "usage: $0 install|check" >&2
    exit 2
    ;;
esac
