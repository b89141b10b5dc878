#!/usr/bin/env bash
# Issue 12's target: token logins against password logins, for
# BENCHMARKS.md ("Token logins (issue 12)"), medians of RUNS runs, the
# variants interleaved run by run.
#
#   bash benches/token_logins.sh
#   RUNS=1 N=1000 PW_NS="50 100" bash benches/token_logins.sh   (a quick try)
#   OLD=path/to/old/neochat-server bash benches/token_logins.sh
#       (the token storm on that build too, interleaved run by run)
#
#   - token: N accounts (default 10,000) log in at once with `T` and a token
#     (`neochat-bench logins --token`) while a chat pair exchanges 500
#     messages/s in its own room (#pair): storm seconds and the pair's p99 quiet and
#     during the storm. The server runs at bcrypt cost 4: setup logs every
#     account in once with its password to get its token, and a token
#     login never runs bcrypt, so the cost changes setup only.
#   - password: the same storm with passwords at bcrypt cost 12, at the
#     sizes PW_NS (default 200 and 400: 10,000 at cost 12 is 20-40 minutes
#     on 2 cores), to show the time is linear in N and extrapolate to N.
#     The accounts are created at cost 4 first; the setup of each run logs
#     them in once at cost 12 (the first re-hashes them at 12), so every
#     storm checks cost-12 hashes.
#
#   BENCH_FLAGS=--pair-normal bash benches/token_logins.sh
#       (the chat pair at normal priority instead of real-time)
#
# A fresh server process for every storm; databases on tmpfs (/dev/shm).
# Ports 29720-29722. Raw JSON of every run is kept in $KEEP if set.
set -euo pipefail
cd "$(dirname "$0")/.."
RUNS=${RUNS:-3}
N=${N:-10000}
PW_NS=${PW_NS:-200 400}
QUIET=${QUIET:-3}
cargo build --release --bins >/dev/null
T=${CARGO_TARGET_DIR:-target}/release
BENCH=$T/neochat-bench
SERVER=$T/neochat-server
work=$(mktemp -d /dev/shm/neochat-tokens.XXXXXX)
res=$work/results
mkdir -p "$res"
spid=
cleanup() {
    if [ -n "$spid" ]; then kill "$spid" 2>/dev/null || true; fi
    if [ -n "${KEEP:-}" ]; then cp -r "$res" "$KEEP"; fi
    rm -rf "$work"
}
trap cleanup EXIT

# start NAME PORT flags...: a server on database $work/NAME.db (kept across
# restarts of NAME), log $work/NAME.log.
start() {
    local name=$1 port=$2; shift 2
    touch "$work/$name.log"
    local seen; seen=$(wc -l <"$work/$name.log")
    "${SRV:-$SERVER}" --listen 127.0.0.1:"$port" --db "$work/$name.db" "$@" 2>>"$work/$name.log" &
    spid=$!
    for _ in $(seq 100); do
        tail -n +"$((seen + 1))" "$work/$name.log" | grep -q "^listening on 127.0.0.1:$port" && return
        sleep 0.1
    done
    echo "$name did not start:" >&2; tail -3 "$work/$name.log" >&2; exit 1
}
stop() { kill "$spid"; wait "$spid" 2>/dev/null || true; spid=; }
# bench FILE PORT args...: one run, its JSON appended to $res/FILE.
bench() {
    local file=$1 port=$2; shift 2
    # shellcheck disable=SC2086
    "$BENCH" --json --target "127.0.0.1:$port" --setup-timeout 1800 ${BENCH_FLAGS:-} "$@" >>"$res/$file"
}

# Room for N storm connections and the pair; a login may wait for its
# bcrypt check far longer than the default 60 s at cost 12.
COMMON="--rate off --max-clients 15000 --max-auth-queue off --login-timeout 1800"
echo "# $(date -u +%F), $(nproc) cores, $(uname -r), RUNS=$RUNS, N=$N, PW_NS=$PW_NS"
echo "# server: $SERVER ($(git rev-parse --short HEAD)); ulimit -n $(ulimit -n), hard $(ulimit -Hn)"
echo "# load at start: $(cut -d' ' -f1-3 /proc/loadavg)"

# The password accounts, created at cost 4 (re-hashed at 12 on first login).
max_pw=$(tr ' ' '\n' <<<"$PW_NS" | sort -n | tail -1)
start pw 29721 $COMMON --bcrypt-cost 4
"$BENCH" --target 127.0.0.1:29721 --prefix pw --setup-timeout 1800 \
    logins -n "$max_pw" --no-pair >/dev/null
stop

for run in $(seq "$RUNS"); do
    start tok 29720 $COMMON --bcrypt-cost 4
    bench token 29720 --prefix tok --room pair logins -n "$N" --token --quiet "$QUIET"
    stop
    if [ -n "${OLD:-}" ]; then
        SRV=$OLD start tok-old 29722 $COMMON --bcrypt-cost 4
        bench token.old 29722 --prefix tok --room pair logins -n "$N" --token --quiet "$QUIET"
        stop
    fi
    for n in $PW_NS; do
        start pw 29721 $COMMON --bcrypt-cost 12
        bench "pw.$n" 29721 --prefix pw --room pair logins -n "$n" --quiet "$QUIET"
        stop
    done
    echo "# run $run done, load $(cut -d' ' -f1-3 /proc/loadavg)"
done

python3 - "$res" "$N" $PW_NS <<'EOF'
import json, statistics, sys
res, n, sizes = sys.argv[1], int(sys.argv[2]), [int(s) for s in sys.argv[3:]]
def load(f):
    return [json.loads(l) for l in open(f"{res}/{f}") if l.strip()]
def med(rows, k):
    return statistics.median(r[k] for r in rows)
def spread(rows, k, fmt="{:.2f}"):
    v = sorted(r[k] for r in rows)
    return f"{fmt.format(statistics.median(v))} ({fmt.format(v[0])}-{fmt.format(v[-1])})"
print("| storm | N | storm s | logins/s | pair p99 quiet, us | pair p99 storm, us | storm/quiet |")
print("|---|---:|---:|---:|---:|---:|---:|")
rows = {"token": load("token")}
try:
    rows["token.old"] = load("token.old")
except FileNotFoundError:
    pass
for s in sizes:
    rows[s] = load(f"pw.{s}")
for key, r in rows.items():
    for x in r:
        x["ratio"] = x["storm_p99_us"] / x["quiet_p99_us"] if x["quiet_p99_us"] else float("nan")
    label = {"token": "token", "token.old": "token, OLD build"}.get(key, "password, cost 12")
    size = n if key in ("token", "token.old") else key
    print(f"| {label} ({len(r)} runs) | {size:,} | {spread(r, 'storm_seconds')} | "
          f"{spread(r, 'logins_per_sec', '{:.0f}')} | {spread(r, 'quiet_p99_us', '{:.0f}')} | "
          f"{spread(r, 'storm_p99_us', '{:.0f}')} | {spread(r, 'ratio')}x |")
# Linear in N: seconds per login at each size, extrapolated to N.
per = [med(rows[s], "storm_seconds") / s for s in sizes]
print()
for s, p in zip(sizes, per):
    print(f"password, cost 12: {p * 1000:.1f} ms per login at N={s}")
pw_n = statistics.median(per) * n
tok = med(rows["token"], "storm_seconds")
print(f"password, cost 12, extrapolated to N={n}: {pw_n:.0f} s ({statistics.median(per) * 1000:.1f} ms x {n})")
print(f"token storm, N={n}: {tok:.2f} s; password / token: {pw_n / tok:.0f}x")
EOF
