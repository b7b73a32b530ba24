#!/usr/bin/env bash
# Clustered MQTT brokers of the project's own on loopback (issue 20 item 1, docs/scale-out.md): a 3-node RabbitMQ 3.10
# cluster (rabbitmq_mqtt, quorum queue bound to amq.topic) and a 3-node NATS 2.9 cluster (JetStream R3 stream over the
# MQTT readings subjects). Own node names, ports, data dirs, Erlang cookie and epmd: the machine's own RabbitMQ/NATS
# services (5672, 4222, epmd 4369) are never used, touched or needed.
#
#   scripts/cluster.sh up [all|rabbitmq|nats]      start the nodes that are not running (idempotent), declare topology
#   scripts/cluster.sh down [all|rabbitmq|nats]    stop only the nodes this script started (and its own epmd)
#   scripts/cluster.sh status                      which nodes run, with their MQTT URLs
#
# State lives in $TBIB_CACHE_DIR/services/cluster (default <repo>/.cache/...): cluster.json names every node's ports
# and pid file, for `tbib bench broker` and tests/cluster.
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
CACHE="${TBIB_CACHE_DIR:-$REPO/.cache}"
CL="$CACHE/services/cluster"
PY="${TBIB_PYTHON:-$REPO/.venv/bin/python}"
RMQ_BIN=/usr/lib/rabbitmq/bin
NODES=(1 2 3)
mkdir -p "$CL"

log() { printf 'cluster: %s\n' "$*" >&2; }
die() { printf 'cluster: error: %s\n' "$*" >&2; exit 1; }

require_pkg() {
    # require_pkg PKG BINARY: install the Debian package when missing (root), else say how.
    local pkg=$1 bin=$2
    [ -x "$bin" ] && return 0
    if [ "$(id -u)" = 0 ]; then
        log "apt-get install $pkg"
        DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "$pkg" >&2 || {
            apt-get update -q >&2; DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "$pkg" >&2; }
    fi
    [ -x "$bin" ] || die "$bin not found: install the Debian package '$pkg' (apt-get install $pkg) and retry"
}

free_port() {
    python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}

# Ports are chosen once and kept in ports.env, so that a node restarted after a kill comes back where its peers expect.
ports() {
    if [ ! -f "$CL/ports.env" ]; then
        {
            echo "EPMD_PORT=$(free_port)"
            for i in "${NODES[@]}"; do
                echo "R${i}_AMQP=$(free_port)"; echo "R${i}_DIST=$(free_port)"; echo "R${i}_MQTT=$(free_port)"
                echo "N${i}_CLIENT=$(free_port)"; echo "N${i}_ROUTE=$(free_port)"; echo "N${i}_MQTT=$(free_port)"
            done
        } > "$CL/ports.env.tmp"
        mv "$CL/ports.env.tmp" "$CL/ports.env"
    fi
    # shellcheck disable=SC1091
    . "$CL/ports.env"
}

port_of() { local v="$1"; echo "${!v}"; }

pid_alive() { local p; p=$(cat "$1" 2>/dev/null || true); [ -n "$p" ] && kill -0 "$p" 2>/dev/null; }

wait_port() {
    local port=$1 secs=$2
    for _ in $(seq 1 $((secs * 5))); do
        python3 -c "import socket; socket.create_connection(('127.0.0.1',$port),0.2)" 2>/dev/null && return 0
        sleep 0.2
    done
    return 1
}

write_json() {
    ports
    (set -a; . "$CL/ports.env"; python3 - "$CL" <<'EOF'
import json, os, sys
cl, e = sys.argv[1], os.environ
nodes = {
    "rabbitmq": [{"name": f"tbib-r{i}@localhost", "amqp": int(e[f"R{i}_AMQP"]), "mqtt": int(e[f"R{i}_MQTT"]),
                  "pid_file": f"{cl}/rabbitmq/r{i}/pid"} for i in (1, 2, 3)],
    "nats": [{"name": f"tbib-n{i}", "client": int(e[f"N{i}_CLIENT"]), "mqtt": int(e[f"N{i}_MQTT"]),
              "pid_file": f"{cl}/nats/n{i}/pid"} for i in (1, 2, 3)],
}
with open(f"{cl}/cluster.json.tmp", "w") as f:
    json.dump(nodes, f, indent=1)
EOF
    )
    mv "$CL/cluster.json.tmp" "$CL/cluster.json"
}

