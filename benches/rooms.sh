#!/usr/bin/env bash
# Issue 11's four targets (rooms and history), measured in one run with the
# same generator (neochat-bench), medians of RUNS runs, every variant
# interleaved run by run, for BENCHMARKS.md ("Rooms and history").
#
#   OLD=/path/to/old/neochat-server bash benches/rooms.sh
#   RUNS=3 SKIP_T3=1 bash benches/rooms.sh      (SKIP_T1 .. SKIP_T4)
#
#   1. fan-out at R=1000 in one room (--room), history on: server CPU per
#      delivery (the store thread's commits after the window included)
#      against Redis 7 pub/sub's; history off beside it.
#   2. 2,000 msg/s to a 100-member room (99 receivers and the sender):
#      p99 with history on against history off.
#   3. 10,000 idle users in the lobby, after 256 messages (the ring) were
#      posted: resident bytes per user, history on (64-byte and 4,000-byte
#      messages in the ring) and off.
#   4. 2,500, 5,000 and 10,000 logins at once at bcrypt cost 4: time until
#      all are in Chatting.
#
# OLD (optional): the server of the build before issue 11 (c273f01), for the
# before figures (lobby only: it has no rooms and no history). Databases on
# tmpfs (/dev/shm) as in compare.sh; targets 1 and 2 also run DISK_RUNS
# (default 1) rounds with a history-on database in DISK_DIR (default
# /var/tmp: the real disk), since what persisting costs is the point.
# Needs redis-server and sqlite3. Ports 29710-29719 (below the ephemeral
# range, so a port left in use by an earlier run's sockets cannot collide)
# and 6420 (Redis). Raw JSON of every run is kept in $KEEP if set.
set -euo pipefail
cd "$(dirname "$0")/.."
RUNS=${RUNS:-3}
DISK_RUNS=${DISK_RUNS:-1}
DISK_DIR=${DISK_DIR:-/var/tmp}
OLD=${OLD:-}
# Sizes (smaller ones only to try the script out: the targets are at these)
R1=${R1:-1000}
K3=${K3:-10000}
NS4=${NS4:-2500 5000 10000}
DUR=${DUR:-5}
cargo build --release --bins >/dev/null
T=${CARGO_TARGET_DIR:-target}/release
BENCH=$T/neochat-bench
NEW=$T/neochat-server
work=$(mktemp -d /dev/shm/neochat-rooms.XXXXXX)
disk=$(mktemp -d "$DISK_DIR/neochat-rooms.XXXXXX")
res=$work/results
mkdir -p "$res"
declare -A spid sport
cleanup() {
    for p in "${spid[@]}"; do kill "$p" 2>/dev/null || true; done
    if [ -n "${KEEP:-}" ]; then cp -r "$res" "$KEEP"; fi
    rm -rf "$work" "$disk"
}
trap cleanup EXIT

# start NAME BINARY DBDIR PORT flags...: a NeoChat server, database
# DBDIR/NAME.db (kept across restarts of NAME), log $work/NAME.log.
start() {
    local name=$1 bin=$2 dir=$3 port=$4; shift 4
    touch "$work/$name.log"
    local seen; seen=$(wc -l <"$work/$name.log")
    "$bin" --listen 127.0.0.1:"$port" --db "$dir/$name.db" "$@" 2>>"$work/$name.log" &
    spid[$name]=$!; sport[$name]=$port
    for _ in $(seq 100); do
        tail -n +"$((seen + 1))" "$work/$name.log" | grep -q "^listening on 127.0.0.1:$port" && return
        sleep 0.1
    done
    echo "$name did not start:" >&2; tail -3 "$work/$name.log" >&2; exit 1
}
stop() { kill "${spid[$1]}"; wait "${spid[$1]}" 2>/dev/null || true; unset "spid[$1]"; }
wipe() { rm -f "$2/$1".db*; }
start_redis() {
    redis-server --port 6420 --bind 127.0.0.1 --protected-mode no --save '' --appendonly no \
        --maxclients 30000 --daemonize no --logfile "$work/redis.log" &
    spid[redis]=$!; sport[redis]=6420
    for _ in $(seq 100); do redis-cli -p 6420 ping >/dev/null 2>&1 && return; sleep 0.1; done
    echo "redis-server did not start" >&2; exit 1
}
target() {
    if [ "$1" = redis ]; then echo "redis://127.0.0.1:6420"; else echo "neochat://127.0.0.1:${sport[$1]}"; fi
}
# bench RESULTFILE NAME args...: one run against server NAME, its JSON
# appended to $res/RESULTFILE.
bench() {
    local file=$1 name=$2; shift 2
    "$BENCH" --json --target "$(target "$name")" --setup-timeout 900 "$@" >>"$res/$file"
}
stored() { sqlite3 "$1" 'SELECT count(*) FROM messages'; }
not_stored() { grep -c 'not stored' "$work/$1.log" || true; }

