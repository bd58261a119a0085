#!/usr/bin/env bash
# perf/compare-backends.sh — the reactor's two backends, same run: pipelined `ternbench send` →
# `ternbench sink`, both on epoll or both on io_uring, for 100 and 1,000 sessions and 1 KB and
# 100 KB messages (rounds interleaved, medians of per-round ratios); system calls per message
# counted with `perf stat -e raw_syscalls:sys_enter` (strace -c -f when perf is missing) in a
# separate run; zero-copy send (IORING_OP_SEND_ZC) against plain sends by message size; and the
# memory of 10,000 idle sessions on each backend. Runs in a private network namespace (loopback
# only) and writes a markdown table to perf/results/.
#
#   perf/compare-backends.sh                     # defaults below
#   ROUNDS=1 SMALL_MSGS=50000 perf/compare-backends.sh
set -euo pipefail
cd "$(dirname "$0")/.."

. perf/lib.sh
tern_enter_netns "$@"

ROUNDS=${ROUNDS:-5}
SMALL_MSGS=${SMALL_MSGS:-200000}   # 1 KB messages per run
LARGE_MSGS=${LARGE_MSGS:-20000}    # 100 KB messages per run
IDLE=${IDLE:-10000}
ZC_SIZES=${ZC_SIZES:-"16384 65536 262144 1048576"}
BIN=${TERNBENCH:-$(tern_bindir)/ternbench}
OUT=perf/results/compare-backends-$(date -u +%Y%m%d-%H%M%S).md
LOG=$(mktemp -d)
trap 'kill $(jobs -p) 2>/dev/null || true; rm -rf "$LOG"' EXIT
ulimit -n "$(ulimit -Hn)"

[ -x "$BIN" ] || { echo "build first: make build-release"; exit 1; }

port=32000

start_sink() { # backend port -> pid
    local be=$1 p=$2
    "$BIN" sink --listen "127.0.0.1:$p" --io-backend "$be" >"$LOG/sink-$p.out" 2>"$LOG/sink-$p.err" &
    local pid=$!
    wait_port "$p" || { echo "sink did not start: $(cat "$LOG/sink-$p.err")" >&2; exit 1; }
    grep -q "io backend: $be" "$LOG/sink-$p.err" || { echo "sink is not on $be: $(cat "$LOG/sink-$p.err")" >&2; exit 1; }
    echo "$pid"
}

HZ=$(getconf CLK_TCK)
ticks() { awk '{print $14 + 0, $15 + 0}' "/proc/$1/stat"; }

# One pipelined run; prints "msg/s sink-user sink-system send-user send-system" (CPU in µs per
# message: the sink's from /proc/PID/stat, the sender's from /usr/bin/time).
run_once() { # backend sessions size messages [env for send...]
    local be=$1 sessions=$2 size=$3 msgs=$4; shift 4
    port=$((port + 1))
    local pid; pid=$(start_sink "$be" "$port")
    local u0 s0 u1 s1
    read -r u0 s0 < <(ticks "$pid")
    env "$@" /usr/bin/time -f "%U %S" -o "$LOG/send.time" "$BIN" send --server "127.0.0.1:$port" --sessions "$sessions" \
        --messages "$msgs" --size "$size" --io-backend "$be" --json >"$LOG/send.json" 2>"$LOG/send.err" \
        || { echo "send failed: $(cat "$LOG/send.err")" >&2; }
    read -r u1 s1 < <(ticks "$pid")
    kill -INT "$pid"; wait "$pid" 2>/dev/null || true
    local cu cs
    read -r cu cs <"$LOG/send.time"
    python3 -c "import json; r=json.load(open('$LOG/send.json')); assert r['accepted'] == $msgs, r['accepted']; print(round(r['messages_per_s']), end=' ')"
    awk -v n="$msgs" -v su="$((u1 - u0))" -v ss="$((s1 - s0))" -v hz="$HZ" -v cu="$cu" -v cs="$cs" \
        'BEGIN {printf "%.1f %.1f %.1f %.1f\n", su/hz*1e6/n, ss/hz*1e6/n, cu*1e6/n, cs*1e6/n}'
}

