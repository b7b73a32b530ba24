#!/usr/bin/env bash
# HAProxy for the API-node cluster (docs/scale-out.md, "API nodes"): install the Debian package when missing.
# The benchmark and tests/cluster write their own haproxy.cfg and run `haproxy -f` as a child process; the machine's
# haproxy service (if any) is neither used nor started.
#
#   scripts/haproxy.sh install   install the Debian package haproxy when missing (root; else a clear error)
#   scripts/haproxy.sh path      print the haproxy binary
set -euo pipefail

log() { printf 'haproxy: %s\n' "$*" >&2; }
die() { printf 'haproxy: error: %s\n' "$*" >&2; exit 1; }

find_bin() { command -v haproxy 2>/dev/null || { [ -x /usr/sbin/haproxy ] && echo /usr/sbin/haproxy; } || true; }

install() {
    [ -n "$(find_bin)" ] && return 0
    [ "$(id -u)" = 0 ] || die "haproxy is not installed (run as root, or: apt-get install haproxy)"
    log "apt-get install haproxy"
    # No service start from the package's postinst: only our own `haproxy -f` children run.
    local policy=/usr/sbin/policy-rc.d created=0
    if [ ! -e "$policy" ]; then printf '#!/bin/sh\nexit 101\n' >"$policy"; chmod +x "$policy"; created=1; fi
    trap '[ "$created" = 1 ] && rm -f "$policy"' EXIT
    if ! DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends haproxy >&2; then
        apt-get update -q >&2
        DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends haproxy >&2
    fi
    [ -n "$(find_bin)" ] || die "haproxy is still missing after apt-get install"
}

case "${1:-}" in
    install) install ;;
    path) b="$(find_bin)"; [ -n "$b" ] || die "haproxy is not installed (scripts/haproxy.sh install)"; echo "$b" ;;
    *) die "usage: $0 install|path" ;;
esac
