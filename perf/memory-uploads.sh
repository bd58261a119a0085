#!/usr/bin/env bash
# Memory while N sessions each upload a SIZE-byte message at once (issue 17: a session holds at
# most about 64 KiB of a message; 1,000 × 10 MB must keep ternd under 256 MiB of RSS). Runs the
# current build and, when BEFORE_BIN is given (a ternd built from an earlier commit), that one in
# the same run; reports each one's peak RSS (VmHWM, all its processes), the messages accepted and
# whether every delivered copy is intact (SHA-256 of what was sent).
# Usage: perf/memory-uploads.sh [N] [SIZE]   (defaults 1000 10000000)
set -euo pipefail
cd "$(dirname "$0")/.."
. perf/lib.sh
tern_enter_netns "$@"
N=${1:-1000}
SIZE=${2:-10000000}
BIN=$(tern_bindir)
run_one() { # label ternd
    local label=$1 ternd=$2 dir port pid
    dir=$(mktemp -d /var/tmp/tern-uploads.XXXXXX)
    chmod 755 "$dir"  # the queue user reaches the spool and the Maildirs through it
    port=$((20000 + RANDOM % 20000))
    mkdir -p "$dir/mail/example.test/bob/"{new,cur,tmp}
    cat > "$dir/tern.conf" <<CONF
hostname mx.example.test
spool $dir/spool
listen smtp 127.0.0.1:$port
deliver maildir $dir/mail/%{domain}/%{user}
limits {
    message-size 64M
    data-timeout 10m
    # 1,000 × 10 MB ending at once is 10 GB for one group commit to take: more than this disk
    # writes in the default 30 s (those would get 451 and be sent again; here they wait).
    spool-timeout 10m
}
domain example.test {
}
CONF
    ulimit -n "$(ulimit -Hn)"
    "$ternd" --config "$dir/tern.conf" > "$dir/ternd.log" 2>&1 &
    pid=$!
    wait_port "$port"
    python3 perf/uploads.py 127.0.0.1 "$port" "$N" "$SIZE" bob@example.test > "$dir/uploads.out"
    local peak=0 p h each=""
    for p in $pid $(pgrep -P "$pid" || true); do
        h=$(awk '/VmHWM/ {print $2}' "/proc/$p/status" 2>/dev/null || echo 0)
        each="$each $(tr '\0' ' ' < "/proc/$p/cmdline" 2>/dev/null | awk '{print $2}')=$h"
        peak=$((peak + h))
    done
    local accepted
    accepted=$(grep -c " 250 " "$dir/uploads.out" || true)
    # Every delivered copy: its body (after our trace fields) hashed like the sender's.
    local want=$accepted got=0
    for _ in $(seq 600); do
        got=$(ls "$dir/mail/example.test/bob/new" | wc -l)
        [ "$got" -ge "$want" ] && break
        sleep 0.5
    done
    local intact
    intact=$(python3 - "$dir" <<'PY'
import hashlib, os, sys
d = sys.argv[1]
sent = {}
for line in open(os.path.join(d, "uploads.out")):
    parts = line.split()
    if len(parts) >= 3 and parts[0].startswith("<upload-"):
        sent[parts[0]] = parts[1]
ok = bad = 0
new = os.path.join(d, "mail/example.test/bob/new")
for name in os.listdir(new):
    data = open(os.path.join(new, name), "rb").read()
    start = data.find(b"From: u")
    mid = data[data.find(b"Message-ID: ") + 12:].split(b"\r\n", 1)[0].decode()
    if sent.get(mid) == hashlib.sha256(data[start:]).hexdigest():
        ok += 1
    else:
        bad += 1
print(f"{ok} intact, {bad} damaged")
PY
)
    kill -TERM "$pid"; wait "$pid" || true
    printf '%-8s sessions=%d size=%d accepted=%d delivered=%d (%s) peak_rss_kib=%d (VmHWM KiB by process:%s)\n' "$label" "$N" "$SIZE" "$accepted" "$got" "$intact" "$peak" "$each"
    # The other answers, by reply code (a refusal is a temporary 4xx the client retries).
    awk '$1 ~ /^<upload-/ && $3 != "250" {print "  answered " $3 " " $4}' "$dir/uploads.out" | sort | uniq -c | head -5
    grep '^error' "$dir/uploads.out" | sort | uniq -c | head -3 || true
    rm -rf "$dir"
}
echo "# perf/memory-uploads.sh $N $SIZE  ($(date -u +%F))"
run_one current "$BIN/ternd"
if [ -n "${BEFORE_BIN:-}" ]; then run_one before "$BEFORE_BIN"; fi
