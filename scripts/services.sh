#!/usr/bin/env bash
# tbib services for tests, benchmarks and the demo: a PostgreSQL cluster with TimescaleDB, a Mosquitto broker and a
# coturn TURN server of the project's own (own data dir, own ports, own config). Never touches the machine's default
# services.
#
#   scripts/services.sh up [postgres|mosquitto|turn]     start what is missing (idempotent), print shell exports
#   scripts/services.sh down [postgres|mosquitto|turn]   stop only what this script started
#   scripts/services.sh status   say what runs, with URLs
#   scripts/services.sh env      print the exports (TBIB_TEST_DSN, TBIB_TEST_MQTT_URL, TBIB_TIMESCALEDB,
#                                TBIB_TEST_TURN_URL, TBIB_TEST_TURN_SECRET)
#   scripts/services.sh timescaledb   build/install TimescaleDB only
#   scripts/services.sh cluster up|down|status [all|rabbitmq|nats]   3-node broker clusters (scripts/cluster.sh)
#   scripts/services.sh pgcluster up|down|status   PostgreSQL failover pair: Patroni + etcd + HAProxy (scripts/pgcluster.sh)
#
# TBIB_TEST_DSN / TBIB_TEST_MQTT_URL / TBIB_TEST_TURN_URL (+ TBIB_TEST_TURN_SECRET), when set, name existing
# services: this script then starts nothing for them.
# TBIB_CACHE_DIR (default: <repo>/.cache) holds state; the TimescaleDB build is cached in ${XDG_CACHE_HOME:-~/.cache}/tbib.
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
CACHE="${TBIB_CACHE_DIR:-$REPO/.cache}"
STATE="$CACHE/services"
BUILD_CACHE="${XDG_CACHE_HOME:-$HOME/.cache}/tbib"
PGDATA_DIR="$STATE/pgdata"
PGRUN="$STATE/pgrun"
MQ_DIR="$STATE/mosquitto"
TURN_DIR="$STATE/coturn"
mkdir -p "$STATE" "$BUILD_CACHE"

log() { printf 'services: %s\n' "$*" >&2; }
die() { printf 'services: error: %s\n' "$*" >&2; exit 1; }

is_root() { [ "$(id -u)" = 0 ]; }

