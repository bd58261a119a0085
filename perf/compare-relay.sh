#!/usr/bin/env bash
# perf/compare-relay.sh — relay-through: `ternbench send` (100 sessions, 1 KB) → MTA (durable
# queue) → `ternbench sink`, ternd against a real Postfix doing the same (relay_domains and a
# transport to the same sink), and OpenSMTPD when its Debian package can be fetched and unpacked
# (it conflicts with postfix, so it is not installed: `apt-get download` + `dpkg -x`). Rounds are
# interleaved, in a private network namespace. A round counts messages fully delivered per
# second: from the first message sent until the sink has accepted the last one.
# Part 2: DRAIN queued messages to DOMAINS domains drain with connection reuse (messages per
# outbound connection, from the sink's session count).
#
#   perf/compare-relay.sh                      # 20,000 messages a round, 5 rounds; 10,000 to drain over 100 domains
#   MSGS=5000 ROUNDS=1 DRAIN=2000 perf/compare-relay.sh
set -euo pipefail
cd "$(dirname "$0")/.."

. perf/lib.sh
# OpenSMTPD's package, fetched before the namespace cuts the network off (cached).
opensmtpd_fetch || echo "OpenSMTPD: apt-get download failed; it will not be measured"
tern_enter_netns "$@"

MSGS=${MSGS:-20000}
# OpenSMTPD relays slowly here — one session at a time, ~42 ms a message (its final "." waits for
# the receiver's delayed ACK: perf/probe-opensmtpd.sh shows the same against Postfix's smtp-sink),
# 100 messages a session, pauses between sessions — so its rounds send fewer and wait at most
# OS_WAIT seconds; what arrived by then counts.
OS_MSGS=${OS_MSGS:-2000}
SESSIONS=${SESSIONS:-100}
SIZE=${SIZE:-1000}
ROUNDS=${ROUNDS:-5}
DRAIN=${DRAIN:-10000}
DOMAINS=${DOMAINS:-100}
BINDIR=$(tern_bindir)
WORK=$(mktemp -d /var/tmp/tern-relay.XXXXXX)
chmod 755 "$WORK"  # Postfix runs as its own user
OUT=perf/results/compare-relay-$(date -u +%Y%m%d-%H%M%S).md
SINK=2600
trap 'postfix -c "$WORK/pf/conf" stop >/dev/null 2>&1 || true; kill $(jobs -p) 2>/dev/null || true; [ -n "${KEEP:-}" ] || rm -rf "$WORK"' EXIT
[ -x "$BINDIR/ternd" ] && [ -x "$BINDIR/ternbench" ] || { echo "build first: make build-release"; exit 1; }

# --- ternd: relay.example accepted from anyone and sent to the sink; durable spool.
TD=$WORK/ternd
mkdir -p "$TD"
cat >"$TD/tern.conf" <<CF
hostname mx.example.test
spool spool
listen smtp 127.0.0.1:2525
domain example.test {
}
deliver maildir mail/%{domain}/%{user}
relay relay.example via smtp://127.0.0.1:$SINK
CF
"$BINDIR/ternd" --config "$TD/tern.conf" 2>"$TD/log" &
TERND=$!
wait_port 2525

# --- Postfix, in its own folder: relay_domains and a transport to the same sink.
PF=$WORK/pf
postfix_folder "$PF" 2526
cat >>"$PF/conf/main.cf" <<CF
relay_domains = relay.example
transport_maps = inline:{ relay.example=smtp:[127.0.0.1]:$SINK }
CF
postfix -c "$PF/conf" start-fg >"$PF/master.out" 2>&1 &
wait_port 2526
PF_VERSION=$(postconf -d mail_version 2>/dev/null | awk '{print $3}')

