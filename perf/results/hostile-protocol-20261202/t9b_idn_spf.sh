#!/bin/bash
# SPF/DMARC bypass with IDN: a domain that publishes "-all" and DMARC p=reject (in its A-label, as
# DNS holds it) is refused for its A-label form but accepted when the forger writes it as a U-label.
. /tmp/h3-report/lib.sh
D=/tmp/h3t/idnspf; PORT=2613
mkenv $D $PORT
cat >> $D/test.zone <<'Z'
xn--mller-kva.test. TXT "v=spf1 -all"
_dmarc.xn--mller-kva.test. TXT "v=DMARC1; p=reject"
Z
start $D || exit 1
python3 - $PORT <<'PY'
import sys; sys.path.insert(0,'/tmp/h3-report'); from smtp import *
P=int(sys.argv[1])
for sender, frm, utf8 in [('a@xn--mller-kva.test', 'a@xn--mller-kva.test', False), ('a@müller.test', 'a@müller.test', True), ('a@MÜLLER.test', 'a@xn--mller-kva.test', True)]:
    s = conn(P, src='127.0.0.2'); rd(s); cmd(s, 'EHLO forger.example\r\n')
    r1 = cmd(s, 'MAIL FROM:<%s>%s\r\n' % (sender, ' SMTPUTF8' if utf8 else '')).decode().strip()
    r2 = cmd(s, 'RCPT TO:<bob@example.test>\r\n').decode().strip(); cmd(s, 'DATA\r\n')
    r3 = cmd(s, 'From: %s\r\nSubject: forged\r\n\r\nx\r\n.\r\n' % frm).decode().strip()
    print('MAIL FROM:<%s> From: %s -> %s | %s' % (sender, frm, r1, r3))
PY
sleep 2
for f in $D/mail/example.test/bob/new/*; do echo "--- $f"; grep -a -A3 "^Authentication-Results" $f | head -5; grep -a "^Received-SPF" $f; done
stop $D
