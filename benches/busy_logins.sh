#!/usr/bin/env bash
# Logins while other processes keep every CPU busy.
#
#   benches/busy_logins.sh [N] [SERVER ...]
#
# Starts one busy loop per CPU (plain `sh` loops at normal priority, like a
# build or a backup beside the server), then runs `neochat-bench logins -n N`
# (default 10) at the default bcrypt cost against each SERVER binary
# (default target/release/neochat-server), two interleaved rounds. Each
# server keeps its own database under /dev/shm, so accounts are created on
# the first round only (before the busy loops start).
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release --bins >/dev/null
N=${1:-10}
shift || true
servers=("$@")
[ ${#servers[@]} -gt 0 ] || servers=(target/release/neochat-server)
BENCH=target/release/neochat-bench
work=$(mktemp -d /dev/shm/neochat-busy.XXXXXX)
pid=
hogs=()
cleanup() {
    [ -n "$pid" ] && kill "$pid" 2>/dev/null
    [ ${#hogs[@]} -gt 0 ] && kill "${hogs[@]}" 2>/dev/null
    rm -rf "$work"
}
trap cleanup EXIT

start() { # SERVER INDEX
    "$1" --listen 127.0.0.1:59621 --db "$work/$2.db" --rate off 2>"$work/log" &
    pid=$!
    for _ in $(seq 100); do grep -q "^listening on" "$work/log" && return; sleep 0.1; done
    echo "server did not start" >&2; exit 1
}
stop() { kill "$pid"; wait "$pid" 2>/dev/null || true; pid=; }

# Accounts first, on an idle machine (a quiet round with no storm figures).
for i in "${!servers[@]}"; do
    start "${servers[$i]}" "$i"
    "$BENCH" --target 127.0.0.1:59621 logins -n "$N" --quiet 1 >/dev/null
    stop
done
for _ in $(seq "$(nproc)"); do sh -c 'while :; do :; done' & hogs+=($!); done
for round in 1 2; do
    for i in "${!servers[@]}"; do
        start "${servers[$i]}" "$i"
        echo "== round $round: ${servers[$i]}"
        "$BENCH" --target 127.0.0.1:59621 logins -n "$N" --quiet 5 2>&1 \
            | grep -E "^(storm|pair, storm|p99 ratio)|neochat-bench" || true
        stop
    done
done