FAST="--bcrypt-cost 4 --rate off"
echo "# $(date -u +%F), $(nproc) cores, $(uname -r), RUNS=$RUNS, DISK_RUNS=$DISK_RUNS ($DISK_DIR)"
echo "# new: $NEW ($(git rev-parse --short HEAD)), old: ${OLD:-none}"
echo "# load at start: $(cut -d' ' -f1-3 /proc/loadavg)"

# ---------------------------------------------------------------- target 1
if [ -z "${SKIP_T1:-}" ]; then
    start on "$NEW" "$work" 29710 $FAST
    start off "$NEW" "$work" 29711 $FAST --history off
    if [ "$DISK_RUNS" -gt 0 ]; then start disk "$NEW" "$disk" 29712 $FAST; fi
    if [ -n "$OLD" ]; then start old "$OLD" "$work" 29713 $FAST; fi
    start_redis
    for run in $(seq "$RUNS"); do
        for v in on off disk old redis; do
            if [ -z "${spid[$v]:-}" ]; then continue; fi
            if [ "$v" = disk ] && [ "$run" -gt "$DISK_RUNS" ]; then continue; fi
            case $v in old | redis) room=() ;; *) room=(--room bench) ;; esac
            bench "t1.$v" "$v" --prefix t1 "${room[@]}" fanout -r "$R1" --duration "$DUR" --pid "${spid[$v]}"
        done
    done
    # Every message sent (warm-up included, plus one line-up marker a run)
    # should be in the database.
    for v in on disk; do
        if [ -z "${spid[$v]:-}" ]; then continue; fi
        dir=$work; if [ "$v" = disk ]; then dir=$disk; fi
        stop "$v"
        echo "t1 $v: $(stored "$dir/$v.db") messages stored, $(not_stored "$v") 'not stored' warnings" >>"$res/t1.stored"
    done
    for v in off old redis; do if [ -n "${spid[$v]:-}" ]; then stop "$v"; fi; done
fi

# ---------------------------------------------------------------- target 2
if [ -z "${SKIP_T2:-}" ]; then
    wipe on "$work"; wipe disk "$disk"
    start on "$NEW" "$work" 29710 $FAST
    start off "$NEW" "$work" 29711 $FAST --history off
    if [ "$DISK_RUNS" -gt 0 ]; then start disk "$NEW" "$disk" 29712 $FAST; fi
    if [ -n "$OLD" ]; then start old "$OLD" "$work" 29713 $FAST; fi
    for run in $(seq "$RUNS"); do
        for v in on off disk old; do
            if [ -z "${spid[$v]:-}" ]; then continue; fi
            if [ "$v" = disk ] && [ "$run" -gt "$DISK_RUNS" ]; then continue; fi
            case $v in old) room=() ;; *) room=(--room bench) ;; esac
            bench "t2.$v" "$v" --prefix t2 "${room[@]}" latency -r 99 --rate 2000 --duration "$DUR" --pid "${spid[$v]}"
        done
    done
    for v in on disk; do
        if [ -z "${spid[$v]:-}" ]; then continue; fi
        dir=$work; if [ "$v" = disk ]; then dir=$disk; fi
        stop "$v"
        echo "t2 $v: $(stored "$dir/$v.db") messages stored, $(not_stored "$v") 'not stored' warnings" >>"$res/t2.stored"
    done
    for v in off old; do if [ -n "${spid[$v]:-}" ]; then stop "$v"; fi; done
