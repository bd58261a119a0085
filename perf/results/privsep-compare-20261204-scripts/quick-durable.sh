#!/bin/bash
# Quick durable run: BIN=dir MSGS=N [PERF=1]; prints ternbench msg/s; perf report per process.
set -u
if [ -z "${IN_NS:-}" ]; then exec unshare -n env IN_NS=1 "$0" "$@"; fi
ip link set lo up
BIN=${BIN:-/var/tmp/bin-head}; MSGS=${MSGS:-20000}
W=$(mktemp -d /var/tmp/prof/run.XXXX); chmod 755 $W; cd $W
mkdir -p mail/example.test/rcpt/{new,cur,tmp}
chown -R _ternq: mail 2>/dev/null
cat > tern.conf <<CF
hostname mx.example.test
spool spool
listen smtp 127.0.0.1:2525
domain example.test {
}
deliver maildir $W/mail/%{domain}/%{user}
CF
chown -R _ternq: $W; ${RUNAS:-} $BIN/ternd --config $W/tern.conf 2>$W/log &
T=$!
for i in $(seq 200); do (exec 3<>/dev/tcp/127.0.0.1/2525) 2>/dev/null && break; sleep 0.05; done
$BIN/ternbench send --server 127.0.0.1:2525 --sessions 100 --messages 2000 --size 1000 --to rcpt@example.test >/dev/null 2>&1
if [ -n "${PERF:-}" ]; then
  perf record -F 2000 -g -a -o $W/perf.data -- $BIN/ternbench send --server 127.0.0.1:2525 --sessions 100 --messages $MSGS --size 1000 --to rcpt@example.test --json > $W/r.json 2>/dev/null
else
  $BIN/ternbench send --server 127.0.0.1:2525 --sessions 100 --messages $MSGS --size 1000 --to rcpt@example.test --json > $W/r.json 2>/dev/null
fi
python3 -c "import json; r=json.load(open('$W/r.json')); print('msg/s', r['messages_per_s'], 'accepted', r['accepted'], 'p99 eod', r['latency']['end_of_data']['p99_ms'])"
kill -TERM $T; wait $T
echo $W
