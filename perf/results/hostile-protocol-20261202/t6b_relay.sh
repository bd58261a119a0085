#!/bin/bash
# Outbound: NOTIFY=SUCCESS relayed to a next hop without DSN (Action: relayed), with DSN (no report,
# parameters passed on); a refused transaction followed by RSET; odd ORCPT/ENVID passed on.
. /tmp/h3-report/lib.sh
D=/tmp/h3t/relay; PORT=2615
pkill_peers() { for p in $(cat $D/peer*.pid 2>/dev/null); do kill $p 2>/dev/null; done; }
mkenv $D $PORT 'relay nodsn.example via smtp://127.0.0.1:2620' 'relay dsn.example via smtp://127.0.0.1:2621' 'relay refuse.example via smtp://127.0.0.1:2622' \
  'limits {' '  retry-interval 2s' '}'
echo '127.0.0.1 A 127.0.0.1' >/dev/null
python3 peer.py 2620 $D/peer-nodsn.log & echo $! > $D/peer1.pid
python3 peer.py 2621 $D/peer-dsn.log --dsn & echo $! > $D/peer2.pid
python3 peer.py 2622 $D/peer-refuse.log --refuse-rcpt NOBODY --refuse-mail BADSENDER & echo $! > $D/peer3.pid
sleep 1
start $D || { pkill_peers; exit 1; }
python3 - $PORT <<'PY'
import sys, time; sys.path.insert(0,'/tmp/h3-report'); from smtp import *
P=int(sys.argv[1])
def send(sender, rcpts, envid=None, subj='t', s=None):
    s = s or conn(P); rd(s); cmd(s, 'EHLO c.example\r\n')
    r = [cmd(s, 'MAIL FROM:<%s>%s\r\n' % (sender, ' ENVID=' + envid if envid else '')).strip()]
    for rc, params in rcpts: r.append(cmd(s, 'RCPT TO:<%s> %s\r\n' % (rc, params)).strip())
    cmd(s, 'DATA\r\n'); r.append(cmd(s, 'Subject: %s\r\n\r\nbody\r\n.\r\n' % subj).strip()); s.close(); print(subj, r)
send('alice@example.test', [('x@nodsn.example', 'NOTIFY=SUCCESS ORCPT=rfc822;orig+2Bx@nodsn.example')], envid='ENV1', subj='nodsn')
send('alice@example.test', [('x@dsn.example', 'NOTIFY=SUCCESS ORCPT=rfc822;orig+2Bx@dsn.example')], envid='ENV2', subj='dsn')
send('alice@example.test', [('y@dsn.example', 'NOTIFY=SUCCESS ORCPT=rfc822;a+0D+0AMAIL+20FROM:<injected@evil>')], envid='E+0D+0ARSET', subj='dsn-crlf-xtext')
send('alice@example.test', [('nobody@refuse.example', '')], subj='refused-all')
send('alice@example.test', [('ok@refuse.example', '')], subj='after-refused')
send('badsender@example.test', [('ok3@refuse.example', '')], subj='mail-refused')
send('alice@example.test', [('ok4@refuse.example', '')], subj='after-mail-refused')
send('alice@example.test', [('nobody@refuse.example', 'NOTIFY=SUCCESS'), ('ok2@refuse.example', 'NOTIFY=SUCCESS')], subj='refused-one')
PY
sleep 6
echo "--- the non-DSN peer got:"; grep -a "MAIL\|RCPT\|RSET\|BODY" $D/peer-nodsn.log | sed 's/^/  /'
echo "--- the DSN peer got:"; grep -a "MAIL\|RCPT\|RSET\|BODY" $D/peer-dsn.log | sed 's/^/  /'
echo "--- the refusing peer got (RSET after the refused transaction?):"; grep -a "C:\|BODY" $D/peer-refuse.log | sed 's/^/  /'
echo "--- mail log:"; grep -a "mail:" $D/log | grep -v "mail: queued" | sed 's/^ternd\[[0-9]*\]: mail: /  /'
echo "--- reports in alice's Maildir:"
for f in $D/mail/example.test/alice/new/*; do echo "=== $(grep -a -m1 '^Subject:' $f | tr -d '\r')"; grep -a "^Original-Envelope-Id\|^Original-Recipient\|^Final-Recipient\|^Action\|^Status\|^Remote-MTA\|^Diagnostic" $f | tr -d '\r' | sed 's/^/  /'; done
stop $D; pkill_peers