apt_install() {
    # apt_install PKG...: install Debian packages when missing (root only).
    local missing=()
    for p in "$@"; do dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p"); done
    [ ${#missing[@]} -eq 0 ] && return 0
    is_root || die "missing Debian packages: ${missing[*]} (run as root or install them: apt-get install ${missing[*]})"
    log "apt-get install ${missing[*]}"
    if ! DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${missing[@]}" >&2; then
        apt-get update -q >&2
        DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${missing[@]}" >&2
    fi
}

free_port() {
    python3 - <<'EOF'
import socket
s = socket.socket()
s.bind(("127.0.0.1", 0))
print(s.getsockname()[1])
s.close()
EOF
}

# ---------------------------------------------------------------- PostgreSQL
pg_bindir() {
    local major
    if command -v pg_config >/dev/null 2>&1 && [ -x "$(pg_config --bindir)/initdb" ]; then
        pg_config --bindir; return
    fi
    major=$(ls /usr/lib/postgresql 2>/dev/null | sort -n | tail -n 1 || true)
    [ -n "$major" ] && [ -x "/usr/lib/postgresql/$major/bin/initdb" ] && { echo "/usr/lib/postgresql/$major/bin"; return; }
    return 1
}

ensure_postgres() {
    if ! pg_bindir >/dev/null; then apt_install postgresql; fi
    PGBIN=$(pg_bindir) || die "no PostgreSQL server binaries found"
    PGMAJOR=$("$PGBIN/postgres" --version | sed -E 's/.* ([0-9]+)(\.[0-9]+)?.*/\1/')
}

run_as_pg() {
    if is_root; then runuser -u postgres -- "$@"; else "$@"; fi
}

# TimescaleDB (Apache-2 edition) from Debian 13's source package, built against the local PostgreSQL major.
timescaledb_installed() {
    [ -f "/usr/lib/postgresql/$PGMAJOR/lib/timescaledb.so" ] && \
        [ -f "/usr/share/postgresql/$PGMAJOR/extension/timescaledb.control" ]
}

build_timescaledb() {
    ensure_postgres
    if timescaledb_installed; then return 0; fi
    is_root || { log "TimescaleDB is not installed and we are not root: cannot build it"; return 1; }
    local t0 apt_dir src build_dir
    t0=$(date +%s)
    apt_dir="$BUILD_CACHE/apt"
    build_dir="$BUILD_CACHE/timescaledb-pg$PGMAJOR"
    if [ ! -f "$build_dir/.built" ]; then
        apt_install "postgresql-server-dev-$PGMAJOR" cmake gcc make dpkg-dev libssl-dev
        mkdir -p "$apt_dir/lists/partial" "$apt_dir/cache/archives/partial" "$apt_dir/src"
        # A private apt configuration: our own sources list and state dirs; the system's sources are untouched.
        printf 'deb-src [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] http://deb.debian.org/debian trixie main\n' \
            > "$apt_dir/sources.list"
        local aptopts=(-o "Dir::Etc::SourceList=$apt_dir/sources.list" -o "Dir::Etc::SourceParts=/dev/null"
                       -o "Dir::State::Lists=$apt_dir/lists" -o "Dir::Cache=$apt_dir/cache"
                       -o "APT::Sandbox::User=root" -q)
        log "fetching Debian source package timescaledb (private apt config in $apt_dir)"
        apt-get "${aptopts[@]}" update >&2
        (cd "$apt_dir/src" && apt-get "${aptopts[@]}" source --download-only timescaledb >&2)
        src=$(ls "$apt_dir"/src/timescaledb_*.orig.tar.* | sort | tail -n 1)
        [ -n "$src" ] || die "timescaledb source tarball not found"
        rm -rf "$build_dir" && mkdir -p "$build_dir"
        tar -xf "$src" -C "$build_dir" --strip-components=1
        log "building TimescaleDB (Apache-2 edition) against PostgreSQL $PGMAJOR"
        (cd "$build_dir" && ./bootstrap -DREGRESS_CHECKS=OFF -DTAP_CHECKS=OFF -DWARNINGS_AS_ERRORS=OFF -DAPACHE_ONLY=ON \
            -DPG_CONFIG="/usr/lib/postgresql/$PGMAJOR/bin/pg_config" >&2 && make -C build -j"$(nproc)" >&2)
        touch "$build_dir/.built"
    fi
    make -C "$build_dir/build" install >&2
    log "TimescaleDB ready in $(( $(date +%s) - t0 )) s"
}

pg_running() { [ -f "$PGDATA_DIR/postmaster.pid" ] && run_as_pg "$PGBIN/pg_ctl" -D "$PGDATA_DIR" status >/dev/null 2>&1; }

pg_up() {
    if [ -n "${TBIB_TEST_DSN:-}" ]; then log "using TBIB_TEST_DSN (external PostgreSQL)"; return 0; fi
    ensure_postgres
    local tsdb=1
    if ! build_timescaledb; then
        tsdb=0
        log "WARNING: TimescaleDB unavailable: falling back to plain PostgreSQL $PGMAJOR"
    fi
    if pg_running; then return 0; fi
    if [ ! -f "$PGDATA_DIR/PG_VERSION" ]; then
        # initdb into a temporary directory renamed into place when complete: an interrupted first start (Ctrl-C in
        # the demo, a killed CI job) never leaves a half-made cluster that every later start would trip over.
        rm -rf "$PGDATA_DIR" "$PGDATA_DIR.init"
        mkdir -p "$PGDATA_DIR.init" "$PGRUN"
        is_root && chown postgres: "$PGDATA_DIR.init" "$PGRUN" && chmod 700 "$PGDATA_DIR.init"
        run_as_pg "$PGBIN/initdb" -D "$PGDATA_DIR.init" -U postgres --auth=trust -E UTF8 --locale=C.UTF-8 >/dev/null
        mv "$PGDATA_DIR.init" "$PGDATA_DIR"
    fi
    local port
    port=$(cat "$STATE/pg.port" 2>/dev/null || free_port)
    echo "$port" > "$STATE/pg.port"
    mkdir -p "$PGRUN"; is_root && chown postgres: "$PGRUN"
    {
        echo "# written by scripts/services.sh"
        echo "port = $port"
        echo "listen_addresses = '127.0.0.1'"
        echo "unix_socket_directories = '$PGRUN'"
        echo "max_connections = 200"
        echo "shared_buffers = 256MB"
        echo "max_wal_size = 2GB"
        echo "timescaledb.telemetry_level = off"
        [ "$tsdb" = 1 ] && echo "shared_preload_libraries = 'timescaledb'"
    } > "$STATE/pg-tbib.conf"
    cp "$STATE/pg-tbib.conf" "$PGDATA_DIR/tbib.conf"
    is_root && chown postgres: "$PGDATA_DIR/tbib.conf"
    grep -q "^include_if_exists = 'tbib.conf'" "$PGDATA_DIR/postgresql.conf" || \
        echo "include_if_exists = 'tbib.conf'" >> "$PGDATA_DIR/postgresql.conf"
    run_as_pg "$PGBIN/pg_ctl" -D "$PGDATA_DIR" -l "$PGDATA_DIR/server.log" -w -t 60 start >/dev/null || {
        tail -n 20 "$PGDATA_DIR/server.log" >&2; die "PostgreSQL did not start"; }
    echo "$tsdb" > "$STATE/pg.timescaledb"
    log "PostgreSQL $PGMAJOR on 127.0.0.1:$port (timescaledb=$tsdb)"
}

pg_down() {
    ensure_postgres
    if pg_running; then run_as_pg "$PGBIN/pg_ctl" -D "$PGDATA_DIR" -m fast -w stop >/dev/null; log "PostgreSQL stopped"; fi
}

# ---------------------------------------------------------------- Mosquitto
mq_pid() { cat "$MQ_DIR/mosquitto.pid" 2>/dev/null || true; }
mq_running() { local p; p=$(mq_pid); [ -n "$p" ] && kill -0 "$p" 2>/dev/null; }

mq_up() {
    if [ -n "${TBIB_TEST_MQTT_URL:-}" ]; then log "using TBIB_TEST_MQTT_URL (external broker)"; return 0; fi
    command -v mosquitto >/dev/null 2>&1 || [ -x /usr/sbin/mosquitto ] || apt_install mosquitto
    local bin; bin=$(command -v mosquitto || echo /usr/sbin/mosquitto)
    if mq_running; then return 0; fi
    mkdir -p "$MQ_DIR/data"
    is_root && chown -R mosquitto: "$MQ_DIR" 2>/dev/null || true
    local port; port=$(cat "$STATE/mqtt.port" 2>/dev/null || free_port)
    echo "$port" > "$STATE/mqtt.port"
    {
        cat "$REPO/config/mosquitto/tbib.conf"
        echo
        echo "# written by scripts/services.sh for tests"
        echo "pid_file $MQ_DIR/mosquitto.pid"
        echo "persistence_location $MQ_DIR/data/"
        echo "log_dest file $MQ_DIR/mosquitto.log"
        echo "listener $port 127.0.0.1"
        echo "allow_anonymous true"
    } > "$MQ_DIR/mosquitto.conf"
    "$bin" -d -c "$MQ_DIR/mosquitto.conf"
    for _ in $(seq 1 50); do
        if python3 -c "import socket,sys; socket.create_connection(('127.0.0.1',$port),0.2)" 2>/dev/null; then
            log "Mosquitto on 127.0.0.1:$port"; return 0; fi
        sleep 0.1
    done
    tail -n 20 "$MQ_DIR/mosquitto.log" >&2 || true
    die "Mosquitto did not start"
}

mq_down() {
    if mq_running; then kill "$(mq_pid)"; log "Mosquitto stopped"; fi
    rm -f "$MQ_DIR/mosquitto.pid"
}

# ---------------------------------------------------------------- coturn (TURN relay for the call tests)
# Plain TURN over UDP and TCP on one loopback port, REST-API credentials (use-auth-secret) with a secret generated once
# and kept in $TURN_DIR/secret: the signaling server of a test gets the same secret (TBIB_TEST_TURN_SECRET).
# allow-loopback-peers: every peer of a test is on 127.0.0.1 (never in a deployment: docs/teleconsultation.md §5).
turn_pid() { cat "$TURN_DIR/turnserver.pid" 2>/dev/null || true; }
turn_running() { local p; p=$(turn_pid); [ -n "$p" ] && kill -0 "$p" 2>/dev/null; }

free_udp_tcp_port() {
    python3 - <<'EOF'
import socket
for _ in range(50):
    t = socket.socket(); t.bind(("127.0.0.1", 0)); port = t.getsockname()[1]
    u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        u.bind(("127.0.0.1", port))
    except OSError:
        continue
    finally:
        u.close(); t.close()
    print(port); break
EOF
}

turn_up() {
    if [ -n "${TBIB_TEST_TURN_URL:-}" ]; then log "using TBIB_TEST_TURN_URL (external TURN server)"; return 0; fi
    command -v turnserver >/dev/null 2>&1 || [ -x /usr/bin/turnserver ] || apt_install coturn
    local bin; bin=$(command -v turnserver || echo /usr/bin/turnserver)
    if turn_running; then return 0; fi
    mkdir -p "$TURN_DIR"; chmod 700 "$TURN_DIR"
    [ -s "$TURN_DIR/secret" ] || (umask 077; python3 -c 'import secrets; print(secrets.token_urlsafe(32))' > "$TURN_DIR/secret")
    local port; port=$(cat "$STATE/turn.port" 2>/dev/null || free_udp_tcp_port)
    echo "$port" > "$STATE/turn.port"
    : > "$TURN_DIR/turnserver.conf"; chmod 600 "$TURN_DIR/turnserver.conf"   # it holds the secret
    {
        cat "$REPO/config/coturn/tbib.conf"
        echo
        echo "# written by scripts/services.sh for tests"
        echo "listening-ip=127.0.0.1"
        echo "listening-port=$port"
        echo "relay-ip=127.0.0.1"
        echo "realm=tbib.test"
        echo "server-name=tbib.test"
        echo "static-auth-secret=$(cat "$TURN_DIR/secret")"
        echo "pidfile=$TURN_DIR/turnserver.pid"
        echo "log-file=$TURN_DIR/turnserver.log"
        echo "userdb=$TURN_DIR/turndb.sqlite"
        echo "allow-loopback-peers"
    } >> "$TURN_DIR/turnserver.conf"
    rm -f "$TURN_DIR/turnserver.pid"
    "$bin" -c "$TURN_DIR/turnserver.conf" -o >/dev/null 2>&1 || true
    for _ in $(seq 1 50); do
        if turn_running && python3 -c "import socket; socket.create_connection(('127.0.0.1',$port),0.2)" 2>/dev/null; then
            log "coturn on 127.0.0.1:$port (UDP and TCP)"; return 0; fi
        sleep 0.1
    done
    tail -n 20 "$TURN_DIR/turnserver.log" >&2 || true
    die "coturn did not start"
}

turn_down() {
    if turn_running; then kill "$(turn_pid)"; log "coturn stopped"; fi
    rm -f "$TURN_DIR/turnserver.pid"
}

# ---------------------------------------------------------------- commands
print_env() {
    if [ -n "${TBIB_TEST_DSN:-}" ]; then echo "export TBIB_TEST_DSN='$TBIB_TEST_DSN'"
    elif [ -f "$STATE/pg.port" ]; then
        echo "export TBIB_TEST_DSN='postgresql://postgres@127.0.0.1:$(cat "$STATE/pg.port")/postgres'"
        echo "export TBIB_TIMESCALEDB='$(cat "$STATE/pg.timescaledb" 2>/dev/null || echo 0)'"
    fi
    if [ -n "${TBIB_TEST_MQTT_URL:-}" ]; then echo "export TBIB_TEST_MQTT_URL='$TBIB_TEST_MQTT_URL'"
    elif [ -f "$STATE/mqtt.port" ]; then echo "export TBIB_TEST_MQTT_URL='mqtt://127.0.0.1:$(cat "$STATE/mqtt.port")'"; fi
    if [ -n "${TBIB_TEST_TURN_URL:-}" ]; then
        echo "export TBIB_TEST_TURN_URL='$TBIB_TEST_TURN_URL'"
        echo "export TBIB_TEST_TURN_SECRET='${TBIB_TEST_TURN_SECRET:-}'"
    elif [ -f "$STATE/turn.port" ] && [ -s "$TURN_DIR/secret" ]; then
        echo "export TBIB_TEST_TURN_URL='turn:127.0.0.1:$(cat "$STATE/turn.port")'"
        echo "export TBIB_TEST_TURN_SECRET='$(cat "$TURN_DIR/secret")'"
    fi
}

case "${1:-status}" in
    cluster) shift; exec "$REPO/scripts/cluster.sh" "$@" ;;  # 3-node RabbitMQ and NATS clusters (docs/scale-out.md)
    pgcluster) shift; exec "$REPO/scripts/pgcluster.sh" "$@" ;;  # Patroni + etcd + HAProxy pair (docs/scale-out.md)
    up|down)
        # Optional second argument: only one of them (the demo uses the project's PostgreSQL with its own broker and
        # its own coturn).
        # One at a time: pytest-xdist workers each call `up` at start; two of them must not both initdb or both pick
        # a port for the same service. `flock -o`: the daemons started here must not inherit (and hold) the lock.
        if [ -z "${TBIB_SERVICES_LOCKED:-}" ]; then
            TBIB_SERVICES_LOCKED=1 exec flock -o "$STATE/.lock" "$0" "$@"
        fi
        case "${2:-all}" in
            all) "pg_$1"; "mq_$1"; "turn_$1" ;;
            postgres) "pg_$1" ;;
            mosquitto) "mq_$1" ;;
            turn) "turn_$1" ;;
            *) echo "usage: $0 $1 [all|postgres|mosquitto|turn]" >&2; exit 2 ;;
        esac
        [ "$1" = up ] && print_env ;;
    env) print_env ;;
    timescaledb) build_timescaledb ;;
    status)
        ensure_postgres
        if pg_running; then echo "postgresql: running on 127.0.0.1:$(cat "$STATE/pg.port")"; else echo "postgresql: stopped"; fi
        if mq_running; then echo "mosquitto: running on 127.0.0.1:$(cat "$STATE/mqtt.port")"; else echo "mosquitto: stopped"; fi
        if turn_running; then echo "coturn: running on 127.0.0.1:$(cat "$STATE/turn.port")"; else echo "coturn: stopped"; fi
        ;;
    *) echo "usage: $0 up|down [all|postgres|mosquitto|turn] | status|env|timescaledb | cluster up|down|status [all|rabbitmq|nats] | pgcluster up|down|status" >&2; exit 2 ;;
esac
