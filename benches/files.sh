#!/usr/bin/env bash
# Issue 13's targets: a big upload and its download over loopback TLS, for
# BENCHMARKS.md ("Files (issue 13)"): MB/s each way, the server's resident
# memory growth, and the chat pair's p99 during the transfer against quiet,
# medians of RUNS runs.
#
#   bash benches/files.sh                 (5 runs of 1 GiB, database on disk)
#   RUNS=1 BYTES=256M bash benches/files.sh
#   DIR=/dev/shm/files-bench bash benches/files.sh   (database and files on tmpfs)
#
# Each run: a fresh server (`--max-file 2G --file-quota 8G`) with its
# database and `files/` in $DIR (default: a temporary directory under
# /tmp, a real disk here), then `neochat-bench --tls --room pair files
# --bytes $BYTES --pid PID`: a pair talks at 500 messages/s in #pair for
# 4 s (the last 3 measured as quiet), then one account `/upload`s, PUTs
# and GETs the file while the pair goes on. Port 29730.
set -euo pipefail
cd "$(dirname "$0")/.."
RUNS=${RUNS:-5}
BYTES=${BYTES:-1G}
cargo build --release --quiet --bin neochat-server --bin neochat-bench
BIN=${CARGO_TARGET_DIR:-target}/release
base=${DIR:-$(mktemp -d /tmp/neochat-files-bench.XXXXXX)}
results=()
# FLAGS: more server flags, e.g. FLAGS="--tls-workers 0" (TLS on the loop).
read -ra extra <<< "${FLAGS:-}"
# BENCH_FLAGS: more neochat-bench flags, e.g. BENCH_FLAGS=--pair-normal (the
# chat pair at normal priority instead of real-time).
read -ra bench_extra <<< "${BENCH_FLAGS:-}"
for run in $(seq 1 "$RUNS"); do
  d=$base/run$run
  rm -rf "$d"; mkdir -p "$d"
  "$BIN/neochat-server" --listen 127.0.0.1:29730 --db "$d/n.db" --bcrypt-cost 4 \
    --rate off --max-file 2G --file-quota 8G --files-max-total 16G "${extra[@]}" 2>"$d/log" &
  pid=$!
  sleep 0.7
  if "$BIN/neochat-bench" --json --target 127.0.0.1:29730 --tls --room pair "${bench_extra[@]}" \
      files --bytes "$BYTES" --pid "$pid" >"$d/out" 2>&1; then
    results+=("$(cat "$d/out")")
  else
    echo "run $run failed: $(cat "$d/out")" >&2
  fi
  kill "$pid"; wait "$pid" 2>/dev/null || true
  rm -rf "$d/files"
done
printf '%s\n' "${results[@]}" | python3 -c '
import json, statistics, sys
runs = [json.loads(l) for l in sys.stdin if l.strip()]
if not runs:
    sys.exit("no run succeeded")
def col(k, f=lambda v: v):
    v = [f(r[k]) if k in r else None for r in runs]
    return [x for x in v if x is not None]
def show(name, vals, fmt="{:.0f}"):
    print(f"{name:28s} median " + fmt.format(statistics.median(vals)) +
          " (" + ", ".join(fmt.format(v) for v in vals) + ")")
print(len(runs), "runs of", runs[0]["bytes"], "bytes")
show("upload MB/s", col("upload_mb_per_sec"))
show("download MB/s", col("download_mb_per_sec"))
growth = [(r["rss_peak_kib"] - r["rss_before_kib"]) / 1024 for r in runs if "rss_peak_kib" in r]
show("server RSS growth MiB", growth, "{:.1f}")
show("pair p99 quiet us", col("quiet_p99_us"))
show("pair p99 transfer us", col("during_p99_us"))
show("pair p99 upload us", col("upload_p99_us"))
show("pair p99 download us", col("download_p99_us"))
show("p99 transfer / quiet", [r["during_p99_us"] / r["quiet_p99_us"] for r in runs], "{:.1f}x")
'
