#!/usr/bin/env bash
# perf/compare-sink.sh — same-run comparison of `ternbench sink` with Postfix's smtp-sink under
# Postfix's smtp-source, and of `ternbench send` with smtp-source as a client; plus the pipelined
# ternbench-to-ternbench rate and idle-session memory. Runs in a private network namespace
# (`unshare -n`, loopback only) and writes a markdown table to perf/results/.
#
#   perf/compare-sink.sh            # defaults: 50,000 messages, 100 sessions, 1,000 bytes, 3 rounds
#   MSGS=20000 ROUNDS=1 perf/compare-sink.sh
set -euo pipefail
cd "$(dirname "$0")/.."

. perf/lib.sh
tern_enter_netns "$@"

MSGS=${MSGS:-50000}
SESSIONS=${SESSIONS:-100}
SIZE=${SIZE:-1000}
ROUNDS=${ROUNDS:-3}
IDLE=${IDLE:-10000}
PIPE_MSGS=${PIPE_MSGS:-500000}
BIN=${TERNBENCH:-$(tern_bindir)/ternbench}
SOURCE=/usr/sbin/smtp-source
PSINK=/usr/sbin/smtp-sink
HZ=$(getconf CLK_TCK)
OUT=perf/results/compare-sink-$(date -u +%Y%m%d-%H%M%S).md
LOG=$(mktemp -d)
trap 'kill $(jobs -p) 2>/dev/null || true; rm -rf "$LOG"' EXIT

[ -x "$BIN" ] || { echo "build first: make build-release"; exit 1; }
[ -x "$SOURCE" ] && [ -x "$PSINK" ] || { echo "needs Postfix's smtp-source and smtp-sink (apt-get install postfix)"; exit 1; }

ticks() { awk '{print $14 + 0, $15 + 0}' "/proc/$1/stat"; }
now() { date +%s.%N; }

start_server() { # kind port -> pid
    case $1 in
        tern) "$BIN" sink --listen "127.0.0.1:$2" >"$LOG/sink-$2.out" 2>&1 & ;;
        postfix) "$PSINK" -u nobody "127.0.0.1:$2" 1024 >"$LOG/psink-$2.out" 2>&1 & ;;
    esac
    local pid=$!
    for _ in $(seq 100); do (exec 3<>"/dev/tcp/127.0.0.1/$2") 2>/dev/null && break; sleep 0.05; done
    echo "$pid"
}

# One measured run: client command against a server kind; appends "rate srv_user srv_sys cli_user cli_sys" to FILE.
measure() { # kind port file client...
    local kind=$1 port=$2 file=$3; shift 3
    local pid; pid=$(start_server "$kind" "$port")
    read -r u0 s0 < <(ticks "$pid")
    local t0; t0=$(now)
    # `times` in the subshell reports the client's own CPU (children of the subshell).
    local ctimes; ctimes=$( ( "$@" >"$LOG/client.out" 2>&1 || echo "client failed: $*" >&2; times ) | tail -1 )
    local t1; t1=$(now)
    read -r u1 s1 < <(ticks "$pid")
    kill -INT "$pid" 2>/dev/null; wait "$pid" 2>/dev/null || true
    local cu cs
    cu=$(echo "$ctimes" | awk '{split($1,a,"m"); sub("s","",a[2]); print a[1]*60+a[2]}')
    cs=$(echo "$ctimes" | awk '{split($2,a,"m"); sub("s","",a[2]); print a[1]*60+a[2]}')
    awk -v n="$MSGS" -v t="$(echo "$t1 - $t0" | bc -l)" -v su="$((u1 - u0))" -v ss="$((s1 - s0))" -v hz="$HZ" -v cu="$cu" -v cs="$cs" \
        'BEGIN {printf "%.0f %.2f %.2f %.2f %.2f\n", n/t, su/hz*1e6/n, ss/hz*1e6/n, cu*1e6/n, cs*1e6/n}' >>"$file"
}

col() { awk -v c="$1" '{print $c}' "$2" | median; }

port=30000
for round in $(seq "$ROUNDS"); do
    echo "round $round/$ROUNDS"
    for d in "-d" ""; do
        tag=${d:-conn}
        port=$((port + 1)); measure tern "$port" "$LOG/tern$tag" "$SOURCE" -s "$SESSIONS" -m "$MSGS" -l "$SIZE" $d "127.0.0.1:$port"
        port=$((port + 1)); measure postfix "$port" "$LOG/postfix$tag" "$SOURCE" -s "$SESSIONS" -m "$MSGS" -l "$SIZE" $d "127.0.0.1:$port"
    done
    port=$((port + 1)); measure postfix "$port" "$LOG/tbsend" "$BIN" send --server "127.0.0.1:$port" --sessions "$SESSIONS" --messages "$MSGS" --size "$SIZE" --per-connection $((MSGS / SESSIONS)) --no-pipelining
    port=$((port + 1)); measure postfix "$port" "$LOG/tbsendpipe" "$BIN" send --server "127.0.0.1:$port" --sessions "$SESSIONS" --messages "$MSGS" --size "$SIZE"
done