# --- OpenSMTPD, unpacked from its Debian package (skipped when that cannot be done).
OS=$WORK/opensmtpd
OSMTPD=""
mkdir -p "$OS"
if opensmtpd_unpack "$OS" "$SINK"; then
    opensmtpd_fresh_queue
    "$OS/root/usr/sbin/smtpd" -d -f "$OS/smtpd.conf" >"$OS/log" 2>&1 &
    if wait_port 2527; then
        OSMTPD=$( ("$OS/root/usr/sbin/smtpd" -h 2>&1 || true) | awk '/version/ {print $NF; exit}')
        OSMTPD=${OSMTPD:-6.8}
    else
        echo "OpenSMTPD did not start: $(tail -3 "$OS/log")"
    fi
else
    echo "OpenSMTPD: cannot unpack the Debian package; not measured"
fi

now() { date +%s.%N; }

run() { # port label [messages [seconds to wait for the last one]]
    local n=${3:-$MSGS} wait=${4:-300}
    "$BINDIR/ternbench" sink --listen "127.0.0.1:$SINK" --expect "$n" --json >"$WORK/sink.json" 2>/dev/null &
    local sink=$!
    wait_port "$SINK"
    local t0 t1
    t0=$(now)
    "$BINDIR/ternbench" send --server "127.0.0.1:$1" --sessions "$SESSIONS" --messages "$n" --size "$SIZE" \
        --to rcpt@relay.example --json >"$WORK/send.json" 2>/dev/null || true
    timeout "$wait" tail -s 0.01 --pid="$sink" -f /dev/null || true
    t1=$(now)
    kill -INT "$sink" 2>/dev/null || true
    wait "$sink" || true
    # Not all delivered in time: the rate is what arrived over the time waited.
    python3 - "$WORK/sink.json" "$WORK/send.json" "$t0" "$t1" >>"$WORK/$2" <<'PY'
import json, sys
sink, send = json.load(open(sys.argv[1])), json.load(open(sys.argv[2]))
t0, t1 = float(sys.argv[3]), float(sys.argv[4])
# delivered/s (send start → last at the sink), accepted/s, delivered, sink sessions, sink first→last rate
print(f"{sink['messages'] / (t1 - t0):.1f} {send['messages_per_s']} {sink['messages']} {sink['sessions']} {sink['messages_per_s_first_to_last']}")
PY
}

for round in $(seq "$ROUNDS"); do
    echo "round $round/$ROUNDS"
    run 2525 tern
    run 2526 postfix
    [ -z "$OSMTPD" ] || run 2527 smtpd "$OS_MSGS" "${OS_WAIT:-60}"
done
kill -TERM "$TERND"; wait "$TERND" || true

# --- Part 2: DRAIN messages to DOMAINS domains queued while no receiver listens, then drained.
DD=$WORK/drain
mkdir -p "$DD"
{
    echo "\$ORIGIN relay.example."
    echo "mx A 127.0.0.1"
    for k in $(seq 0 $((DOMAINS - 1))); do echo "\$ORIGIN d$k.relay.example."; echo "@ MX 10 mx.relay.example."; done
} >"$DD/zone"
{
    cat <<CF
hostname mx.example.test
spool spool
listen smtp 127.0.0.1:2535
domain example.test {
}
deliver maildir mail/%{domain}/%{user}
resolver zone zone
outbound port 2601
limits {
    retry-interval 1s
}
CF
    for k in $(seq 0 $((DOMAINS - 1))); do echo "relay d$k.relay.example"; done
} >"$DD/tern.conf"
"$BINDIR/ternd" --config "$DD/tern.conf" 2>"$DD/log" &
DRAINER=$!
wait_port 2535
"$BINDIR/ternbench" send --server 127.0.0.1:2535 --sessions "$SESSIONS" --messages "$DRAIN" --size "$SIZE" \
    --to rcpt@relay.example --domains "$DOMAINS" --json >"$DD/send.json" 2>/dev/null