fi

# ---------------------------------------------------------------- target 3
# A fresh server (and database) each run, so every run starts from the same
# heap; the ring is filled after the first memory reading.
if [ -z "${SKIP_T3:-}" ]; then
    IDLE="$FAST --login-timeout 600 --max-clients 15000"
    for run in $(seq "$RUNS"); do
        for v in on on4k off old; do
            bin=$NEW; flags=(); fill=(--fill 256)
            case $v in
                on4k) fill=(--fill 256 --fill-size 4000) ;;
                off) flags=(--history off); fill=() ;;
                old) if [ -z "$OLD" ]; then continue; fi; bin=$OLD; fill=() ;;
            esac
            wipe "i$v" "$work"
            start "i$v" "$bin" "$work" 29714 $IDLE "${flags[@]}"
            bench "t3.$v" "i$v" idle -k "$K3" --pid "${spid[i$v]}" "${fill[@]}"
            stop "i$v"
        done
    done
fi

# ---------------------------------------------------------------- target 4
# One database per build with the 10,000 accounts (created 500 at a time
# before the first run), a fresh server process for each storm.
if [ -z "${SKIP_T4:-}" ]; then
    STORM="$FAST --login-timeout 900 --max-clients 15000 --max-auth-queue off"
    builds=(new); if [ -n "$OLD" ]; then builds+=(old); fi
    for b in "${builds[@]}"; do
        bin=$NEW; if [ "$b" = old ]; then bin=$OLD; fi
        start "l$b" "$bin" "$work" 29715 $STORM
        "$BENCH" --json --target "$(target "l$b")" --prefix storm --setup-timeout 900 \
            logins -n "${NS4##* }" --no-pair >/dev/null   # creates the accounts (and logs in once)
        stop "l$b"
    done
    for run in $(seq "$RUNS"); do
        for n in $NS4; do
            for b in "${builds[@]}"; do
                bin=$NEW; if [ "$b" = old ]; then bin=$OLD; fi
                start "l$b" "$bin" "$work" 29715 $STORM
                bench "t4.$b.$n" "l$b" --prefix storm logins -n "$n" --no-pair --pid "${spid[l$b]}"
                stop "l$b"
            done
        done
    done
fi

echo "# load at end: $(cut -d' ' -f1-3 /proc/loadavg)"
python3 - "$res" <<'EOF'
import json, os, statistics, sys
res = sys.argv[1]

def runs(name):
    p = os.path.join(res, name)
    if not os.path.exists(p):
        return []
    return [json.loads(l) for l in open(p) if l.strip()]

def med(rs, k):
    v = [r[k] for r in rs if r.get(k) is not None]
    return statistics.median(v) if v else float("nan")

def spread(rs, k):
    v = [r[k] for r in rs if r.get(k) is not None]
    if len(v) < 2:
        return ""
    return f" ({min(v):,.0f}-{max(v):,.0f})"

def table(title, head, rows):
    print(f"\n### {title}\n")
    print("| " + " | ".join(head) + " |")
    print("|---" + "|---:" * (len(head) - 1) + "|")
    for r in rows:
        print("| " + " | ".join(r) + " |")

def ratio(a, b):
    return f"{a / b:.2f}x" if b and b == b and a == a else "-"

names = {"on": "history on, #bench", "off": "history off, #bench",
         "disk": "history on, #bench, database on disk", "old": "c273f01, lobby",
         "redis": "Redis 7 pub/sub"}

