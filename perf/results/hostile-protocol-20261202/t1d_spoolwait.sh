#!/bin/bash
# After a long wait for the spool (frozen disk), the client's command time is not restarted:
# the 421 command timeout follows the 451 (or 250) almost at once. Needs root (loop mount, fsfreeze).
# Usage: t1d_spoolwait.sh [command-timeout-s] [spool-timeout-s]
CT=${1:-5}; ST=${2:-12}
. /tmp/h3-report/lib.sh
D=/tmp/h3t/spoolwait; PORT=2606; M=/tmp/h3t/mnt6
umount $M 2>/dev/null
mkenv $D $PORT 'limits {' "  command-timeout ${CT}s" "  spool-timeout ${ST}s" '}'
truncate -s 64M $D/spool.img && mkfs.ext4 -q -F $D/spool.img && mkdir -p $M && mount -o loop $D/spool.img $M
sed -i "s#^spool spool#spool $M/spool#" $D/tern.conf
start $D || exit 1
fsfreeze -f $M
python3 - $PORT <<'PY'
import sys, time; sys.path.insert(0,'/tmp/h3-report'); from smtp import *
P=int(sys.argv[1]); s=conn(P); rd(s); cmd(s,'EHLO x\r\n'); cmd(s,'MAIL FROM:<a@sender.test>\r\n'); cmd(s,'RCPT TO:<bob@example.test>\r\n'); cmd(s,'DATA\r\n')
t0=time.time(); r = cmd(s, 'Subject: t\r\n\r\nhello\r\n.\r\n', 60); print('%.1fs end of data: %r' % (time.time()-t0, r))
t1=time.time(); r = rd(s, 60); print('%.1fs later, unprompted: %r' % (time.time()-t1, r))
PY
fsfreeze -u $M
sleep 0.5; grep "closed\|spool:" $D/log | tail -3
stop $D; umount $M