# Pipelined ternbench send → ternbench sink (the 50,000 msg/s target), rounds of PIPE_MSGS.
for round in $(seq "$ROUNDS"); do
    port=$((port + 1)); pid=$(start_server tern "$port")
    "$BIN" send --server "127.0.0.1:$port" --sessions "$SESSIONS" --messages "$PIPE_MSGS" --size "$SIZE" --json >"$LOG/pipe-$round.json"
    kill -INT "$pid"; wait "$pid" 2>/dev/null || true
    python3 -c "import json,sys; r=json.load(open('$LOG/pipe-$round.json')); print(r['messages_per_s'], r['latency']['transaction']['p99_ms'], r['accepted'])" >>"$LOG/pipe"
done

# Idle memory: RSS of an idle sink, then with IDLE sessions held after EHLO.
port=$((port + 1)); pid=$(start_server tern "$port")
read -r idle_rss held_rss < <(idle_session_rss "$pid" "$port" "$IDLE")
kill -INT "$pid"; wait "$pid" 2>/dev/null || true

{
    echo "# ternbench sink vs Postfix smtp-sink — $(date -u '+%Y-%m-%d %H:%M UTC')"
    echo
    echo "Command: \`MSGS=$MSGS SESSIONS=$SESSIONS SIZE=$SIZE ROUNDS=$ROUNDS perf/compare-sink.sh\` in a private network namespace (loopback only)."
    echo "Machine: $(nproc) cores, $(uname -r). Medians of $ROUNDS interleaved rounds. CPU per message from /proc/PID/stat (server) and \`times\` (client)."
    echo
    echo "## Server: smtp-source -s $SESSIONS -m $MSGS -l $SIZE → sink"
    echo
    echo "| load | server | msg/s | server user µs/msg | server sys µs/msg | server total µs/msg |"
    echo "|---|---|---:|---:|---:|---:|"
    for tag in -d conn; do
        label=$([ "$tag" = -d ] && echo "smtp-source -d (persistent)" || echo "smtp-source (connection per message)")
        for s in tern postfix; do
            f="$LOG/$s$tag"
            name=$([ $s = tern ] && echo "ternbench sink" || echo "Postfix smtp-sink")
            echo "| $label | $name | $(col 1 "$f") | $(col 2 "$f") | $(col 3 "$f") | $(awk '{print $2+$3}' "$f" | median) |"
        done
    done
    echo
    for tag in -d conn; do
        python3 - "$LOG/tern$tag" "$LOG/postfix$tag" "$tag" <<'PY'
import statistics, sys
t = [list(map(float, l.split())) for l in open(sys.argv[1])]
p = [list(map(float, l.split())) for l in open(sys.argv[2])]
user = statistics.median(a[1] / b[1] for a, b in zip(t, p))
total = statistics.median((a[1] + a[2]) / (b[1] + b[2]) for a, b in zip(t, p))
label = "persistent" if sys.argv[3] == "-d" else "connection per message"
print(f"- {label}: ternbench sink / smtp-sink CPU per message, median of per-round ratios: "
      f"user {user:.2f} (target ≤ 0.50), total {total:.2f} (target ≤ 1.00)")
PY
    done
    echo
    echo "## Client: → Postfix smtp-sink, $MSGS messages, $SESSIONS sessions"
    echo
    echo "| client | msg/s | client user µs/msg | client sys µs/msg | client total µs/msg |"
    echo "|---|---:|---:|---:|---:|"
    echo "| smtp-source -d | $(col 1 "$LOG/postfix-d") | $(col 4 "$LOG/postfix-d") | $(col 5 "$LOG/postfix-d") | $(awk '{print $4+$5}' "$LOG/postfix-d" | median) |"
    echo "| ternbench send --no-pipelining (same shape) | $(col 1 "$LOG/tbsend") | $(col 4 "$LOG/tbsend") | $(col 5 "$LOG/tbsend") | $(awk '{print $4+$5}' "$LOG/tbsend" | median) |"
    echo "| ternbench send (pipelined) | $(col 1 "$LOG/tbsendpipe") | $(col 4 "$LOG/tbsendpipe") | $(col 5 "$LOG/tbsendpipe") | $(awk '{print $4+$5}' "$LOG/tbsendpipe" | median) |"
    echo
    echo "## Pipelined ternbench send → ternbench sink ($SESSIONS sessions, $SIZE bytes, $PIPE_MSGS messages a round)"
    echo
    echo "- messages/s, median: $(awk '{print $1}' "$LOG/pipe" | median) (target ≥ 50,000); p99 transaction latency median: $(awk '{print $2}' "$LOG/pipe" | median) ms; accepted per round: $(awk '{printf "%s ", $3}' "$LOG/pipe")"
    echo
    echo "## Memory"
    echo
    echo "- idle sink RSS: $(echo "scale=1; $idle_rss / 1024" | bc) MiB ($idle_rss KiB; target ≤ 15 MiB)"
    echo "- with $IDLE idle sessions after EHLO: $held_rss KiB, $(( (held_rss - idle_rss) * 1024 / IDLE )) bytes per session (target ≤ 4096)"
} | tee "$OUT"
echo "written to $OUT"
