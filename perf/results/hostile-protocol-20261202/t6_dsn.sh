#!/bin/bash
# NOTIFY=SUCCESS success reports: local, alias, pipe alias, null sender, odd ENVID/ORCPT xtext.
. /tmp/h3-report/lib.sh
D=/tmp/h3t/dsn; PORT=2614
mkenv $D $PORT
start $D || exit 1
python3 - $PORT <<'PY'
import sys; sys.path.insert(0,'/tmp/h3-report'); from smtp import *
P=int(sys.argv[1])
def send(sender, rcpts, envid=None, subj='t'):
    s = conn(P); rd(s); cmd(s, 'EHLO c.example\r\n')
    r = [cmd(s, 'MAIL FROM:<%s>%s\r\n' % (sender, ' ENVID=' + envid if envid else '')).strip()]
    for rc, params in rcpts: r.append(cmd(s, 'RCPT TO:<%s> %s\r\n' % (rc, params)).strip())
    cmd(s, 'DATA\r\n'); r.append(cmd(s, 'Subject: %s\r\nX-Secret-Body-Marker: no\r\n\r\nBODY-SHOULD-NOT-BE-RETURNED\r\n.\r\n' % subj).strip()); s.close()
    print(subj, r)
send('alice@example.test', [('bob@example.test', 'NOTIFY=SUCCESS ORCPT=rfc822;bob+2Btag@example.test')], envid='env+2B1', subj='local')
send('alice@example.test', [('team@example.test', 'NOTIFY=SUCCESS')], subj='alias')
send('alice@example.test', [('tubo@example.test', 'NOTIFY=SUCCESS')], subj='pipe')
send('', [('bob@example.test', 'NOTIFY=SUCCESS')], subj='nullsender')
send('alice@example.test', [('bob@example.test', 'NOTIFY=SUCCESS ORCPT=rfc822;x+0D+0AX-Injected:+20orcpt+0D+0A')], envid='e+0D+0AX-Injected:+20envid', subj='crlf-xtext')
send('alice@example.test', [('bob@example.test', 'NOTIFY=SUCCESS ORCPT=rfc822;+00+1B[31m+7F+C3+A9')], envid='+00+1B+FF+FE', subj='ctl-xtext')
send('alice@example.test', [('bob@example.test', 'NOTIFY=SUCCESS ORCPT=utf-8;caf\\x{E9}@example.test')], subj='utf8-orcpt')
send('alice@example.test', [('bob@example.test', 'NOTIFY=SUCCESS ORCPT=x-weird;' + 'A'*400)], subj='long-orcpt')
send('alice@example.test', [('bob@example.test', 'NOTIFY=SUCCESS,FAILURE,DELAY')], subj='all')
send('alice@example.test', [('bob@example.test', 'NOTIFY=SUCCESS'), ('bob+x@example.test', 'NOTIFY=NEVER')], subj='dup-same-mailbox')
PY
sleep 4
echo "--- mail log"; grep -a "mail:" $D/log | sed 's/^ternd\[[0-9]*\]: mail: /  /' | grep -v "^  queued"
echo "--- success reports in alice's Maildir"
for f in $D/mail/example.test/alice/new/*; do
  if grep -q "Successful Mail Delivery Report" $f; then
    echo "=== $(grep -a -m1 '^Subject: ' $f | tr -d '\r') / original subject: $(grep -a '^Subject: ' $f | sed -n 2p | tr -d '\r')"
    grep -a -n "^Original-Envelope-Id\|^Original-Recipient\|^Final-Recipient\|^Action\|^Status\|^Diagnostic\|^X-Injected\|BODY-SHOULD\|mail/example\|/new/" $f | cat -v | sed 's/^/  /'
  fi
done
stop $D