# System calls of both processes for one run; prints "sink_per_msg send_per_msg".
count_syscalls() { # backend sessions size messages
    local be=$1 sessions=$2 size=$3 msgs=$4
    port=$((port + 1))
    local pid; pid=$(start_sink "$be" "$port")
    if command -v perf >/dev/null && perf stat -e raw_syscalls:sys_enter -o /dev/null true 2>/dev/null; then
        perf stat -x, -e raw_syscalls:sys_enter -p "$pid" -o "$LOG/sink.stat" & local spid=$!
        sleep 0.2
        perf stat -x, -e raw_syscalls:sys_enter -o "$LOG/send.stat" "$BIN" send --server "127.0.0.1:$port" --sessions "$sessions" \
            --messages "$msgs" --size "$size" --io-backend "$be" >/dev/null 2>&1
        kill -INT "$spid"; wait "$spid" 2>/dev/null || true
        local s c
        s=$(grep sys_enter "$LOG/sink.stat" | cut -d, -f1)
        c=$(grep sys_enter "$LOG/send.stat" | cut -d, -f1)
    else
        strace -c -f -p "$pid" -o "$LOG/sink.strace" & local spid=$!
        sleep 0.5
        strace -c -f -o "$LOG/send.strace" "$BIN" send --server "127.0.0.1:$port" --sessions "$sessions" \
            --messages "$msgs" --size "$size" --io-backend "$be" >/dev/null 2>&1
        kill -INT "$spid"; wait "$spid" 2>/dev/null || true
        s=$(awk '/total/ {print $4}' "$LOG/sink.strace")
        c=$(awk '/total/ {print $4}' "$LOG/send.strace")
    fi
    kill -INT "$pid"; wait "$pid" 2>/dev/null || true
    awk -v s="$s" -v c="$c" -v n="$msgs" 'BEGIN {printf "%.2f %.2f\n", s/n, c/n}'
}

WORKLOADS="100:1000:$SMALL_MSGS 1000:1000:$SMALL_MSGS 100:100000:$LARGE_MSGS 1000:100000:$LARGE_MSGS"
for round in $(seq "$ROUNDS"); do
    echo "round $round/$ROUNDS"
    for w in $WORKLOADS; do
        IFS=: read -r sessions size msgs <<<"$w"
        # Alternate which backend goes first, so drift on a shared machine favours neither.
        if [ $((round % 2)) = 1 ]; then order="epoll io_uring"; else order="io_uring epoll"; fi
        for be in $order; do
            run_once "$be" "$sessions" "$size" "$msgs" >"$LOG/run-$w-$be-$round"
            cat "$LOG/run-$w-$be-$round" >>"$LOG/cpu-$w-$be"
        done
        paste <(cut -d' ' -f1 "$LOG/run-$w-epoll-$round") <(cut -d' ' -f1 "$LOG/run-$w-io_uring-$round") >>"$LOG/pairs-$w"
    done
done

for w in $WORKLOADS; do
    IFS=: read -r sessions size msgs <<<"$w"
    for be in epoll io_uring; do
        count_syscalls "$be" "$sessions" "$size" "$((msgs / 4))" >"$LOG/sys-$w-$be"
    done
done

# Zero-copy sends: ternbench send's body writes with and without IORING_OP_SEND_ZC, by size.
for round in $(seq "$ROUNDS"); do
    for size in $ZC_SIZES; do
        msgs=$(( 2000000000 / size / 4 )); [ "$msgs" -gt 50000 ] && msgs=50000
        plain=$(run_once io_uring 100 "$size" "$msgs" | cut -d' ' -f1)
        zc=$(run_once io_uring 100 "$size" "$msgs" TERN_SEND_ZC_MIN="$size" | cut -d' ' -f1)
        echo "$plain $zc" >>"$LOG/zc-$size"
    done
done

# Idle sessions: RSS of an idle sink, then with IDLE sessions held after EHLO, per backend.
for be in epoll io_uring; do
    port=$((port + 1)); pid=$(start_sink "$be" "$port")
    idle_session_rss "$pid" "$port" "$IDLE" >"$LOG/idle-$be"
    kill -INT "$pid"; wait "$pid" 2>/dev/null || true
done

