#!/bin/bash
# The same ENVID/ORCPT xtext injection in a failure bounce (pipe alias exiting 1).
. /tmp/h3-report/lib.sh
D=/tmp/h3t/binj; mkenv $D 2633; echo 'fails: | /bin/false' >> $D/aliases
start $D || exit 1
python3 - 2633 <<'PY'
import sys; sys.path.insert(0,'/tmp/h3-report'); from smtp import *
s=conn(int(sys.argv[1])); rd(s); cmd(s,'EHLO c\r\n'); print(cmd(s,'MAIL FROM:<alice@example.test> ENVID=x+0D+0AContent-Type:+20text/html+0D+0A+0D+0A<h1>Click</h1>\r\n'))
print(cmd(s,'RCPT TO:<fails@example.test> ORCPT=rfc822;y+0D+0AX-Injected:+20yes\r\n')); cmd(s,'DATA\r\n'); print(cmd(s,'Subject: b\r\n\r\nx\r\n.\r\n'))
PY
sleep 3; f=$(grep -l "Undelivered" $D/mail/example.test/alice/new/* | head -1); sed -n '/message\/delivery-status/,/^Status/p' $f | cat -v
stop $D
