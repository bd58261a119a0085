#!/usr/bin/env bash
# perf/compare-tls.sh — TLS, in a private network namespace, same certificate (RSA-2048) for all:
#  1. new STARTTLS sessions per second: ternd against a real Postfix (its own config folder,
#     smtpd TLS, no session cache), `ternbench send --starttls --per-connection 1` (every session:
#     connect, EHLO, STARTTLS, full handshake, EHLO, one 1 KB message, QUIT);
#  2. pipelined throughput over TLS against plaintext, same workload, same run: ternbench → ternbench
#     sink (the engine alone) and ternbench → ternd (durable spool);
#  3. memory per idle TLS session in ternd (after STARTTLS and EHLO over TLS).
# Interleaved rounds; medians of per-round ratios. Writes a markdown table to perf/results/.
#
#   perf/compare-tls.sh                     # 3 rounds
#   ROUNDS=1 HANDSHAKES=2000 perf/compare-tls.sh
set -euo pipefail
cd "$(dirname "$0")/.."

. perf/lib.sh
tern_enter_netns "$@"

ROUNDS=${ROUNDS:-3}
HANDSHAKES=${HANDSHAKES:-4000}     # sessions per round in part 1
HS_SESSIONS=${HS_SESSIONS:-20}     # concurrent sessions in part 1
MSGS=${MSGS:-40000}                # messages per round in part 2
SESSIONS=${SESSIONS:-100}
SIZE=${SIZE:-1000}
IDLE=${IDLE:-5000}
BINDIR=$(tern_bindir)
WORK=$(mktemp -d /var/tmp/tern-tls.XXXXXX)
chmod 755 "$WORK"
OUT=perf/results/compare-tls-$(date -u +%Y%m%d-%H%M%S).md
trap 'postfix -c "$WORK/pf/conf" stop >/dev/null 2>&1 || true; kill $(jobs -p) 2>/dev/null || true; [ -n "${KEEP:-}" ] || rm -rf "$WORK"' EXIT
[ -x "$BINDIR/ternd" ] && [ -x "$BINDIR/ternbench" ] || { echo "build first: make build-release"; exit 1; }

# --- One RSA-2048 certificate for everybody.
CERTS=$WORK/certs
mkdir -p "$CERTS/mx.example.test"
openssl req -x509 -newkey rsa:2048 -nodes -days 2 -subj /CN=mx.example.test -addext subjectAltName=DNS:mx.example.test \
    -keyout "$CERTS/mx.example.test/privkey.pem" -out "$CERTS/mx.example.test/fullchain.pem" 2>/dev/null
chmod 644 "$CERTS/mx.example.test/privkey.pem"  # Postfix's smtpd reads it as its own user here

# --- Postfix: smtpd on 2526 with TLS, virtual Maildir delivery for example.test.
PF=$WORK/pf
postfix_folder "$PF" 2526
cat >>"$PF/conf/main.cf" <<CF
virtual_mailbox_domains = example.test
virtual_mailbox_base = $PF/mail
virtual_mailbox_maps = static:example.test/rcpt/
virtual_uid_maps = static:$(id -u postfix)
virtual_gid_maps = static:$(id -g postfix)
smtpd_tls_security_level = may
smtpd_tls_chain_files = $CERTS/mx.example.test/privkey.pem, $CERTS/mx.example.test/fullchain.pem
smtpd_tls_session_cache_database =
smtpd_tls_loglevel = 0
CF
postfix -c "$PF/conf" start-fg >"$PF/master.out" 2>&1 &
wait_port 2526

# --- ternd: the same domain and certificate.
TD=$WORK/ternd
mkdir -p "$TD/mail/example.test/rcpt/new" "$TD/mail/example.test/rcpt/cur" "$TD/mail/example.test/rcpt/tmp"
cat >"$TD/tern.conf" <<CF
hostname mx.example.test
spool spool
listen smtp 127.0.0.1:2525
certificates $CERTS
domain example.test {
}
deliver maildir mail/%{domain}/%{user}
CF
"$BINDIR/ternd" --config "$TD/tern.conf" 2>"$TD/log" &
TERND=$!
wait_port 2525

# --- ternbench sink with the same certificate.
"$BINDIR/ternbench" sink --listen 127.0.0.1:2527 --tls-cert "$CERTS/mx.example.test/fullchain.pem" --tls-key "$CERTS/mx.example.test/privkey.pem" 2>"$WORK/sink.log" &
wait_port 2527

send() { # label port args...
    local label=$1 port=$2
    shift 2
    "$BINDIR/ternbench" send --server "127.0.0.1:$port" --size "$SIZE" --to rcpt@example.test --json "$@" >"$WORK/$label.json" || true
    python3 -c "import json; r=json.load(open('$WORK/$label.json')); print(r['messages_per_s'], r['accepted'], r['tls']['handshakes'], r['latency']['connect']['p50_ms'], r['latency']['connect']['p99_ms'])" >>"$WORK/$label"
}

