#!/usr/bin/env bash
# Side-by-side runs of NeoChat and Redis 7 pub/sub with the same generator
# (neochat-bench), medians of RUNS runs, for BENCHMARKS.md.
#
#   bash benches/compare.sh            # RUNS=5 by default
#   RUNS=3 SKIP_LOGINS=1 bash benches/compare.sh   (also SKIP_FANOUT=1,
#                                      SKIP_IDLE=1, SKIP_TLS=1)
#
# Needs redis-server (built with TLS, as Debian's is) and openssl on PATH
# (Debian: apt-get install redis-server openssl). Both servers keep their
# data on tmpfs (/dev/shm): these runs measure fan-out, latency and memory,
# not the disk. Ports 59610 (NeoChat), 6410 (Redis) and 6411 (Redis TLS).
# Over TLS both servers use an ECDSA P-256 certificate and the generator's
# defaults (TLS 1.3, AES-256-GCM with either).
set -euo pipefail
cd "$(dirname "$0")/.."
RUNS=${RUNS:-5}
cargo build --release --bins >/dev/null
BENCH=target/release/neochat-bench
SERVER=target/release/neochat-server
work=$(mktemp -d /dev/shm/neochat-compare.XXXXXX)
pids=()
cleanup() { kill "${pids[@]}" 2>/dev/null || true; rm -rf "$work"; }
trap cleanup EXIT

start_neochat() { # extra flags...
    "$SERVER" --listen 127.0.0.1:59610 --db "$work/neochat.db" "$@" 2>"$work/neochat.log" &
    npid=$!; pids+=("$npid")
    for _ in $(seq 100); do grep -q "^listening on" "$work/neochat.log" && return; sleep 0.1; done
    echo "neochat-server did not start" >&2; exit 1
}
stop_neochat() { kill "$npid"; wait "$npid" 2>/dev/null || true; rm -f "$work"/neochat.db*; }
start_redis() { # extra flags...
    redis-server --port 6410 --bind 127.0.0.1 --protected-mode no --save '' --appendonly no \
        --maxclients 30000 --daemonize no \
        --logfile "$work/redis.log" "$@" &
    rpid=$!; pids+=("$rpid")
    for _ in $(seq 100); do redis-cli -p 6410 ping >/dev/null 2>&1 && return; sleep 0.1; done
    echo "redis-server did not start" >&2; exit 1
}
start_redis_tls() {
    openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 2 \
        -subj /CN=localhost -keyout "$work/redis.key" -out "$work/redis.crt" 2>/dev/null
    start_redis --tls-port 6411 --tls-cert-file "$work/redis.crt" --tls-key-file "$work/redis.key" \
        --tls-auth-clients no
}
stop_redis() { kill "$rpid"; wait "$rpid" 2>/dev/null || true; }

# json_field JSON KEY
field() { python3 -c 'import json,sys; print(json.loads(sys.argv[1])[sys.argv[2]])' "$1" "$2"; }
median() { python3 -c 'import sys,statistics; print(statistics.median(float(x) for x in sys.argv[1:]))' "$@"; }

run_many() { # key target scenario args...
    local key=$1; shift; local vals=()
    for _ in $(seq "$RUNS"); do
        out=$("$BENCH" --json "$@")
        vals+=("$(field "$out" "$key")")
    done
    median "${vals[@]}"
}

echo "# $(date -u +%F), $(nproc) cores, $(uname -r), RUNS=$RUNS"
printf '| %-44s | %14s | %14s | %7s |\n' "measure" "NeoChat" "Redis 7" "ratio"
printf '|%s|%s|%s|%s|\n' "$(printf -- '-%.0s' {1..46})" "$(printf -- '-%.0s' {1..16})" "$(printf -- '-%.0s' {1..16})" "$(printf -- '-%.0s' {1..9})"
row() { printf '| %-44s | %14.0f | %14.0f | %6.2fx |\n' "$1" "$2" "$3" "$(python3 -c "print($2/$3)")"; }

# fanout_rows LABEL NEOCHAT_TARGET REDIS_TARGET [--tls]: deliveries/s and
# server CPU per delivery, from the same runs.
fanout_rows() {
    local label=$1 nt=$2 dt=$3; shift 3
    for r in 100 1000; do
        local nd=() nc=() dd=() dc=()
        for _ in $(seq "$RUNS"); do
            out=$("$BENCH" --json "$@" --target "$nt" fanout -r "$r" --pid "$npid")
            nd+=("$(field "$out" deliveries_per_sec)"); nc+=("$(field "$out" server_cpu_ns_per_delivery)")
            out=$("$BENCH" --json "$@" --target "$dt" fanout -r "$r" --pid "$rpid")
            dd+=("$(field "$out" deliveries_per_sec)"); dc+=("$(field "$out" server_cpu_ns_per_delivery)")
        done
        row "$label deliveries/s, R=$r, 64 B, window 64" "$(median "${nd[@]}")" "$(median "${dd[@]}")"
        row "$label server CPU ns per delivery, R=$r" "$(median "${nc[@]}")" "$(median "${dc[@]}")"
    done
}

