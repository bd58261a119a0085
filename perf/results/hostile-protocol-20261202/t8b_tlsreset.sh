#!/bin/bash
# Outbound TLS history: a relay host seen with verified TLS, then plain: held; `ternctl tls reset`
# in another process lets the next attempt go.
. /tmp/h3-report/lib.sh
B=/tmp/h3t/hopB; A=/tmp/h3t/hopA
mkenv $B 2630 'certificates certs'; sed -i 's/^domain example.test {/domain tlsdest.example {/' $B/tern.conf; mkdir -p $B/mail/tlsdest.example/x/{new,cur,tmp}
mkenv $A 2631 'relay tlsdest.example via smtp://mx.example.test:2630' 'outbound ca-file /tmp/h3-report/ca/ca.pem' 'limits {' '  retry-interval 2s' '  retry-max-interval 4s' '}'
start $B && start $A || exit 1
send() { python3 - 2631 "$1" <<'PY'
import sys; sys.path.insert(0,'/tmp/h3-report'); from smtp import *
s=conn(int(sys.argv[1])); rd(s); cmd(s,'EHLO c\r\n'); cmd(s,'MAIL FROM:<alice@example.test>\r\n'); cmd(s,'RCPT TO:<x@tlsdest.example>\r\n'); cmd(s,'DATA\r\n'); print('  sent', sys.argv[2], cmd(s,'Subject: %s\r\n\r\nx\r\n.\r\n' % sys.argv[2]).strip())
PY
}
send one; sleep 3
echo "history: $(cd $A; $TERNCTL tls show mx.example.test --config tern.conf | tr '\n' ' ')"
echo "--- B restarted without TLS"; stop $B; sed -i 's/^certificates certs//' $B/tern.conf; start $B
send two; sleep 6
grep -a "mail:" $A/log | grep -v "mail: queued" | sed 's/^ternd\[[0-9]*\]: mail: /  /'
echo "--- ternctl tls reset at $(date +%T)"; (cd $A; $TERNCTL tls reset mx.example.test --config tern.conf)
sleep 8
grep -a "mail:" $A/log | grep -v "mail: queued" | tail -2 | sed 's/^ternd\[[0-9]*\]: mail: /  /'
echo "in B's Maildir: $(ls $B/mail/tlsdest.example/x/new | wc -l) message(s)"
stop $A; stop $B