# ---------------------------------------------------------------- RabbitMQ
RB="$CL/rabbitmq"

rmq_env() {
    # rmq_env I: the environment of node I (and of rabbitmqctl talking to it).
    local i=$1 d="$RB/r$1"
    export HOME="$RB/home" ERL_EPMD_PORT="$EPMD_PORT" ERL_EPMD_ADDRESS=127.0.0.1
    export RABBITMQ_NODENAME="tbib-r$i@localhost" RABBITMQ_USE_LONGNAME=false
    export RABBITMQ_NODE_IP_ADDRESS=127.0.0.1 RABBITMQ_NODE_PORT
    RABBITMQ_NODE_PORT=$(port_of "R${i}_AMQP")
    export RABBITMQ_DIST_PORT; RABBITMQ_DIST_PORT=$(port_of "R${i}_DIST")
    export RABBITMQ_CONF_ENV_FILE="$RB/rabbitmq-env.conf" RABBITMQ_CONFIG_FILE="$d/rabbitmq.conf"
    export RABBITMQ_ADVANCED_CONFIG_FILE="$d/advanced.config" RABBITMQ_ENABLED_PLUGINS_FILE="$d/enabled_plugins"
    export RABBITMQ_MNESIA_BASE="$d/mnesia" RABBITMQ_LOG_BASE="$d/log" RABBITMQ_PID_FILE="$d/pid"
    export RABBITMQ_PLUGINS_EXPAND_DIR="$d/plugins-expand"
    # loopback only; no busy-waiting schedulers on a shared box
    export RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS="-kernel inet_dist_use_interface {127,0,0,1} +sbwt none +sbwtdcpu none +sbwtdio none"
    unset ERL_FLAGS RABBITMQ_ERLANG_COOKIE
}

rmq_ctl() { local i=$1; shift; (rmq_env "$i"; "$RMQ_BIN/rabbitmqctl" -n "tbib-r$i@localhost" "$@"); }

rmq_config() {
    local i=$1 d="$RB/r$1"
    mkdir -p "$d/mnesia" "$d/log" "$RB/home"
    if [ ! -f "$RB/home/.erlang.cookie" ]; then
        python3 -c 'import secrets; print(secrets.token_hex(20).upper(), end="")' > "$RB/home/.erlang.cookie"
        chmod 400 "$RB/home/.erlang.cookie"
    fi
    : > "$RB/rabbitmq-env.conf"
    echo '[rabbitmq_mqtt].' > "$d/enabled_plugins"
    echo '[].' > "$d/advanced.config"
    cat > "$d/rabbitmq.conf" <<EOF
# written by scripts/cluster.sh
listeners.tcp.1 = 127.0.0.1:$(port_of "R${i}_AMQP")
mqtt.listeners.tcp.1 = 127.0.0.1:$(port_of "R${i}_MQTT")
mqtt.allow_anonymous = true
mqtt.vhost = /
mqtt.exchange = amq.topic
loopback_users = none
cluster_partition_handling = pause_minority
cluster_formation.peer_discovery_backend = classic_config
cluster_formation.classic_config.nodes.1 = tbib-r1@localhost
cluster_formation.classic_config.nodes.2 = tbib-r2@localhost
cluster_formation.classic_config.nodes.3 = tbib-r3@localhost
vm_memory_high_watermark.relative = 0.15
disk_free_limit.absolute = 100MB
log.console = false
log.file.level = warning
EOF
}

