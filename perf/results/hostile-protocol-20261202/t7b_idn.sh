#!/bin/bash
# IDN sender domains: SPF looks up the U-label as raw UTF-8 (no SPF record -> none), so a domain
# recorded over TLS in its A-label form is accepted in plaintext when the sender writes it as a
# U-label (SMTPUTF8), and a U-label sender's level is never recorded at all.
. /tmp/h3-report/lib.sh
D=/tmp/h3t/idn; PORT=2612
mkenv $D $PORT 'certificates certs'
start $D || exit 1
python3 - $PORT <<'PY'
import sys; sys.path.insert(0,'/tmp/h3-report'); from smtp import *
P=int(sys.argv[1])
def mail(sender, over_tls, utf8=False):
    s = conn(P, src='127.0.0.2'); rd(s); cmd(s, 'EHLO client.example\r\n')
    if over_tls: cmd(s,'STARTTLS\r\n'); s = tls(s); cmd(s, 'EHLO client.example\r\n')
    r = cmd(s, 'MAIL FROM:<%s>%s\r\n' % (sender, ' SMTPUTF8' if utf8 else '')).decode(errors='replace').strip()
    cmd(s, 'RCPT TO:<bob@example.test>\r\n'); cmd(s, 'DATA\r\n'); cmd(s, 'Subject: idn\r\n\r\nx\r\n.\r\n'); s.close(); return r
print('TLS   a@xn--bcher-kva.test           ', mail('a@xn--bcher-kva.test', True))
print('plain a@xn--bcher-kva.test (451)     ', mail('a@xn--bcher-kva.test', False))
print('plain a@bücher.test SMTPUTF8 (451?)  ', mail('a@bücher.test', False, True))
PY
sleep 2
echo "--- Received-SPF / Authentication-Results of the U-label message:"
grep -l "bücher" $D/mail/example.test/bob/new/* | head -1 | xargs grep -a "^Received-SPF\|^Authentication-Results" 
echo "--- ternctl spf check:"
(cd $D; for f in a@bücher.test a@xn--bcher-kva.test; do echo "  $f: $($TERNCTL spf check --ip 127.0.0.2 --helo c.example --from $f --config tern.conf | tr '\n' ' ')"; done)
stop $D
