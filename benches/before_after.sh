#!/usr/bin/env bash
# Plain-TCP fan-out, server CPU per delivery and idle memory of two builds
# of neochat-server, interleaved run by run with the same generator (this
# tree's neochat-bench), medians of RUNS runs: a change's cost, measured.
#
#   bash benches/before_after.sh OLD_SERVER_BINARY [NEW_SERVER_BINARY]
#
# Ports 59620 and up; databases on tmpfs.
set -euo pipefail
cd "$(dirname "$0")/.."
OLD=$1
cargo build --release --bins >/dev/null
NEW=${2:-target/release/neochat-server}
BENCH=target/release/neochat-bench
RUNS=${RUNS:-3}
work=$(mktemp -d /dev/shm/neochat-ba.XXXXXX)
pid=
cleanup() { [ -n "$pid" ] && kill "$pid" 2>/dev/null; rm -rf "$work"; }
trap cleanup EXIT
field() { python3 -c 'import json,sys; print(json.loads(sys.argv[1])[sys.argv[2]])' "$1" "$2"; }
median() { python3 -c 'import sys,statistics; print(statistics.median(float(x) for x in sys.argv[1:]))' "$@"; }
start() { # binary port flags...
    local bin=$1 port=$2; shift 2
    rm -f "$work"/db*
    "$bin" --listen 127.0.0.1:"$port" --db "$work/db" "$@" 2>"$work/log" &
    pid=$!
    for _ in $(seq 100); do grep -q "^listening on" "$work/log" && return; sleep 0.1; done
    echo "$bin did not start" >&2; exit 1
}
stop() { kill "$pid"; wait "$pid" 2>/dev/null || true; pid=; }

declare -A vals
for run in $(seq "$RUNS"); do
    for which in old new; do
        bin=$OLD; [ "$which" = new ] && bin=$NEW
        start "$bin" 59620 --bcrypt-cost 4 --rate off
        for r in 100 1000; do
            out=$("$BENCH" --json --target 127.0.0.1:59620 --prefix "b$run" fanout -r "$r" --pid "$pid")
            vals[$which,d$r]+=" $(field "$out" deliveries_per_sec)"
            vals[$which,c$r]+=" $(field "$out" server_cpu_ns_per_delivery)"
        done
        stop
        start "$bin" 59621 --bcrypt-cost 4 --login-timeout 600 --max-clients 20000
        out=$("$BENCH" --json --target 127.0.0.1:59621 idle -k 10000 --pid "$pid")
        vals[$which,idle]+=" $(field "$out" bytes_per_connection)"
        stop
    done
done
printf '| %-40s | %12s | %12s | %7s |\n' measure before after ratio
printf '|---|---:|---:|---:|\n'
for key in d100 d1000 c100 c1000 idle; do
    case $key in
        d100) label="fan-out deliveries/s, R=100" ;;
        d1000) label="fan-out deliveries/s, R=1000" ;;
        c100) label="server CPU ns per delivery, R=100" ;;
        c1000) label="server CPU ns per delivery, R=1000" ;;
        idle) label="bytes per idle connection, K=10,000" ;;
    esac
    # shellcheck disable=SC2086
    o=$(median ${vals[old,$key]}); n=$(median ${vals[new,$key]})
    printf '| %-40s | %12.0f | %12.0f | %6.2fx |\n' "$label" "$o" "$n" "$(python3 -c "print($n/$o)")"
done
