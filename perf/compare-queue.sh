#!/usr/bin/env bash
# perf/compare-queue.sh — does a large queue slow ternd down? In one run: ternd with an empty spool
# and ternd with a spool of QUEUE deferred messages (written by spoolfill), alternately, each taking
# `ternbench send --sessions 100 --size 1000`; plus start-up recovery time and memory with the
# large queue. Private network namespace; results to perf/results/.
#
#   perf/compare-queue.sh                      # 1,000,000 deferred, 20,000 messages a round, 2 rounds
#   QUEUE=100000 MSGS=5000 perf/compare-queue.sh
set -euo pipefail
cd "$(dirname "$0")/.."
. perf/lib.sh
tern_enter_netns "$@"

QUEUE=${QUEUE:-1000000}
MSGS=${MSGS:-20000}
ROUNDS=${ROUNDS:-2}
BINDIR=$(tern_bindir)
WORK=$(mktemp -d /var/tmp/tern-queue.XXXXXX)
OUT=perf/results/compare-queue-$(date -u +%Y%m%d-%H%M%S).md
trap 'kill $(jobs -p) 2>/dev/null || true; [ -n "${KEEP:-}" ] || rm -rf "$WORK"' EXIT
for b in ternd ternbench spoolfill; do [ -x "$BINDIR/$b" ] || { echo "build first: make build-release"; exit 1; }; done

wait_ready() { for _ in $(seq 1200); do grep -q "ternd ready" "$1" 2>/dev/null && return 0; sleep 0.05; done; return 1; }

setup() { # dir
    mkdir -p "$1/mail/example.test/rcpt/new" "$1/mail/example.test/rcpt/cur" "$1/mail/example.test/rcpt/tmp"
    printf 'hostname mx.example.test\nspool spool\nlisten smtp 127.0.0.1:2525\ndomain example.test {\n}\ndeliver maildir mail/%%{domain}/%%{user}\n' >"$1/tern.conf"
}
setup "$WORK/empty"
setup "$WORK/full"
echo "filling a spool with $QUEUE deferred messages"
fill_start=$(date +%s.%N)
"$BINDIR/spoolfill" "$WORK/full/spool" "$QUEUE" 1000 >/dev/null
fill_s=$(echo "$(date +%s.%N) - $fill_start" | bc)
spool_mb=$(du -sm "$WORK/full/spool" | cut -f1)

round() { # kind
    local dir=$WORK/$1 log=$WORK/$1.log
    : >"$log"
    local t0; t0=$(date +%s.%N)
    "$BINDIR/ternd" --config "$dir/tern.conf" 2>"$log" &
    local pid=$!
    wait_ready "$log"
    local ready_s; ready_s=$(echo "$(date +%s.%N) - $t0" | bc)
    local rss0; rss0=$(awk '/VmRSS/ {print $2}' "/proc/$pid/status")
    "$BINDIR/ternbench" send --server 127.0.0.1:2525 --sessions 100 --messages "$MSGS" --size 1000 --to rcpt@example.test --json >"$WORK/$1.json" || true
    local rss1; rss1=$(awk '/VmRSS/ {print $2}' "/proc/$pid/status")
    kill -TERM "$pid"; wait "$pid" || true
    local recovered; recovered=$(grep -o "recovered .* ms" "$log" | head -1)
    local ms; ms=$(echo "$recovered" | awk '{print $(NF-1)}')
    python3 -c "import json; r=json.load(open('$WORK/$1.json')); print(r['messages_per_s'], r['latency']['transaction']['p99_ms'], r['accepted'], $ms, $ready_s, $rss0, $rss1)" >>"$WORK/$1".results
    rm -rf "$dir/mail/example.test/rcpt/new"/* 2>/dev/null || true
    [ "$1" = empty ] && rm -rf "$dir/spool"
    return 0
}

for r in $(seq "$ROUNDS"); do
    echo "round $r/$ROUNDS"
    round empty
    round full
done

col() { awk -v c="$1" '{print $c}' "$WORK/$2.results" | median; }
{
    echo "# Acceptance with a large queue — $(date -u '+%Y-%m-%d %H:%M UTC')"
    echo
    echo "Command: \`QUEUE=$QUEUE MSGS=$MSGS ROUNDS=$ROUNDS perf/compare-queue.sh\` in a private network namespace. Machine: $(nproc) cores, $(uname -r)."
    echo "The large spool holds $QUEUE messages of 1 KB, each deferred for a day ($spool_mb MB on disk, written by spoolfill in ${fill_s%.*} s)."
    echo "Each round restarts ternd (so recovery is measured every time) and sends $MSGS messages with \`ternbench send --sessions 100 --size 1000\`. Medians."
    echo
    echo "| spool | accepted msg/s | p99 MAIL → 250 (ms) | recovery (ms) | start to ready (s) | RSS after start (KiB) | RSS after the load (KiB) |"
    echo "|---|---:|---:|---:|---:|---:|---:|"
    echo "| empty | $(col 1 empty) | $(col 2 empty) | $(col 4 empty) | $(col 5 empty) | $(col 6 empty) | $(col 7 empty) |"
    echo "| $QUEUE deferred | $(col 1 full) | $(col 2 full) | $(col 4 full) | $(col 5 full) | $(col 6 full) | $(col 7 full) |"
    echo
    python3 - "$WORK/empty.results" "$WORK/full.results" <<'PY'
import statistics, sys
e = [float(l.split()[0]) for l in open(sys.argv[1])]
f = [float(l.split()[0]) for l in open(sys.argv[2])]
rec = statistics.median(float(l.split()[3]) for l in open(sys.argv[2])) / 1000
print(f"- large-queue rate / empty-queue rate, median of per-round ratios: {statistics.median(b / a for a, b in zip(e, f)):.3f} (target ≥ 0.90)")
print(f"- recovery of the large spool: {rec:.2f} s (target < 10 s)")
PY
} | tee "$OUT"
echo "written to $OUT"
