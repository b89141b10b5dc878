#!/usr/bin/env bash
# Issue 14's target: the server serves the web client to 1,000 browsers
# connecting at once without raising chat p99 beyond 2x, for BENCHMARKS.md
# ("Web client (issue 14)"): the chat pair's p99 during the burst against
# quiet, the time until every browser had its login prompt, and the
# server's peak resident memory, medians of RUNS runs.
#
#   bash benches/web.sh                      (5 runs of 1,000 browsers, https)
#   RUNS=1 BROWSERS=200 bash benches/web.sh
#   TLS=0 bash benches/web.sh                (plain http:// and ws://)
#   THREADS=2 bash benches/web.sh            (generator threads, default 8)
#   SERVER=/tmp/neochat-server-old bash benches/web.sh   (another build)
#
# Each run: a fresh release server (`--rate off`, its database in a
# temporary directory under /tmp; loopback is exempt from the per-address
# limits by default, `--exempt 127.0.0.0/8,::1`, given here explicitly), then
# `neochat-bench --tls --room pair web --browsers $BROWSERS --pid PID`: a
# pair talks at 500 messages/s in #pair for 4 s (the last 3 measured as
# quiet), then all the browsers start at once, each: GET / (TLS, ALPN
# http/1.1, a new connection), GET the page's versioned /app.js and
# /style.css (a new connection each, both at once), then /ws until the
# welcome and the `? choice` prompt, and close.
# Port 29750. Raw JSON, stderr and server log of every run are kept in
# $KEEP if set.
set -euo pipefail
cd "$(dirname "$0")/.."
RUNS=${RUNS:-5}
BROWSERS=${BROWSERS:-1000}
THREADS=${THREADS:-8}
TLS=${TLS:-1}
cargo build --release --quiet --bin neochat-server --bin neochat-bench
BIN=${CARGO_TARGET_DIR:-target}/release
SERVER=${SERVER:-$BIN/neochat-server}
base=$(mktemp -d /tmp/neochat-web-bench.XXXXXX)
tls_flag=()
if [ "$TLS" != 0 ]; then tls_flag=(--tls); fi
pid=
cleanup() {
  if [ -n "$pid" ]; then kill "$pid" 2>/dev/null || true; fi
  rm -rf "$base"
}
trap cleanup EXIT
echo "# $BROWSERS browsers, tls=$TLS, $THREADS generator threads, $RUNS runs"
echo "# load at start: $(cut -d' ' -f1-3 /proc/loadavg)"
results=()
# FLAGS: more server flags, e.g. FLAGS="--tls-workers 0" (TLS on the loop).
read -ra extra <<< "${FLAGS:-}"
# BENCH_FLAGS: more neochat-bench flags, e.g. BENCH_FLAGS=--pair-normal (the
# chat pair at normal priority instead of real-time).
read -ra bench_extra <<< "${BENCH_FLAGS:-}"
for run in $(seq 1 "$RUNS"); do
  d=$base/run$run
  mkdir -p "$d"
  "$SERVER" --listen 127.0.0.1:29750 --db "$d/n.db" --bcrypt-cost 4 \
    --rate off --exempt 127.0.0.0/8,::1 "${extra[@]}" 2>"$d/log" &
  pid=$!
  sleep 0.7
  if "$BIN/neochat-bench" --json --target 127.0.0.1:29750 "${tls_flag[@]}" --room pair "${bench_extra[@]}" \
      web --browsers "$BROWSERS" --threads "$THREADS" --pid "$pid" >"$d/out" 2>"$d/err"; then
    results+=("$(cat "$d/out")")
    python3 -c '
import json, sys
r = json.loads(sys.argv[1])
print("run %s: quiet p99 %.0f us, during p99 %.0f us (p50 %.0f, max %.0f), %.1fx; "
      "all prompted %.2f s (prompt p50 %.0f ms, p99 %.0f ms); RSS %d -> %d KiB; load %s" % (
      sys.argv[2], r["quiet_p99_us"], r["during_p99_us"], r["during_p50_us"], r["during_max_us"],
      r["p99_ratio"], r["all_prompted_secs"], r["prompt_p50_us"] / 1e3, r["prompt_p99_us"] / 1e3,
      r.get("rss_before_kib", 0), r.get("rss_peak_kib", 0), sys.argv[3]))
' "$(cat "$d/out")" "$run" "$(cut -d' ' -f1 /proc/loadavg)"
  else
    echo "run $run failed: $(cat "$d/err") $(cat "$d/out")" >&2
  fi
  kill "$pid"; wait "$pid" 2>/dev/null || true
  if [ -n "${KEEP:-}" ]; then
    mkdir -p "$KEEP"
    cp "$d/out" "$KEEP/run$run.json" 2>/dev/null || true
    cp "$d/log" "$KEEP/run$run.log"; cp "$d/err" "$KEEP/run$run.err"
  fi
  pid=
done
printf '%s\n' "${results[@]}" | python3 -c '
import json, statistics, sys
runs = [json.loads(l) for l in sys.stdin if l.strip()]
if not runs:
    sys.exit("no run succeeded")
def show(name, vals, fmt="{:.0f}"):
    print(f"{name:28s} median " + fmt.format(statistics.median(vals)) +
          " (" + ", ".join(fmt.format(v) for v in vals) + ")")
print(len(runs), "runs of", runs[0]["browsers"], "browsers,", "https" if runs[0]["tls"] else "http")
show("pair p99 quiet us", [r["quiet_p99_us"] for r in runs])
show("pair p99 during us", [r["during_p99_us"] for r in runs])
show("p99 during / quiet", [r["p99_ratio"] for r in runs], "{:.1f}x")
show("pair p50 during us", [r["during_p50_us"] for r in runs])
show("all prompted s", [r["all_prompted_secs"] for r in runs], "{:.2f}")
show("prompt p50 ms", [r["prompt_p50_us"] / 1e3 for r in runs])
show("prompt p99 ms", [r["prompt_p99_us"] / 1e3 for r in runs])
if all("rss_peak_kib" in r for r in runs):
    show("server RSS peak MiB", [r["rss_peak_kib"] / 1024 for r in runs], "{:.1f}")
    show("server RSS growth MiB", [(r["rss_peak_kib"] - r["rss_before_kib"]) / 1024 for r in runs], "{:.1f}")
show("errors", [r["errors"] for r in runs])
'
echo "# load at end: $(cut -d' ' -f1-3 /proc/loadavg)"
