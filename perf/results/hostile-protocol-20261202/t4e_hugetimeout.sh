#!/bin/bash
# A command-timeout that fits in UInt64 nanoseconds (9999999999 s) but is absurdly long: what happens
# to the event loop (CPU, other sessions' timers) and to SIGTERM?
. /tmp/h3-report/lib.sh
D=/tmp/h3t/huge; PORT=2642
mkenv $D $PORT 'limits {' '  command-timeout 30s' '}'
start $D || exit 1; P=$(cat $D/pid)
python3 - $PORT > $D/old.out <<'PY' &
import sys, time; sys.path.insert(0,'/tmp/h3-report'); from smtp import *
s=conn(int(sys.argv[1])); rd(s); cmd(s,'EHLO x\r\n'); t0=time.time()
r = rd(s, 45); print('session opened with command-timeout 30s: after %.0fs %r' % (time.time()-t0, r))
PY
OLD=$!
sleep 1
sed -i 's/command-timeout 30s/command-timeout 9999999999/' $D/tern.conf; kill -HUP $P; sleep 1
python3 -c "
import sys; sys.path.insert(0,'/tmp/h3-report'); from smtp import *
s=conn($PORT); print('new session:', rd(s).strip(), cmd(s,'EHLO x\r\n')[:20])"
sleep 3; echo "ternd CPU after the reload: $(ps -o %cpu= -p $P)%  (threads: $(ps -L -o %cpu= -p $P | tr '\n' ' '))"
wait $OLD; cat $D/old.out
kill -TERM $P; sleep 13; kill -0 $P 2>/dev/null && echo "ternd still running 13 s after SIGTERM" || echo "ternd exited after SIGTERM"
tail -3 $D/log
kill -9 $P 2>/dev/null