kill -TERM "$DRAINER"; wait "$DRAINER" || true
queued=$(grep -o '[0-9]* messages stay queued' "$DD/log" | awk '{print $1}')
"$BINDIR/ternbench" sink --listen 127.0.0.1:2601 --expect "$DRAIN" --json >"$DD/sink.json" 2>/dev/null &
SINKPID=$!
wait_port 2601
t0=$(now)
"$BINDIR/ternd" --config "$DD/tern.conf" 2>>"$DD/log" &
DRAINER=$!
timeout 300 tail -s 0.01 --pid="$SINKPID" -f /dev/null || true
t1=$(now)
kill -INT "$SINKPID" 2>/dev/null || true
wait "$SINKPID" || true
kill -TERM "$DRAINER"; wait "$DRAINER" || true
drain=$(python3 - "$DD/sink.json" "$t0" "$t1" <<'PY'
import json, sys
s = json.load(open(sys.argv[1]))
t = float(sys.argv[3]) - float(sys.argv[2])
print(s["messages"], s["sessions"], f"{s['messages'] / max(s['sessions'], 1):.1f}", f"{t:.2f}", f"{s['messages'] / t:.0f}")
PY
)
read -r d_msgs d_sessions d_per d_secs d_rate <<<"$drain"

col() { awk -v c="$1" '{print $c}' "$WORK/$2" | median; }
{
    echo "# Relay-through: ternd vs Postfix$([ -z "$OSMTPD" ] || echo " and OpenSMTPD") — $(date -u '+%Y-%m-%d %H:%M UTC')"
    echo
    echo "Command: \`MSGS=$MSGS OS_MSGS=$OS_MSGS SESSIONS=$SESSIONS SIZE=$SIZE ROUNDS=$ROUNDS DRAIN=$DRAIN DOMAINS=$DOMAINS perf/compare-relay.sh\` in a private network namespace."
    echo "Machine: $(nproc) cores, $(uname -r). Each round: \`ternbench send --sessions $SESSIONS --messages $MSGS --size $SIZE --to rcpt@relay.example\`"
    echo "into the server, which queues durably (fsync before 250) and relays to \`ternbench sink --expect $MSGS\` on 127.0.0.1:$SINK;"
    echo "delivered/s = messages the sink accepted / (last one at the sink − first one sent). Medians of $ROUNDS interleaved rounds; sender, server and sink share the 2 cores."
    echo
    echo "| server | delivered msg/s (send start → last at sink) | accepted msg/s (sender's view) | sink first → last msg/s | outbound connections | delivered per round |"
    echo "|---|---:|---:|---:|---:|---|"
    echo "| ternd | $(col 1 tern) | $(col 2 tern) | $(col 5 tern) | $(col 4 tern) | $(awk '{printf "%s ", $3}' "$WORK/tern") |"
    echo "| Postfix $PF_VERSION | $(col 1 postfix) | $(col 2 postfix) | $(col 5 postfix) | $(col 4 postfix) | $(awk '{printf "%s ", $3}' "$WORK/postfix") |"
    [ -z "$OSMTPD" ] || echo "| OpenSMTPD $OSMTPD ($OS_MSGS messages a round) | $(col 1 smtpd) | $(col 2 smtpd) | $(col 5 smtpd) | $(col 4 smtpd) | $(awk -v n="$OS_MSGS" '{printf "%s of %s ", $3, n}' "$WORK/smtpd") |"
    echo
    python3 - "$WORK/tern" "$WORK/postfix" "$WORK/smtpd" <<'PY'
import os, statistics, sys
def rates(p): return [float(l.split()[0]) for l in open(p)] if os.path.exists(p) else []
t, p, o = rates(sys.argv[1]), rates(sys.argv[2]), rates(sys.argv[3])
print(f"- ternd / Postfix delivered messages per second, median of per-round ratios: {statistics.median(a / b for a, b in zip(t, p)):.1f}× (target ≥ 5×); per round: {', '.join(f'{a / b:.1f}' for a, b in zip(t, p))}")
if o:
    print(f"- ternd / OpenSMTPD, median of per-round ratios: {statistics.median(a / b for a, b in zip(t, o)):.1f}×; per round: {', '.join(f'{a / b:.1f}' for a, b in zip(t, o))}")
PY
    echo "- drain: $queued messages queued for $DOMAINS domains while no receiver listened; after a restart ternd delivered $d_msgs in $d_secs s ($d_rate msg/s) over $d_sessions connections: **$d_per messages per outbound connection** (target ≥ 20)"
} | tee "$OUT"
echo "written to $OUT"