for round in $(seq "$ROUNDS"); do
    echo "round $round/$ROUNDS"
    send hs-tern 2525 --starttls --per-connection 1 --sessions "$HS_SESSIONS" --messages "$HANDSHAKES"
    send hs-postfix 2526 --starttls --per-connection 1 --sessions "$HS_SESSIONS" --messages "$HANDSHAKES"
    send sink-plain 2527 --sessions "$SESSIONS" --messages "$MSGS"
    send sink-tls 2527 --starttls --sessions "$SESSIONS" --messages "$MSGS"
    send tern-plain 2525 --sessions "$SESSIONS" --messages "$((MSGS / 2))"
    send tern-tls 2525 --starttls --sessions "$SESSIONS" --messages "$((MSGS / 2))"
done
kill -TERM "$TERND"; wait "$TERND" || true

# --- Memory: a fresh ternd, idle, then holding IDLE sessions after STARTTLS and EHLO over TLS.
rm -rf "$TD/spool"
"$BINDIR/ternd" --config "$TD/tern.conf" 2>>"$TD/log" &
TERND=$!
wait_port 2525
sleep 0.5
idle_rss=$(awk '/VmRSS/ {print $2}' "/proc/$TERND/status")
coproc HOLD { python3 perf/idle_sessions.py 127.0.0.1 2525 "$IDLE" starttls; }
read -r ready <&"${HOLD[0]}"
sleep 1
held_rss=$(awk '/VmRSS/ {print $2}' "/proc/$TERND/status")
echo >&"${HOLD[1]}"
wait "$HOLD_PID" 2>/dev/null || true
kill -TERM "$TERND"; wait "$TERND" || true

col() { awk -v c="$1" '{print $c}' "$WORK/$2" | median; }
ratio() { python3 -c "import statistics,sys; a=[float(l.split()[0]) for l in open(sys.argv[1])]; b=[float(l.split()[0]) for l in open(sys.argv[2])]; print(f'{statistics.median(x / y for x, y in zip(a, b)):.2f}')" "$WORK/$1" "$WORK/$2"; }
{
    echo "# TLS: ternd vs Postfix, TLS vs plaintext — $(date -u '+%Y-%m-%d %H:%M UTC')"
    echo
    echo "Command: \`ROUNDS=$ROUNDS HANDSHAKES=$HANDSHAKES MSGS=$MSGS perf/compare-tls.sh\` in a private network namespace."
    echo "Machine: $(nproc) cores, $(uname -r), $(openssl version). One RSA-2048 certificate; ECDHE (X25519) key exchange; TLS 1.3 negotiated."
    echo "Medians of $ROUNDS interleaved rounds."
    echo
    echo "## New STARTTLS sessions per second"
    echo
    echo "\`ternbench send --starttls --per-connection 1 --sessions $HS_SESSIONS --messages $HANDSHAKES\`: every session is a new TCP connection,"
    echo "EHLO, STARTTLS, a full handshake (no resumption), EHLO, one ${SIZE}-byte message stored durably, QUIT."
    echo
    echo "| server | sessions/s | connect → 220, p50 (ms) | p99 (ms) | handshakes per round |"
    echo "|---|---:|---:|---:|---|"
    echo "| ternd | $(col 1 hs-tern) | $(col 4 hs-tern) | $(col 5 hs-tern) | $(awk '{printf "%s ", $3}' "$WORK/hs-tern") |"
    echo "| Postfix $(postconf -d mail_version 2>/dev/null | awk '{print $3}') | $(col 1 hs-postfix) | $(col 4 hs-postfix) | $(col 5 hs-postfix) | $(awk '{printf "%s ", $3}' "$WORK/hs-postfix") |"
    echo
    echo "- ternd / Postfix new STARTTLS sessions per second, median of per-round ratios: $(ratio hs-tern hs-postfix)× (target ≥ 1×)"
    echo
    echo "## Pipelined throughput over TLS against plaintext"
    echo
    echo "\`ternbench send [--starttls] --sessions $SESSIONS --size $SIZE\`, all messages of a session on one connection."
    echo
    echo "| path | plaintext msg/s | STARTTLS msg/s | TLS / plaintext (median of per-round ratios) |"
    echo "|---|---:|---:|---:|"
    echo "| ternbench → ternbench sink ($MSGS a round) | $(col 1 sink-plain) | $(col 1 sink-tls) | $(ratio sink-tls sink-plain) |"
    echo "| ternbench → ternd, durable ($((MSGS / 2)) a round) | $(col 1 tern-plain) | $(col 1 tern-tls) | $(ratio tern-tls tern-plain) |"
    echo
    echo "- target: TLS ≥ 0.60 of plaintext"
    echo
    echo "## Memory"
    echo
    echo "- ternd idle RSS $idle_rss KiB; with $IDLE idle TLS sessions ($ready, after STARTTLS and EHLO over TLS): $held_rss KiB,"
    echo "  $(( (held_rss - idle_rss) * 1024 / IDLE )) bytes per session (target ≤ 40 KiB = 40960 bytes)"
} | tee "$OUT"
echo "written to $OUT"
