#!/usr/bin/env bash
# perf/probe-opensmtpd.sh — why OpenSMTPD relays slowly in perf/compare-relay.sh: it relays N
# messages through OpenSMTPD (Debian's package, unpacked as compare-relay.sh does) to a sink, with
# `strace -tt` on the sink, once to `ternbench sink` (epoll backend, so reads are system calls) and
# once to Postfix's `smtp-sink`, in a private network namespace. It prints, per sink, the time from
# a message's body to its final "." line (the same write on a client that writes them together)
# and the pauses between OpenSMTPD's sessions.
#
#   perf/probe-opensmtpd.sh            # N=250 messages
set -euo pipefail
cd "$(dirname "$0")/.."
. perf/lib.sh

opensmtpd_fetch || { echo "cannot fetch OpenSMTPD's package"; exit 1; }
command -v strace >/dev/null || apt-get install -y -qq strace >/dev/null
tern_enter_netns "$@"

N=${N:-250}
BINDIR=$(tern_bindir)
WORK=$(mktemp -d /var/tmp/tern-probe.XXXXXX)
trap 'kill $(jobs -p) 2>/dev/null || true; rm -rf "$WORK"' EXIT
opensmtpd_unpack "$WORK" 2600 || { echo "cannot unpack OpenSMTPD"; exit 1; }

probe() {  # NAME SINK-COMMAND...
    local name=$1; shift
    opensmtpd_fresh_queue
    strace -f -tt -o "$WORK/$name.strace" -e trace=read,accept,accept4,close "$@" >"$WORK/$name.log" 2>&1 &
    local sink=$!
    wait_port 2600
    "$WORK/root/usr/sbin/smtpd" -d -f "$WORK/smtpd.conf" >"$WORK/smtpd-$name.log" 2>&1 &
    local smtpd=$!
    wait_port 2527
    sleep 2  # it listens before it is ready to queue
    "$BINDIR/ternbench" send --server 127.0.0.1:2527 --sessions 20 --messages "$N" --size 1000 --to rcpt@relay.example >"$WORK/send-$name.log" 2>&1 || { echo "$name: ternbench send failed:"; tail -5 "$WORK/send-$name.log"; }
    local t0=$SECONDS
    while [ "$(grep -c 'mta delivery.*result="Ok"' "$WORK/smtpd-$name.log")" -lt "$N" ] && [ $((SECONDS - t0)) -lt 60 ]; do sleep 0.2; done
    # The sink itself, not strace: strace ends with its tracee.
    kill "$smtpd" 2>/dev/null || true; pkill -f "^$1 .*127.0.0.1:2600" || true; wait "$smtpd" "$sink" 2>/dev/null || true
    python3 - "$name" "$WORK/$name.strace" "$(grep -c 'mta delivery.*result="Ok"' "$WORK/smtpd-$name.log")" "$N" <<'PY'
import re, statistics, sys
name, path, done, n = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4]
def t(s):
    h, m, x = s.split(":")
    return int(h) * 3600 + int(m) * 60 + float(x)
body = None; gaps = []; accepts = []; closes = []
for line in open(path):
    m = re.match(r"\d+\s+([\d:.]+) (\w+)\((.*)", line)
    if not m: continue
    ts, call, rest = t(m.group(1)), m.group(2), m.group(3)
    if call == "read" and '"Received: ' in rest: body = ts
    elif call == "read" and '".\\r\\n"' in rest and body is not None:
        gaps.append((ts - body) * 1000); body = None
    elif call.startswith("accept") and not rest.endswith("EAGAIN (Resource temporarily unavailable)"): accepts.append(ts)
pauses = [b - a for a, b in zip(accepts, accepts[1:])]
print(f"{name}: {done} of {n} relayed; body → final '.' median {statistics.median(gaps):.1f} ms (n={len(gaps)}); "
      f"sessions {len(accepts)}, seconds between session starts: {', '.join(f'{p:.1f}' for p in pauses)}")
PY
}
probe ternbench-sink "$BINDIR/ternbench" sink --listen 127.0.0.1:2600 --io-backend epoll
probe smtp-sink /usr/sbin/smtp-sink -u nobody 127.0.0.1:2600 1000
