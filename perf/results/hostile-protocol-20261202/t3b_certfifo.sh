#!/bin/bash
# certificates DIR: a fullchain.pem that is a FIFO (or a symlink to one) is not refused like the
# other files: `ternd --check`, start-up and SIGHUP block on it for ever.
. /tmp/h3-report/lib.sh
D=/tmp/h3t/certfifo; PORT=2608
mkenv $D $PORT 'certificates certs'
start $D || exit 1
echo "--- running ternd; replace fullchain.pem by a FIFO and SIGHUP"
mv $D/certs/mx.example.test/fullchain.pem $D/fullchain.real; mkfifo $D/certs/mx.example.test/fullchain.pem
kill -HUP $(cat $D/pid); sleep 3
echo "log after the first SIGHUP:"; tail -n +10 $D/log | grep -v "^$"
echo "--- a session still works?"
timeout 10 python3 -c "
import sys; sys.path.insert(0,'/tmp/h3-report'); from smtp import *
s=conn($PORT); print(rd(s)); print(cmd(s,'EHLO x\r\n')[-30:])"
echo "--- fix the file (a regular file again), SIGHUP again: is the reload heard?"
rm $D/certs/mx.example.test/fullchain.pem; cp $D/fullchain.real $D/certs/mx.example.test/fullchain.pem
echo 'extra: bob' >> $D/aliases
kill -HUP $(cat $D/pid); sleep 3
tail -n 5 $D/log
echo "--- SIGTERM: does it drain and exit?"
kill -TERM $(cat $D/pid); sleep 12; if kill -0 $(cat $D/pid) 2>/dev/null; then echo "still running 12 s after SIGTERM"; ls -l /proc/$(cat $D/pid)/fd 2>/dev/null | grep -c fifo; else echo exited; fi
tail -n 3 $D/log
# unblock the reader if any, then kill
( exec 3>$D/certs/mx.example.test/fullchain.pem ) 2>/dev/null &
sleep 1; kill -9 $(cat $D/pid) 2>/dev/null