{
    echo "# Reactor backends: epoll vs io_uring — $(date -u '+%Y-%m-%d %H:%M UTC')"
    echo
    echo "Command: \`ROUNDS=$ROUNDS SMALL_MSGS=$SMALL_MSGS LARGE_MSGS=$LARGE_MSGS perf/compare-backends.sh\` in a private network namespace (loopback only)."
    echo "Machine: $(nproc) cores, $(uname -r). Pipelined \`ternbench send\` → \`ternbench sink\`, both processes on the backend named; rounds interleaved (the first backend alternates), medians."
    echo
    echo "## Throughput and system calls"
    echo
    echo "| sessions | message | epoll msg/s | io_uring msg/s | io_uring / epoll (median of per-round ratios) | syscalls/msg sink epoll → io_uring | syscalls/msg send epoll → io_uring |"
    echo "|---:|---:|---:|---:|---:|---:|---:|"
    for w in $WORKLOADS; do
        IFS=: read -r sessions size msgs <<<"$w"
        e=$(awk '{print $1}' "$LOG/pairs-$w" | median)
        u=$(awk '{print $2}' "$LOG/pairs-$w" | median)
        r=$(awk '{printf "%.3f\n", $2/$1}' "$LOG/pairs-$w" | median)
        read -r se ce <"$LOG/sys-$w-epoll"
        read -r su cu <"$LOG/sys-$w-io_uring"
        echo "| $sessions | $((size / 1000)) KB | $e | $u | **$r** (per round: $(awk '{printf "%.2f ", $2/$1}' "$LOG/pairs-$w")) | $se → $su | $ce → $cu |"
    done
    echo
    echo "Target: io_uring ≥ 1.2× epoll and fewer system calls per message. System calls counted in a separate run of a quarter of the messages (the counting slows the processes down)."
    echo
    echo "### Where the CPU goes (µs per message, medians; user + system)"
    echo
    echo "| sessions | message | sink epoll | sink io_uring | send epoll | send io_uring | system share of all CPU, epoll → io_uring |"
    echo "|---:|---:|---:|---:|---:|---:|---:|"
    for w in $WORKLOADS; do
        IFS=: read -r sessions size msgs <<<"$w"
        cell() { echo "$(awk -v a="$2" '{print $a}' "$1" | median) + $(awk -v b="$3" '{print $b}' "$1" | median)"; }
        share() { awk '{printf "%.0f\n", ($3 + $5) / ($2 + $3 + $4 + $5) * 100}' "$1" | median; }
        echo "| $sessions | $((size / 1000)) KB | $(cell "$LOG/cpu-$w-epoll" 2 3) | $(cell "$LOG/cpu-$w-io_uring" 2 3) | $(cell "$LOG/cpu-$w-epoll" 4 5) | $(cell "$LOG/cpu-$w-io_uring" 4 5) | $(share "$LOG/cpu-$w-epoll")% → $(share "$LOG/cpu-$w-io_uring")% |"
    done
    echo
    echo "## Zero-copy send (IORING_OP_SEND_ZC) by message size, io_uring, 100 sessions"
    echo
    echo "\`ternbench send\` with \`TERN_SEND_ZC_MIN=SIZE\` (its message writes go out with SEND_ZC) against the default (plain sends; writes of 16 KiB and more with nothing queued are sent directly)."
    echo
    echo "| message | plain send msg/s | SEND_ZC msg/s | SEND_ZC / plain (median of per-round ratios) |"
    echo "|---:|---:|---:|---:|"
    for size in $ZC_SIZES; do
        echo "| $size B | $(awk '{print $1}' "$LOG/zc-$size" | median) | $(awk '{print $2}' "$LOG/zc-$size" | median) | $(awk '{printf "%.3f\n", $2/$1}' "$LOG/zc-$size" | median) |"
    done
    echo
    echo "## Memory: $IDLE idle sessions after EHLO"
    echo
    echo "| backend | idle sink RSS KiB | with sessions KiB | bytes per session |"
    echo "|---|---:|---:|---:|"
    for be in epoll io_uring; do
        read -r idle held <"$LOG/idle-$be"
        echo "| $be | $idle | $held | $(( (held - idle) * 1024 / IDLE )) |"
    done
    echo
    echo "Target: ≤ 2,048 bytes per idle session on io_uring (receive buffers come from the ring)."
} | tee "$OUT"
echo "written to $OUT"
