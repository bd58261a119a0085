#!/bin/bash
# Durations without an upper bound: `ternd --check` says OK, then ternd traps (arithmetic overflow)
# - at start (command-timeout), at SIGHUP (see t4_sighup.sh), or at the first message (spool-timeout);
# a session-timeout that fits in UInt64 nanoseconds but wraps `now + timeout` ends every session at once.
. /tmp/h3-report/lib.sh
PORT=2618
for lim in 'command-timeout 99999999999' 'spool-timeout 99999999999' 'session-timeout 18446744073' 'write-timeout 99999999999' 'queue-lifetime 9223372036854775807'; do
  D=/tmp/h3t/ovf; mkenv $D $PORT 'limits {' "  $lim" '}'
  chk=$(cd $D; $TERND --check --config tern.conf)
  ( cd "$D" && exec "$TERND" --config tern.conf --loops 1 ) > "$D/log" 2>&1 & pid=$!
  for i in $(seq 50); do grep -q "ready\|overflow" $D/log && break; sleep 0.1; done
  r=$(timeout 10 python3 - $PORT 2>&1 <<'PY'
import sys, time; sys.path.insert(0,'/tmp/h3-report'); from smtp import *
try:
    s=conn(int(sys.argv[1])); g=rd(s); t0=time.time(); e=cmd(s,'EHLO x\r\n'); cmd(s,'MAIL FROM:<a@sender.test>\r\n'); cmd(s,'RCPT TO:<bob@example.test>\r\n'); cmd(s,'DATA\r\n')
    r=cmd(s,'Subject: x\r\n\r\nx\r\n.\r\n'); print('greeting %r, EHLO %r..., end of data %r after %.1fs' % (g.strip(), e[:20], r.strip(), time.time()-t0))
except Exception as ex: print('client: %r' % ex)
PY
)
  sleep 0.5
  state=$(kill -0 $pid 2>/dev/null && echo "running" || echo "DEAD")
  printf '%-40s --check: %-18s ternd: %-8s %s | %s\n' "$lim" "$chk" "$state" "$r" "$(grep -a -m1 -o 'overflow.*\|at /tmp/h3/Sources[^ ]*' $D/log | tail -1)"
  grep -a -m2 "Sources/.*swift" $D/log | grep -v "^\s*$" | head -1 | sed 's/^/    /'
  grep -a "closed" $D/log | head -1 | sed 's/^/    /'
  kill $pid 2>/dev/null; sleep 0.5
done