rmq_start() {
    local i=$1
    if pid_alive "$RB/r$i/pid"; then return 0; fi
    rmq_config "$i"
    log "starting RabbitMQ node tbib-r$i@localhost (mqtt 127.0.0.1:$(port_of "R${i}_MQTT"))"
    (rmq_env "$i"; setsid nohup "$RMQ_BIN/rabbitmq-server" >"$RB/r$i/stdout.log" 2>&1 < /dev/null &)
}

rmq_wait() {
    local i=$1
    rmq_ctl "$i" -q wait --timeout 120 "$RB/r$i/pid" >/dev/null 2>&1 && rmq_ctl "$i" -q await_startup --timeout 180 >/dev/null 2>&1 || {
        tail -n 30 "$RB/r$i/stdout.log" >&2; die "RabbitMQ node tbib-r$i did not start (logs: $RB/r$i/log)"; }
}

rmq_clustered() { rmq_ctl 1 -q cluster_status --formatter json 2>/dev/null | python3 -c '
import json, sys; s = json.load(sys.stdin); n = sys.argv[1]
sys.exit(0 if n in s.get("running_nodes", []) else 1)' "tbib-r$1@localhost"; }

rmq_up() {
    require_pkg rabbitmq-server "$RMQ_BIN/rabbitmq-server"
    ports
    if [ -d "$RB/r1/mnesia/tbib-r1@localhost" ]; then
        # a cluster that existed: start every missing node at once (a node that was not the last to stop waits for
        # its peers before it boots)
        for i in "${NODES[@]}"; do rmq_start "$i"; done
        for i in "${NODES[@]}"; do rmq_wait "$i"; done
    else
        # first formation: the seed first, then the others (classic peer discovery finds it): no two would-be seeds
        rmq_start 1; rmq_wait 1
        rmq_start 2; rmq_start 3; rmq_wait 2; rmq_wait 3
    fi
    for i in 2 3; do
        if ! rmq_clustered "$i"; then
            log "tbib-r$i@localhost is not in the cluster: joining it to tbib-r1@localhost"
            rmq_ctl "$i" -q stop_app; rmq_ctl "$i" -q join_cluster tbib-r1@localhost; rmq_ctl "$i" -q start_app
        fi
    done
    write_json
    "$PY" -m teleconsult.bench.broker_cluster declare rabbitmq >&2 || die "declaring the quorum queue failed"
    log "RabbitMQ cluster up: mqtt://127.0.0.1:$R1_MQTT, :$R2_MQTT, :$R3_MQTT"
}

rmq_down() {
    [ -f "$CL/ports.env" ] || return 0
    ports
    # RabbitMQ removes its pid file as soon as it starts stopping: remember the pids, then wait for them
    local i p pids=()
    for i in "${NODES[@]}"; do
        if pid_alive "$RB/r$i/pid"; then
            p=$(cat "$RB/r$i/pid"); pids+=("$i:$p")
            kill "$p" 2>/dev/null || true  # SIGTERM: RabbitMQ's orderly shutdown
        fi
    done
    for entry in "${pids[@]}"; do
        i=${entry%%:*}; p=${entry#*:}
        for _ in $(seq 1 300); do kill -0 "$p" 2>/dev/null || break; sleep 0.2; done
        if kill -0 "$p" 2>/dev/null; then log "tbib-r$i did not stop in 60 s: kill -9"; kill -9 "$p" 2>/dev/null || true; fi
        log "RabbitMQ node tbib-r$i stopped"
    done
    # our own epmd (ERL_EPMD_PORT), never the machine's on 4369
    (export ERL_EPMD_PORT="$EPMD_PORT"; epmd_bin=$(ls /usr/lib/erlang/erts-*/bin/epmd 2>/dev/null | head -n1)
     if [ -n "$epmd_bin" ]; then "$epmd_bin" -port "$EPMD_PORT" -kill >/dev/null 2>&1 || true; fi)
}

# ---------------------------------------------------------------- NATS
NT="$CL/nats"
NATS_BIN=/usr/sbin/nats-server

nats_config() {
    local i=$1 d="$NT/n$1" routes=()
    mkdir -p "$d/js"
    for j in "${NODES[@]}"; do [ "$j" != "$i" ] && routes+=("\"nats-route://127.0.0.1:$(port_of "N${j}_ROUTE")\""); done
    cat > "$d/nats.conf" <<EOF
# written by scripts/cluster.sh
server_name: tbib-n$i
listen: 127.0.0.1:$(port_of "N${i}_CLIENT")
pid_file: "$d/pid"
log_file: "$d/nats.log"
jetstream { store_dir: "$d/js", max_memory_store: 64MB, max_file_store: 4GB }
cluster { name: tbib, listen: 127.0.0.1:$(port_of "N${i}_ROUTE"), routes: [$(IFS=,; echo "${routes[*]}")] }
mqtt { listen: 127.0.0.1:$(port_of "N${i}_MQTT"), stream_replicas: 3 }
EOF
}

nats_start() {
    local i=$1
    if pid_alive "$NT/n$i/pid"; then return 0; fi
    nats_config "$i"
    log "starting NATS node tbib-n$i (mqtt 127.0.0.1:$(port_of "N${i}_MQTT"))"
    (setsid nohup "$NATS_BIN" -c "$NT/n$i/nats.conf" >"$NT/n$i/stdout.log" 2>&1 < /dev/null &)
}

nats_up() {
    require_pkg nats-server "$NATS_BIN"
    ports
    for i in "${NODES[@]}"; do nats_start "$i"; done
    for i in "${NODES[@]}"; do
        wait_port "$(port_of "N${i}_MQTT")" 60 || { tail -n 30 "$NT/n$i/nats.log" >&2; die "NATS node tbib-n$i did not start"; }
    done
    write_json
    "$PY" -m teleconsult.bench.broker_cluster declare nats >&2 || die "declaring the JetStream stream failed"
    log "NATS cluster up: mqtt://127.0.0.1:$N1_MQTT, :$N2_MQTT, :$N3_MQTT"
}

nats_down() {
    [ -f "$CL/ports.env" ] || return 0
    for i in "${NODES[@]}"; do
        if pid_alive "$NT/n$i/pid"; then
            local p; p=$(cat "$NT/n$i/pid"); kill "$p" 2>/dev/null || true
            for _ in $(seq 1 50); do kill -0 "$p" 2>/dev/null || break; sleep 0.1; done
            log "NATS node tbib-n$i stopped"
        fi
    done
}

# ---------------------------------------------------------------- commands
status() {
    [ -f "$CL/ports.env" ] || { echo "rabbitmq cluster: never started"; echo "nats cluster: never started"; return 0; }
    ports
    for i in "${NODES[@]}"; do
        if pid_alive "$RB/r$i/pid"; then s=running; else s=stopped; fi
        echo "rabbitmq tbib-r$i: $s mqtt://127.0.0.1:$(port_of "R${i}_MQTT") amqp://127.0.0.1:$(port_of "R${i}_AMQP")"
    done
    for i in "${NODES[@]}"; do
        if pid_alive "$NT/n$i/pid"; then s=running; else s=stopped; fi
        echo "nats tbib-n$i: $s mqtt://127.0.0.1:$(port_of "N${i}_MQTT") nats://127.0.0.1:$(port_of "N${i}_CLIENT")"
    done
}

what="${2:-all}"
case "${1:-status}" in
    up|down)
        case "$what" in
            all) if [ "$1" = up ]; then rmq_up; nats_up; else nats_down; rmq_down; fi ;;
            rabbitmq) "rmq_$1" ;;
            nats) "nats_$1" ;;
            *) echo "usage: $0 $1 [all|rabbitmq|nats]" >&2; exit 2 ;;
        esac ;;
    status) status ;;
    *) echo "usage: $0 up|down [all|rabbitmq|nats] | status" >&2; exit 2 ;;
esac