t1 = {v: runs(f"t1.{v}") for v in names}
if any(t1.values()):
    red = med(t1["redis"], "server_cpu_ns_per_delivery")
    rows = []
    for v, rs in t1.items():
        if not rs:
            continue
        cpu = med(rs, "server_cpu_ns_per_delivery")
        dr = med(rs, "server_cpu_drained_ns_per_delivery")
        rows.append([f"{names[v]} ({len(rs)} runs)",
                     f"{med(rs, 'deliveries_per_sec'):,.0f}{spread(rs, 'deliveries_per_sec')}",
                     f"{cpu:,.0f}{spread(rs, 'server_cpu_ns_per_delivery')}",
                     f"{dr:,.0f}{spread(rs, 'server_cpu_drained_ns_per_delivery')}",
                     ratio(dr, red)])
    table(f"Target 1: fan-out, R={t1['on'][0]['receivers'] if t1['on'] else '?'}, 64 B, window 64",
          ["server", "deliveries/s", "CPU ns/delivery (window)",
           "CPU ns/delivery (until quiet)", "/ Redis"], rows)
    sent = {v: sum(r["sent"] + 1 for r in rs) for v, rs in t1.items()}
    print(f"\nmessages sent: {sent}")
    if os.path.exists(os.path.join(res, "t1.stored")):
        print(open(os.path.join(res, "t1.stored")).read().strip())

t2 = {v: runs(f"t2.{v}") for v in ["on", "off", "disk", "old"]}
if any(t2.values()):
    base = med(t2["off"], "latency_p99_us")
    rows = []
    for v, rs in t2.items():
        if not rs:
            continue
        rows.append([f"{names[v].replace('#bench', '#bench, 99 receivers')} ({len(rs)} runs)",
                     f"{med(rs, 'latency_p50_us'):,.0f}{spread(rs, 'latency_p50_us')}",
                     f"{med(rs, 'latency_p99_us'):,.0f}{spread(rs, 'latency_p99_us')}",
                     f"{med(rs, 'latency_p999_us'):,.0f}{spread(rs, 'latency_p999_us')}",
                     f"{med(rs, 'server_cpu_ns_per_delivery'):,.0f}",
                     ratio(med(rs, "latency_p99_us"), base)])
    table("Target 2: 2,000 msg/s to a 100-member room (latency in us)",
          ["server", "p50", "p99", "p99.9", "CPU ns/delivery", "p99 / history off"], rows)
    sent = {v: sum(r["sent"] + 1 for r in rs) for v, rs in t2.items()}
    print(f"\nmessages sent: {sent}")
    if os.path.exists(os.path.join(res, "t2.stored")):
        print(open(os.path.join(res, "t2.stored")).read().strip())

t3n = {"on": "history on, ring full of 64-byte messages",
       "on4k": "history on, ring full of 4,000-byte messages",
       "off": "history off (no ring)", "old": "c273f01 (no ring)"}
t3 = {v: runs(f"t3.{v}") for v in t3n}
if any(t3.values()):
    rows = []
    for v, rs in t3.items():
        if rs:
            rows.append([f"{t3n[v]} ({len(rs)} runs)",
                         f"{med(rs, 'bytes_per_connection'):,.0f}{spread(rs, 'bytes_per_connection')}",
                         f"{med(rs, 'bytes_per_connection') / 2048:.2f}",
                         f"{med(rs, 'setup_seconds'):.1f}"])
    table(f"Target 3: {next(rs for rs in t3.values() if rs)[0]['connections']:,} idle users in the lobby",
          ["server", "resident bytes per user", "/ 2 KiB", "setup s"], rows)

ns = sorted({int(f.split(".")[2]) for f in os.listdir(res) if f.startswith("t4.")})
t4 = {(b, n): runs(f"t4.{b}.{n}") for b in ["new", "old"] for n in ns}
if any(t4.values()):
    rows = []
    for b in ["new", "old"]:
        if not t4[(b, ns[0])]:
            continue
        base = med(t4[(b, ns[0])], "storm_seconds")
        for n in ns:
            rs = t4[(b, n)]
            if not rs:
                continue
            s = med(rs, "storm_seconds")
            v = [r["storm_seconds"] for r in rs]
            rows.append([f"{'this build' if b == 'new' else 'c273f01'}, {n:,} ({len(rs)} runs)",
                         f"{s:.2f} ({min(v):.2f}-{max(v):.2f})",
                         f"{s / base / (n / ns[0]):.2f}",
                         f"{med(rs, 'server_cpu_secs'):.1f}",
                         f"{med(rs, 'bytes_read') / n:,.0f}"])
    table("Target 4: N logins at once, bcrypt cost 4",
          ["build, N", "seconds until all in Chatting", f"time per login / at {ns[0]:,}",
           "server CPU s", "bytes read per login"], rows)
EOF
