#!/usr/bin/env bash
# perf/crash-ternd.sh — crash safety at scale: drive load at ternd, kill -9 it mid-stream, restart,
# several times; then let it drain and check that at least every acknowledged message was
# delivered. Reports acknowledged, delivered and the excess (stored but unacknowledged, or delivered
# twice: at-least-once). Private network namespace; results to perf/results/.
#
#   perf/crash-ternd.sh                 # 5 crashes, 200,000 messages offered per run
#   CRASHES=2 MSGS=20000 perf/crash-ternd.sh
set -euo pipefail
cd "$(dirname "$0")/.."
. perf/lib.sh
tern_enter_netns "$@"

CRASHES=${CRASHES:-5}
MSGS=${MSGS:-200000}
BINDIR=$(tern_bindir)
WORK=$(mktemp -d /var/tmp/tern-crash.XXXXXX)
OUT=perf/results/crash-ternd-$(date -u +%Y%m%d-%H%M%S).md
trap 'kill -9 $(jobs -p) 2>/dev/null || true; [ -n "${KEEP:-}" ] || rm -rf "$WORK"' EXIT
mkdir -p "$WORK/mail/example.test/rcpt/new" "$WORK/mail/example.test/rcpt/cur" "$WORK/mail/example.test/rcpt/tmp"
printf 'hostname mx.example.test\nspool spool\nlisten smtp 127.0.0.1:2525\ndomain example.test {\n}\ndeliver maildir mail/%%{domain}/%%{user}\n' >"$WORK/tern.conf"

start() {
    "$BINDIR/ternd" --config "$WORK/tern.conf" 2>>"$WORK/ternd.log" &
    TERND=$!
    for _ in $(seq 600); do (exec 3<>/dev/tcp/127.0.0.1/2525) 2>/dev/null && return 0; sleep 0.05; done
    return 1
}

acked=0
rows=""
for i in $(seq "$CRASHES"); do
    start
    "$BINDIR/ternbench" send --server 127.0.0.1:2525 --sessions 100 --messages "$MSGS" --size 1000 --to rcpt@example.test \
        --timeout 5 --json >"$WORK/send-$i.json" 2>/dev/null &
    sender=$!
    sleep "$(python3 -c 'import random; print(round(random.uniform(1.0, 3.0), 2))')"
    kill -9 "$TERND"
    wait "$TERND" 2>/dev/null || true
    wait "$sender" 2>/dev/null || true
    n=$(python3 -c "import json; print(json.load(open('$WORK/send-$i.json'))['accepted'])")
    acked=$((acked + n))
    rows="$rows| $i | $n |\n"
    echo "crash $i: $n acknowledged before kill -9"
done

# Restart and let the queue drain.
start
last=-1
for _ in $(seq 600); do
    now=$(find "$WORK/mail/example.test/rcpt/new" -type f | wc -l)
    [ "$now" -ge "$acked" ] && [ "$now" = "$last" ] && break
    last=$now
    sleep 1
done
kill -TERM "$TERND"; wait "$TERND" || true
delivered=$(find "$WORK/mail/example.test/rcpt/new" -type f | wc -l)
recoveries=$(grep -c "recovered" "$WORK/ternd.log" || true)
torn=$( (grep -o "cut a torn tail of [0-9]* bytes" "$WORK/ternd.log" || true) | wc -l)

{
    echo "# ternd crash safety under load — $(date -u '+%Y-%m-%d %H:%M UTC')"
    echo
    echo "Command: \`CRASHES=$CRASHES MSGS=$MSGS perf/crash-ternd.sh\` in a private network namespace. Machine: $(nproc) cores, $(uname -r)."
    echo "Each run: ternd starts (recovering the spool), \`ternbench send --sessions 100 --size 1000\` offers $MSGS messages, and ternd is killed with SIGKILL after 1–3 s."
    echo
    echo "| run | acknowledged (250 seen by the client) |"
    echo "|---:|---:|"
    printf "%b" "$rows"
    echo
    echo "- acknowledged in all: $acked; delivered after the final restart: $delivered"
    echo "- lost: $(( acked > delivered ? acked - delivered : 0 )) (must be 0); excess (stored without a 250 reaching the client, or delivered twice): $(( delivered > acked ? delivered - acked : 0 ))"
    echo "- recoveries: $recoveries; torn tails cut: $torn"
} | tee "$OUT"
[ "$delivered" -ge "$acked" ]
