#!/usr/bin/env bash
# The newcomer's first run, repeatable: clone this repository into a temporary directory with empty caches and run
# `make test` there, N times in a row; print one summary line per run (JSON) and keep each run's log.
#
#   scripts/fresh-clone-check.sh [--runs N] [--keep] [--ref REF]
#
# Empty per run: the clone (no .venv, no node_modules, no .cache/), TBIB_CACHE_DIR (services state),
# XDG_CACHE_HOME (so ~/.cache/tbib — the TimescaleDB build cache — and pip's cache start empty), npm's cache.
# Not undone: Debian packages and a TimescaleDB already installed into the system PostgreSQL (the services script
# then skips the build; the first run on a new machine measures it).
# Logs: $TMPDIR/tbib-fresh-clone-<time>/run-<k>.log. Exit code: the number of failed runs (0 = all green).
set -uo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
RUNS=3
KEEP=0
REF=HEAD
while [ $# -gt 0 ]; do
    case "$1" in
        --runs) RUNS="$2"; shift 2 ;;
        --keep) KEEP=1; shift ;;
        --ref) REF="$2"; shift 2 ;;
        -h|--help) sed -n '2,12p' "$0"; exit 0 ;;
        *) echo "usage: $0 [--runs N] [--keep] [--ref REF]" >&2; exit 2 ;;
    esac
done

OUT="${TMPDIR:-/tmp}/tbib-fresh-clone-$(date -u +%Y%m%dT%H%M%SZ)"
mkdir -p "$OUT"
# Resolved once: every run tests the same commit, even if main moves while the runs go on.
sha=$(git -C "$REPO" rev-parse "$REF")
commit=$(git -C "$REPO" rev-parse --short "$REF")
failed=0
for k in $(seq 1 "$RUNS"); do
    work="$OUT/run-$k"
    log="$OUT/run-$k.log"
    git clone -q "$REPO" "$work/tbib"
    git -C "$work/tbib" checkout -q "$sha"
    mkdir -p "$work/cache" "$work/xdg-cache" "$work/npm-cache"
    start=$(date +%s)
    (
        cd "$work/tbib" || exit 1
        env -u TBIB_TEST_DSN -u TBIB_TEST_MQTT_URL -u TBIB_DATABASE_URL -u TBIB_MQTT_URL \
            TBIB_CACHE_DIR="$work/cache" XDG_CACHE_HOME="$work/xdg-cache" npm_config_cache="$work/npm-cache" \
            make test
    ) >"$log" 2>&1
    rc=$?
    took=$(( $(date +%s) - start ))
    [ "$rc" = 0 ] || failed=$((failed + 1))
    # The last pytest summary line, e.g. "==== 1402 passed, 2 failed in 512.3s (0:08:32) ====".
    summary=$(grep -E '^=+ .*(passed|failed|error).* in [0-9.]+s' "$log" | tail -n 1 | sed -E 's/^=+ //; s/ =+$//')
    tsdb=$(grep -Eo '^TimescaleDB [0-9.]+[^"]*' "$log" | tail -n 1)
    [ -n "$tsdb" ] || tsdb=$(grep -Eo 'TimescaleDB UNAVAILABLE' "$log" | tail -n 1)
    pg=$(grep -Eo '^PostgreSQL [0-9.]+' "$log" | tail -n 1)
    build=$(grep -Eo 'TimescaleDB ready in [0-9]+ s' "$log" | tail -n 1)
    printf '{"run": %d, "commit": "%s", "exit": %d, "wall_s": %d, "pytest": "%s", "postgresql": "%s", "timescaledb": "%s", "timescaledb_build": "%s", "load_after": "%s", "log": "%s"}\n' \
        "$k" "$commit" "$rc" "$took" "${summary:-no pytest summary}" "${pg:-?}" "${tsdb:-?}" "${build:-skipped (installed)}" \
        "$(cut -d' ' -f1-3 /proc/loadavg)" "$log"
    # Stop what this run's services script started (its own PostgreSQL and Mosquitto), then drop the clone.
    (cd "$work/tbib" && TBIB_CACHE_DIR="$work/cache" scripts/services.sh down >/dev/null 2>&1) || true
    [ "$KEEP" = 1 ] || rm -rf "$work"
done
exit "$failed"
