#!/usr/bin/env bash
# PostgreSQL failover of the project's own on loopback (issue 20 item 2, docs/scale-out.md "PostgreSQL failover"):
# one etcd member, two Patroni-managed PostgreSQL 15 + TimescaleDB nodes with streaming replication, and HAProxy
# routing writes to the leader by Patroni's REST health check (GET /primary). Own ports, data dirs and configs under
# $TBIB_CACHE_DIR/services/pgcluster (default <repo>/.cache/...); the machine's own PostgreSQL/etcd are never touched.
#
#   scripts/pgcluster.sh up       start what is not running (idempotent), wait for a leader and a streaming replica
#   scripts/pgcluster.sh down     stop only what this script started (HAProxy, Patroni nodes, etcd)
#   scripts/pgcluster.sh status   which parts run, with the DSNs
#
# pgcluster.json names the ports, pid files and both DSNs: through HAProxy (writes go to the leader) and the libpq
# multi-host DSN with target_session_attrs=read-write. Patroni and PostgreSQL refuse root: as root they run as the
# `postgres` system user (setpriv, so the pid file holds Patroni's own pid).
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
CACHE="${TBIB_CACHE_DIR:-$REPO/.cache}"
PC="$CACHE/services/pgcluster"
PGBIN=/usr/lib/postgresql/15/bin
NODES=(1 2)
mkdir -p "$PC"

log() { printf 'pgcluster: %s\n' "$*" >&2; }
die() { printf 'pgcluster: error: %s\n' "$*" >&2; exit 1; }
is_root() { [ "$(id -u)" = 0 ]; }

require_pkg() {
    # require_pkg PKG BINARY: install the Debian package when missing (root), else say how.
    local pkg=$1 bin=$2
    [ -x "$bin" ] && return 0
    if is_root; then
        log "apt-get install $pkg"
        DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "$pkg" >&2 || {
            apt-get update -q >&2; DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "$pkg" >&2; }
        # The Debian packages enable their own system services: stop them, we run our own instances.
        systemctl disable --now "${3:-$pkg}" >/dev/null 2>&1 || true
    fi
    [ -x "$bin" ] || die "$bin not found: install the Debian package '$pkg' (apt-get install $pkg) and retry"
}

free_port() {
    python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}

ports() {
    if [ ! -f "$PC/ports.env" ]; then
        {
            echo "ETCD_CLIENT=$(free_port)"; echo "ETCD_PEER=$(free_port)"; echo "HAPROXY_RW=$(free_port)"
            for i in "${NODES[@]}"; do echo "PG${i}=$(free_port)"; echo "REST${i}=$(free_port)"; done
        } > "$PC/ports.env.tmp"
        mv "$PC/ports.env.tmp" "$PC/ports.env"
    fi
    # shellcheck disable=SC1091
    . "$PC/ports.env"
}
port_of() { local v="$1"; echo "${!v}"; }
pid_alive() { local p; p=$(cat "$1" 2>/dev/null || true); [ -n "$p" ] && kill -0 "$p" 2>/dev/null; }

as_pg() {
    if is_root; then setpriv --reuid=postgres --regid=postgres --init-groups env HOME="$PC" "$@"; else "$@"; fi
}
exec_as_pg() {
    if is_root; then exec setpriv --reuid=postgres --regid=postgres --init-groups env HOME="$PC" "$@"; else exec "$@"; fi
}

http_ok() { python3 -c "import urllib.request; urllib.request.urlopen('$1', timeout=1)" 2>/dev/null; }

wait_http() {
    # wait_http URL SECS: until the URL answers 200.
    local url=$1 secs=$2
    for _ in $(seq 1 $((secs * 2))); do
        python3 -c "import urllib.request,sys; urllib.request.urlopen('$url', timeout=1)" 2>/dev/null && return 0
        sleep 0.5
    done
    return 1
}

wait_roles() {
    # wait_roles SECS: until one node is the leader and every other one a streaming replica (with synchronous mode, the
    # synchronous standby: a commit acknowledged by the leader is then on both nodes).
    local secs=$1 want=replica
    [ "${TBIB_PG_SYNC:-true}" = true ] && want=sync
    for _ in $(seq 1 $((secs * 2))); do
        local leaders=0 replicas=0
        for i in "${NODES[@]}"; do
            if http_ok "http://127.0.0.1:$(port_of "REST$i")/primary"; then leaders=$((leaders + 1))
            elif http_ok "http://127.0.0.1:$(port_of "REST$i")/$want"; then replicas=$((replicas + 1)); fi
        done
        [ "$leaders" = 1 ] && [ $((leaders + replicas)) = "${#NODES[@]}" ] && return 0
        sleep 0.5
    done
    return 1
}

