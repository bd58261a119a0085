#!/usr/bin/env bash
# perf/compare-durable.sh — durable acceptance with local Maildir delivery: ternd against a real
# Postfix configured to do the same (its own config folder, virtual Maildir delivery), driven by
# `ternbench send` in interleaved rounds, in a private network namespace. Writes a markdown table
# to perf/results/.
#
#   perf/compare-durable.sh                  # 20,000 messages a round, 100 sessions, 1 KB, 3 rounds
#   MSGS=5000 ROUNDS=1 perf/compare-durable.sh
set -euo pipefail
cd "$(dirname "$0")/.."

. perf/lib.sh
tern_enter_netns "$@"

MSGS=${MSGS:-20000}
SESSIONS=${SESSIONS:-100}
SIZE=${SIZE:-1000}
ROUNDS=${ROUNDS:-3}
BINDIR=$(tern_bindir)
WORK=$(mktemp -d /var/tmp/tern-durable.XXXXXX)
chmod 755 "$WORK"  # Postfix runs as its own user
OUT=perf/results/compare-durable-$(date -u +%Y%m%d-%H%M%S).md
trap 'postfix -c "$WORK/pf/conf" stop >/dev/null 2>&1 || true; kill $(jobs -p) 2>/dev/null || true; [ -n "${KEEP:-}" ] || rm -rf "$WORK"' EXIT
[ -x "$BINDIR/ternd" ] && [ -x "$BINDIR/ternbench" ] || { echo "build first: make build-release"; exit 1; }


# --- Postfix, in its own folder: smtpd on 2526, virtual Maildir delivery for example.test.
PF=$WORK/pf
postfix_folder "$PF" 2526
cat >>"$PF/conf/main.cf" <<CF
virtual_mailbox_domains = example.test
virtual_mailbox_base = $PF/mail
virtual_mailbox_maps = static:example.test/rcpt/
virtual_uid_maps = static:$(id -u postfix)
virtual_gid_maps = static:$(id -g postfix)
CF
postfix -c "$PF/conf" start-fg >"$PF/master.out" 2>&1 &
wait_port 2526

# --- ternd: same domain, a Maildir for rcpt.
TD=$WORK/ternd
mkdir -p "$TD/mail/example.test/rcpt/new" "$TD/mail/example.test/rcpt/cur" "$TD/mail/example.test/rcpt/tmp"
cat >"$TD/tern.conf" <<CF
hostname mx.example.test
spool spool
listen smtp 127.0.0.1:2525
domain example.test {
}
deliver maildir mail/%{domain}/%{user}
CF
"$BINDIR/ternd" --config "$TD/tern.conf" 2>"$TD/log" &
TERND=$!
wait_port 2525

run() { # port label
    "$BINDIR/ternbench" send --server "127.0.0.1:$1" --sessions "$SESSIONS" --messages "$MSGS" --size "$SIZE" \
        --to rcpt@example.test --json >"$WORK/$2.json" || true
    python3 -c "import json; r=json.load(open('$WORK/$2.json')); t=r['latency']['transaction']; d=r['latency']['end_of_data']; print(r['messages_per_s'], t['p50_ms'], t['p99_ms'], r['accepted'], d['p50_ms'], d['p99_ms'])" >>"$WORK/$2"
}

for round in $(seq "$ROUNDS"); do
    echo "round $round/$ROUNDS"
    run 2525 tern
    run 2526 postfix
done
sleep 2
tern_delivered=$(find "$TD/mail/example.test/rcpt/new" -type f | wc -l)
pf_delivered=$(find "$PF/mail/example.test/rcpt/new" -type f 2>/dev/null | wc -l)
kill -TERM "$TERND"; wait "$TERND" || true

# Memory: a fresh ternd (empty queue) idle, then holding IDLE sessions after EHLO.
IDLE=${IDLE:-10000}
rm -rf "$TD/spool"
"$BINDIR/ternd" --config "$TD/tern.conf" 2>>"$TD/log" &
TERND=$!
wait_port 2525
sleep 0.5
idle_rss=$(awk '/VmRSS/ {print $2}' "/proc/$TERND/status")
coproc HOLD { python3 perf/idle_sessions.py 127.0.0.1 2525 "$IDLE"; }
read -r ready <&"${HOLD[0]}"
sleep 1
held_rss=$(awk '/VmRSS/ {print $2}' "/proc/$TERND/status")
echo >&"${HOLD[1]}"
wait "$HOLD_PID" 2>/dev/null || true
kill -TERM "$TERND"; wait "$TERND" || true

col() { awk -v c="$1" '{print $c}' "$WORK/$2" | median; }
{
    echo "# Durable acceptance with Maildir delivery: ternd vs Postfix — $(date -u '+%Y-%m-%d %H:%M UTC')"
    echo
    echo "Command: \`MSGS=$MSGS SESSIONS=$SESSIONS SIZE=$SIZE ROUNDS=$ROUNDS perf/compare-durable.sh\` in a private network namespace."
    echo "Machine: $(nproc) cores, $(uname -r); both spools and Maildirs on the same ext4 file system. Medians of $ROUNDS interleaved rounds of"
    echo "\`ternbench send --sessions $SESSIONS --messages $MSGS --size $SIZE\`. Both answer 250 only after fsync; both deliver to Maildir at the same time."
    echo
    echo "| server | accepted msg/s | end of data → 250, p50 (ms) | p99 (ms) | transaction MAIL → 250, p50 (ms) | p99 (ms) | accepted per round |"
    echo "|---|---:|---:|---:|---:|---:|---|"
    echo "| ternd | $(col 1 tern) | $(col 5 tern) | $(col 6 tern) | $(col 2 tern) | $(col 3 tern) | $(awk '{printf "%s ", $4}' "$WORK/tern") |"
    echo "| Postfix $(postconf -d mail_version 2>/dev/null | awk '{print $3}') | $(col 1 postfix) | $(col 5 postfix) | $(col 6 postfix) | $(col 2 postfix) | $(col 3 postfix) | $(awk '{printf "%s ", $4}' "$WORK/postfix") |"
    echo
    python3 - "$WORK/tern" "$WORK/postfix" <<'PY'
import statistics, sys
t = [float(l.split()[0]) for l in open(sys.argv[1])]
p = [float(l.split()[0]) for l in open(sys.argv[2])]
print(f"- ternd / Postfix accepted messages per second, median of per-round ratios: {statistics.median(a / b for a, b in zip(t, p)):.1f}× (target ≥ 10×; ≥ 10,000 msg/s)")
d = [float(l.split()[5]) for l in open(sys.argv[1])]
print(f"- ternd end of data → 250, p99, median of rounds: {statistics.median(d):.1f} ms (target ≤ 20 ms)")
PY
    echo "- delivered to Maildir 2 s after the last round: ternd $tern_delivered, Postfix $pf_delivered (of $((MSGS * ROUNDS)) each)"
    echo "- ternd idle RSS: $(echo "scale=1; $idle_rss / 1024" | bc) MiB ($idle_rss KiB; target ≤ 20 MiB); with $IDLE idle sessions after EHLO ($ready): $held_rss KiB, $(( (held_rss - idle_rss) * 1024 / IDLE )) bytes per session (target ≤ 4096)"
} | tee "$OUT"
echo "written to $OUT"
