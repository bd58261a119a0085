#!/bin/bash
# Thousands of DKIM-Signature fields (various spellings): how many results, how long, how many DNS
# questions. Client 127.0.0.2 so the message is judged.
. /tmp/h3-report/lib.sh
D=/tmp/h3t/dkim; PORT=2617
mkenv $D $PORT 'limits {' '  message-size 20M' '}'
start $D || exit 1
python3 - $PORT <<'PY'
import sys, time; sys.path.insert(0,'/tmp/h3-report'); from smtp import *
P=int(sys.argv[1])
def send(label, hdrs):
    s = conn(P, src='127.0.0.2'); rd(s); cmd(s,'EHLO c.sender.test\r\n'); cmd(s,'MAIL FROM:<a@sender.test>\r\n'); cmd(s,'RCPT TO:<bob@example.test>\r\n'); cmd(s,'DATA\r\n')
    t0 = time.time(); r = cmd(s, hdrs + b'From: a@sender.test\r\nSubject: %s\r\n\r\nbody\r\n.\r\n' % label.encode(), 120)
    print('%-40s %.2fs %r' % (label, time.time() - t0, r.strip()))
sig = lambda i, name=b'DKIM-Signature:': name + b' v=1; a=rsa-sha256; d=d%d.sender.test; s=s%d; c=relaxed/relaxed; h=from:subject; bh=AAAA; b=AAAA\r\n' % (i, i)
send('5000 DKIM-Signature', b''.join(sig(i) for i in range(5000)))
send('3000 lower + 3000 "DKIM-Signature :"', b''.join(sig(i, b'dkim-signature:') for i in range(3000)) + b''.join(sig(i, b'DKIM-Signature :') for i in range(3000)))
send('20000 folded signatures', b''.join(b'DKIM-Signature: v=1; a=rsa-sha256;\r\n\td=x%d.test; s=s; h=from;\r\n bh=AAAA; b=AAAA\r\n' % i for i in range(20000)))
PY
sleep 3
for f in $D/mail/example.test/bob/new/*; do
  echo "=== $(grep -a -m1 '^Subject:' $f | tr -d '\r')"
  awk '/^Authentication-Results:/{p=1} p&&/^[^ \t]/&&!/^Authentication-Results:/{exit} p' $f | tr -d '\r' | grep -o "dkim=[a-z]*[^;]*" | sort | uniq -c | sed 's/^/  /' | cut -c1-160
done
stop $D