# ---------------------------------------------------------------- etcd
etcd_up() {
    pid_alive "$PC/etcd.pid" && return 0
    mkdir -p "$PC/etcd"
    setsid /usr/bin/etcd --name tbib-e1 --data-dir "$PC/etcd/data" \
        --listen-client-urls "http://127.0.0.1:$ETCD_CLIENT" --advertise-client-urls "http://127.0.0.1:$ETCD_CLIENT" \
        --listen-peer-urls "http://127.0.0.1:$ETCD_PEER" --initial-advertise-peer-urls "http://127.0.0.1:$ETCD_PEER" \
        --initial-cluster "tbib-e1=http://127.0.0.1:$ETCD_PEER" --initial-cluster-state new \
        > "$PC/etcd/etcd.log" 2>&1 < /dev/null &
    echo $! > "$PC/etcd.pid"
    wait_http "http://127.0.0.1:$ETCD_CLIENT/health" 30 || die "etcd did not start (see $PC/etcd/etcd.log)"
    log "etcd on 127.0.0.1:$ETCD_CLIENT"
}

# ---------------------------------------------------------------- Patroni
patroni_config() {
    local i=$1
    cat <<EOF
scope: tbib-pg
namespace: /tbib/
name: pg$i
log:
  dir: $PC/pg$i
  level: INFO
restapi:
  listen: 127.0.0.1:$(port_of "REST$i")
  connect_address: 127.0.0.1:$(port_of "REST$i")
etcd3:
  hosts: 127.0.0.1:$ETCD_CLIENT
bootstrap:
  dcs:
    ttl: 10
    loop_wait: 2
    retry_timeout: 4
    maximum_lag_on_failover: 1048576
    synchronous_mode: ${TBIB_PG_SYNC:-true}
    synchronous_mode_strict: false
    postgresql:
      use_pg_rewind: true
      parameters:
        shared_preload_libraries: timescaledb
        timescaledb.telemetry_level: 'off'
        wal_level: replica
        hot_standby: 'on'
        wal_log_hints: 'on'
        max_wal_senders: 8
        max_replication_slots: 8
        max_connections: 100
  initdb:
    - encoding: UTF8
    - locale: C.UTF-8
  pg_hba:
    - local all all trust
    - host replication replicator 127.0.0.1/32 trust
    - host all all 127.0.0.1/32 trust
postgresql:
  listen: 127.0.0.1:$(port_of "PG$i")
  connect_address: 127.0.0.1:$(port_of "PG$i")
  data_dir: $PC/pg$i/data
  bin_dir: $PGBIN
  pgpass: $PC/pg$i/pgpass
  authentication:
    superuser:
      username: postgres
    replication:
      username: replicator
  parameters:
    unix_socket_directories: '$PC/pg$i'
EOF

}

node_up() {
    local i=$1
    pid_alive "$PC/pg$i/patroni.pid" && return 0
    mkdir -p "$PC/pg$i"
    patroni_config "$i" > "$PC/pg$i/patroni.yml"
    is_root && chown -R postgres: "$PC/pg$i"
    chmod 700 "$PC/pg$i"
    # exec in the background subshell (and setpriv/setsid exec in turn: not a group leader, setsid does not fork),
    # so that $! is Patroni's own pid, the one `down` signals.
    ( exec_as_pg setsid /usr/bin/patroni "$PC/pg$i/patroni.yml" > "$PC/pg$i/patroni.out" 2>&1 < /dev/null ) &
    echo $! > "$PC/pg$i/patroni.pid"
}

# ---------------------------------------------------------------- HAProxy
haproxy_up() {
    pid_alive "$PC/haproxy.pid" && return 0
    cat > "$PC/haproxy.cfg" <<EOF
global
    maxconn 200
defaults
    mode tcp
    timeout connect 2s
    timeout client 30m
    timeout server 30m
    timeout check 1s
listen tbib_pg_rw
    bind 127.0.0.1:$HAPROXY_RW
    option httpchk GET /primary
    http-check expect status 200
    default-server inter 500ms fall 2 rise 1 on-marked-down shutdown-sessions
EOF
    for i in "${NODES[@]}"; do
        echo "    server pg$i 127.0.0.1:$(port_of "PG$i") maxconn 100 check port $(port_of "REST$i")" >> "$PC/haproxy.cfg"
    done
    /usr/sbin/haproxy -f "$PC/haproxy.cfg" -D -p "$PC/haproxy.pid" || die "haproxy did not start"
    log "HAProxy (writes -> leader) on 127.0.0.1:$HAPROXY_RW"
}

