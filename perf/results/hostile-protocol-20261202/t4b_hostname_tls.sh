#!/bin/bash
# SIGHUP: "hostname changed: takes effect at the next start" -- but the greeting/EHLO of new
# sessions follow the new hostname whenever a limit changes in the same reload (and keep it after
# the hostname is changed back). Same path for TLS on/off: certificates added to a ternd started
# without TLS.
. /tmp/h3-report/lib.sh
D=/tmp/h3t/hup2; PORT=2610
mkenv $D $PORT 'limits {' '  errors 10' '}'
start $D || exit 1
greet() { python3 - $PORT "$1" <<'PY'
import sys; sys.path.insert(0,'/tmp/h3-report'); from smtp import *
s=conn(int(sys.argv[1])); g=rd(s); e=cmd(s,'EHLO x\r\n'); r=cmd(s,'STARTTLS\r\n'); print('  %-40s greeting=%r STARTTLS offered=%s, STARTTLS -> %r' % (sys.argv[2], g.strip(), b'STARTTLS' in e, r))
cmd(s,'RSET\r\n'); cmd(s,'MAIL FROM:<a@sender.test>\r\n'); cmd(s,'RCPT TO:<bob@example.test>\r\n'); cmd(s,'DATA\r\n'); cmd(s,'Subject: hi\r\n\r\nx\r\n.\r\n')
PY
}
hup() { local n=$(wc -l < $D/log); kill -HUP $(cat $D/pid); sleep 1.5; tail -n +$((n+1)) $D/log | grep "reload\|tls" | sed 's/^ternd\[[0-9]*\]: /    log: /'; }
greet "at start"
sed -i 's/^hostname .*/hostname other.example.test/' $D/tern.conf; hup; greet "hostname changed, no limit changed"
sed -i 's/errors 10/errors 11/' $D/tern.conf; hup; greet "hostname changed + errors 11"
sed -i 's/^hostname .*/hostname mx.example.test/' $D/tern.conf; hup; greet "hostname changed back (limits as before)"
echo 'certificates certs' >> $D/tern.conf; sed -i 's/errors 11/errors 12/' $D/tern.conf; hup; greet "certificates added + errors 12"
sleep 2; echo "  Received: lines of the delivered messages (hostname used there):"
for f in $D/mail/example.test/bob/new/*; do grep -m1 -A1 "^Received:" $f | tr -d '\r' | tr '\n' ' '; echo; done | sed 's/^/    /'
tail -3 $D/log | grep closed
stop $D
