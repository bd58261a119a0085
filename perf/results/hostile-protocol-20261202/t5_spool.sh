#!/bin/bash
# SIZE= vs the spool disk's free space; a frozen spool disk vs the command timeout.
# Needs root (loop mount, fsfreeze).
. /tmp/h3-report/lib.sh
D=/tmp/h3t/spooltest; PORT=2605
umount /tmp/h3t/mnt5 2>/dev/null
mkenv $D $PORT 'limits {' '  message-size 1G' '  command-timeout 5s' '  data-timeout 5s' '  spool-timeout 20s' '}'
truncate -s 64M $D/spool.img && mkfs.ext4 -q -F $D/spool.img && mkdir -p /tmp/h3t/mnt5 && mount -o loop $D/spool.img /tmp/h3t/mnt5
sed -i 's#^spool spool#spool /tmp/h3t/mnt5/spool#' $D/tern.conf
start $D || exit 1
df -B1 /tmp/h3t/mnt5 | tail -1
python3 - $PORT <<'PY'
import sys; sys.path.insert(0,'/tmp/h3-report'); from smtp import *
P=int(sys.argv[1]); s=conn(P, src='127.0.0.1'); rd(s); cmd(s,'EHLO x\r\n')
for v in ['40000000', '60000000', '1073741824', '1073741825', '9223372036854775807', '9223372036854775808', '99999999999999999999999999999', '0', '-1', '+5', '0x10', '١٢٣', '00000000000000000000000000000000000000001']:
    r = cmd(s, 'MAIL FROM:<a@sender.test> SIZE=%s\r\n' % v); print('SIZE=%-32s %r' % (v, r)); cmd(s,'RSET\r\n')
PY
echo "--- freeze the spool disk, send a message: the client must get 451 at spool-timeout (20 s), not 421 at command-timeout (5 s)"
fsfreeze -f /tmp/h3t/mnt5
python3 - $PORT <<'PY'
import sys, time; sys.path.insert(0,'/tmp/h3-report'); from smtp import *
P=int(sys.argv[1]); s=conn(P); rd(s); cmd(s,'EHLO x\r\n'); print(cmd(s,'MAIL FROM:<a@sender.test>\r\n')); cmd(s,'RCPT TO:<bob@example.test>\r\n'); cmd(s,'DATA\r\n')
t0=time.time(); r = cmd(s, 'Subject: t\r\n\r\nhello\r\n.\r\n', 40); print('%.1fs %r' % (time.time()-t0, r))
t0=time.time(); r = cmd(s, 'MAIL FROM:<a@sender.test>\r\n', 40); print('%.1fs next MAIL: %r' % (time.time()-t0, r))
PY
fsfreeze -u /tmp/h3t/mnt5
sleep 1; grep -v "^ternd.*info: \(io\|dns\|outbound\|dmarc\|tls\|auth\|listen\)" $D/log | tail -8
stop $D; umount /tmp/h3t/mnt5
