#!/usr/bin/env bash
# Registrations per second into a database on disk (not tmpfs), at bcrypt
# cost 4 so that storing, not hashing, dominates.
#
#   benches/registrations.sh [K] [SERVER ...]
#
# K (default 2000) accounts are created by `neochat-bench idle` (128
# handshakes in flight) on a fresh database; each SERVER binary (default
# target/release/neochat-server) is run three times, interleaved, and each
# run prints one line. Pass two binaries to compare builds in one run.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release --bins >/dev/null
K=${1:-2000}
shift || true
servers=("$@")
[ ${#servers[@]} -gt 0 ] || servers=(target/release/neochat-server)
BENCH=target/release/neochat-bench
work=$(mktemp -d "${TMPDIR:-/var/tmp}/neochat-registrations.XXXXXX")
pid=
cleanup() { [ -n "$pid" ] && kill "$pid" 2>/dev/null; rm -rf "$work"; }
trap cleanup EXIT

for round in 1 2 3; do
    for server in "${servers[@]}"; do
        rm -f "$work"/n.db*
        "$server" --listen 127.0.0.1:59612 --db "$work/n.db" --bcrypt-cost 4 --rate off \
            2>"$work/log" &
        pid=$!
        for _ in $(seq 100); do grep -q "^listening on" "$work/log" && break; sleep 0.1; done
        t0=$(date +%s.%N)
        "$BENCH" --target 127.0.0.1:59612 idle --pid "$pid" -k "$K" --settle 0 >/dev/null
        t1=$(date +%s.%N)
        kill "$pid"; wait "$pid" 2>/dev/null || true; pid=
        python3 -c 'import sys; k,a,b=int(sys.argv[1]),float(sys.argv[2]),float(sys.argv[3]); print(f"round {sys.argv[4]}  {sys.argv[5]}: {k/(b-a):.0f} registrations/s")' \
            "$K" "$t0" "$t1" "$round" "$server"
    done
done