write_json() {
    (set -a; . "$PC/ports.env"; python3 - "$PC" <<'EOF'
import json, os, sys
pc, e = sys.argv[1], os.environ
hosts = ",".join(f"127.0.0.1:{e[f'PG{i}']}" for i in (1, 2))
doc = {
    "haproxy_dsn": f"postgresql://postgres@127.0.0.1:{e['HAPROXY_RW']}/postgres",
    "multihost_dsn": f"postgresql://postgres@{hosts}/postgres?target_session_attrs=read-write",
    "etcd": f"http://127.0.0.1:{e['ETCD_CLIENT']}",
    "nodes": [{"name": f"pg{i}", "port": int(e[f"PG{i}"]), "rest": int(e[f"REST{i}"]),
               "data_dir": f"{pc}/pg{i}/data", "patroni_pid_file": f"{pc}/pg{i}/patroni.pid"} for i in (1, 2)],
    "haproxy_pid_file": f"{pc}/haproxy.pid",
}
with open(f"{pc}/pgcluster.json.tmp", "w") as f:
    json.dump(doc, f, indent=1)
EOF
    )
    mv "$PC/pgcluster.json.tmp" "$PC/pgcluster.json"
}

up() {
    require_pkg etcd-server /usr/bin/etcd etcd
    require_pkg patroni /usr/bin/patroni patroni
    require_pkg haproxy /usr/sbin/haproxy haproxy
    [ -f /usr/lib/postgresql/15/lib/timescaledb.so ] || "$REPO/scripts/services.sh" timescaledb
    ports
    etcd_up
    # The first start bootstraps pg1 then lets pg2 clone it; after a failover either node may lead, and a node
    # restarted after a kill rejoins as a replica (pg_rewind).
    if [ ! -d "$PC/pg1/data" ] && [ ! -d "$PC/pg2/data" ]; then
        node_up 1
        wait_http "http://127.0.0.1:$REST1/primary" 120 || die "pg1 did not become leader (see $PC/pg1/patroni.out)"
    fi
    for i in "${NODES[@]}"; do node_up "$i"; done
    wait_roles 180 || die "no leader with a streaming replica after 180 s (see $PC/pg*/patroni.out)"
    haproxy_up
    write_json
    log "leader and streaming replica up; $PC/pgcluster.json"
}

stop_pid() {
    # stop_pid FILE SECS: SIGTERM the process named in FILE, wait, then SIGKILL.
    local f=$1 secs=$2 p
    p=$(cat "$f" 2>/dev/null || true)
    [ -n "$p" ] && kill -0 "$p" 2>/dev/null || { rm -f "$f"; return 0; }
    kill "$p" 2>/dev/null || true
    for _ in $(seq 1 $((secs * 5))); do kill -0 "$p" 2>/dev/null || break; sleep 0.2; done
    kill -0 "$p" 2>/dev/null && kill -9 "$p" 2>/dev/null || true
    rm -f "$f"
}

down() {
    [ -f "$PC/ports.env" ] || return 0
    stop_pid "$PC/haproxy.pid" 5
    for i in 2 1; do stop_pid "$PC/pg$i/patroni.pid" 30; done
    # A postmaster left behind by a killed Patroni (only ours: its data dir is ours).
    for i in "${NODES[@]}"; do
        if [ -f "$PC/pg$i/data/postmaster.pid" ]; then
            as_pg "$PGBIN/pg_ctl" -D "$PC/pg$i/data" -m fast -w stop >/dev/null 2>&1 || true
        fi
    done
    stop_pid "$PC/etcd.pid" 10
    log "stopped"
}

status() {
    [ -f "$PC/ports.env" ] || { echo "pg cluster: never started"; return 0; }
    ports
    if pid_alive "$PC/etcd.pid"; then s=running; else s=stopped; fi
    echo "etcd: $s http://127.0.0.1:$ETCD_CLIENT"
    for i in "${NODES[@]}"; do
        if pid_alive "$PC/pg$i/patroni.pid"; then s=running; else s=stopped; fi
        role=-
        if [ "$s" = running ]; then
            role=$(python3 -c "import json,urllib.request; print(json.load(urllib.request.urlopen('http://127.0.0.1:$(port_of "REST$i")/patroni', timeout=2)).get('role', '?'))" 2>/dev/null || echo '?')
        fi
        echo "patroni pg$i: $s role=$role postgresql://127.0.0.1:$(port_of "PG$i") rest http://127.0.0.1:$(port_of "REST$i")"
    done
    if pid_alive "$PC/haproxy.pid"; then s=running; else s=stopped; fi
    echo "haproxy: $s postgresql://postgres@127.0.0.1:$HAPROXY_RW/postgres (writes -> leader)"
    [ -f "$PC/pgcluster.json" ] && echo "json: $PC/pgcluster.json"
}

case "${1:-status}" in
    up) up ;;
    down) down ;;
    status) status ;;
    *) echo "usage: $0 up|down|status" >&2; exit 2 ;;
esac
