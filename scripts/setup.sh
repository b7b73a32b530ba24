#!/usr/bin/env bash
# `make setup`: everything a fresh Debian/Ubuntu box needs to run tbib's demo and tests.
#  - Debian packages (as root): chromium for browser tests, mosquitto, postgresql and coturn for the services script,
#    rabbitmq-server for the broker-cluster test (tests/cluster; scripts/cluster.sh), patroni, etcd-server and haproxy
#    for the PostgreSQL failover test (scripts/pgcluster.sh; their own system services are disabled when we install them),
#    nodejs/npm
#  - .venv with the project and all extras, pinned by constraints.txt (repeatable CI)
#  - the dashboard's npm packages (uPlot) into node_modules/
# Idempotent; `make` only calls it when pyproject.toml, constraints.txt or this file changed.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
PYTHON="${PYTHON:-python3}"
log() { printf 'setup: %s\n' "$*" >&2; }

need=()
for p in chromium mosquitto postgresql coturn rabbitmq-server patroni etcd-server haproxy npm; do
    case "$p" in
        npm) command -v npm >/dev/null 2>&1 || need+=(npm) ;;
        postgresql) ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || need+=(postgresql) ;;
        *) dpkg -s "$p" >/dev/null 2>&1 || need+=("$p") ;;
    esac
done
if [ ${#need[@]} -gt 0 ]; then
    if [ "$(id -u)" = 0 ]; then
        log "apt-get install ${need[*]}"
        export DEBIAN_FRONTEND=noninteractive
        apt-get install -y -q --no-install-recommends "${need[@]}" >&2 || {
            apt-get update -q >&2 && apt-get install -y -q --no-install-recommends "${need[@]}" >&2; }
        for p in "${need[@]}"; do  # pgcluster.sh runs its own etcd/HAProxy: not the default instances
            case "$p" in etcd-server) systemctl disable --now etcd >/dev/null 2>&1 || true ;;
                         haproxy) systemctl disable --now haproxy >/dev/null 2>&1 || true ;; esac
        done
    else
        log "WARNING: missing Debian packages ${need[*]}; install them (sudo apt-get install ${need[*]})"
    fi
fi

"$PYTHON" -c 'import sys; sys.exit(sys.version_info < (3, 11))' || { log "Python >= 3.11 required"; exit 1; }
[ -x .venv/bin/python ] || "$PYTHON" -m venv .venv
.venv/bin/python -m pip install -q --upgrade pip >&2
log "installing tbib with extras gateway, server, dev"
.venv/bin/python -m pip install -q -c constraints.txt -e '.[gateway,server,dev]' >&2

if command -v npm >/dev/null 2>&1; then
    log "npm install (dashboard assets)"
    npm install --no-audit --no-fund --loglevel=error >&2
else
    log "WARNING: npm missing: the dashboard charts will not load"
fi
log "done"