if [ -z "${SKIP_FANOUT:-}" ]; then
start_neochat --bcrypt-cost 4 --rate off
start_redis
fanout_rows "fan-out" neochat://127.0.0.1:59610 redis://127.0.0.1:6410
# Latency: one set of runs, both percentiles from each.
lat() { # target -> "p50s|p99s"
    local a=() b=()
    for _ in $(seq "$RUNS"); do
        out=$("$BENCH" --json --target "$1" latency -r 100 --rate 2000)
        a+=("$(field "$out" latency_p50_us)"); b+=("$(field "$out" latency_p99_us)")
    done
    echo "$(median "${a[@]}") $(median "${b[@]}")"
}
read -r n50 n99 <<<"$(lat neochat://127.0.0.1:59610)"
read -r d50 d99 <<<"$(lat redis://127.0.0.1:6410)"
row "p50 latency us, 2,000 msg/s to R=100" "$n50" "$d50"
row "p99 latency us, 2,000 msg/s to R=100" "$n99" "$d99"
stop_neochat; stop_redis
fi

if [ -z "${SKIP_TLS:-}" ]; then
start_neochat --bcrypt-cost 4 --rate off
start_redis_tls
fanout_rows "TLS fan-out" neochat://127.0.0.1:59610 redis://127.0.0.1:6411 --tls
stop_neochat; stop_redis
# Idle over TLS: a fresh server each run.
nv=(); dv=()
for _ in $(seq "$RUNS"); do
    start_neochat --bcrypt-cost 4 --login-timeout 600 --max-clients 20000
    out=$("$BENCH" --json --tls --target neochat://127.0.0.1:59610 idle -k 10000 --pid "$npid")
    nv+=("$(field "$out" bytes_per_connection)"); stop_neochat
    start_redis_tls
    out=$("$BENCH" --json --tls --target redis://127.0.0.1:6411 idle -k 10000 --pid "$rpid")
    dv+=("$(field "$out" bytes_per_connection)"); stop_redis
done
row "TLS resident bytes per idle connection, K=10,000" "$(median "${nv[@]}")" "$(median "${dv[@]}")"
fi

if [ -z "${SKIP_IDLE:-}" ]; then
# Idle memory: a fresh server each run, so every run starts from the same heap.
# 10,000 joining at once means 50 million joined notices: allow the time.
nv=(); dv=()
for _ in $(seq "$RUNS"); do
    start_neochat --bcrypt-cost 4 --login-timeout 600 --max-clients 20000
    out=$("$BENCH" --json --target neochat://127.0.0.1:59610 idle -k 10000 --pid "$npid")
    nv+=("$(field "$out" bytes_per_connection)"); stop_neochat
    start_redis
    out=$("$BENCH" --json --target redis://127.0.0.1:6410 idle -k 10000 --pid "$rpid")
    dv+=("$(field "$out" bytes_per_connection)"); stop_redis
done
row "resident bytes per idle connection, K=10,000" "$(median "${nv[@]}")" "$(median "${dv[@]}")"

# The most connections the fd limit allows (one run).
start_neochat --bcrypt-cost 4 --login-timeout 600 --max-clients 19900
out=$("$BENCH" --json --target neochat://127.0.0.1:59610 idle -k 19900 --pid "$npid")
echo
echo "NeoChat held 19,900 idle logged-in connections: $(field "$out" bytes_per_connection) bytes each (ulimit -Hn is $(ulimit -Hn))"
stop_neochat
fi

logins() { # label, server flags...
    local label=$1; shift
    start_neochat --rate off "$@"   # bcrypt cost 12, the default
    for _ in 1 2 3; do
        out=$("$BENCH" --json --target neochat://127.0.0.1:59610 logins -n 200 --quiet 10)
        echo "login storm, 200 at cost 12, $label: $(field "$out" logins_per_sec) logins/s;" \
             "pair p99 quiet $(field "$out" quiet_p99_us) us, storm $(field "$out" storm_p99_us) us"
    done
    stop_neochat
}
if [ -z "${SKIP_LOGINS:-}" ]; then
    echo
    logins "default workers ($(nproc))"
    logins "--workers 1" --workers 1
fi
