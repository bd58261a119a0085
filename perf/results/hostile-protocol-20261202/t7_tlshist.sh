#!/bin/bash
# Incoming TLS history: SPF-pass senders over STARTTLS, then plaintext; case, IDN, trailing-dot
# tricks; senders whose SPF does not pass; ternctl tls show/reset. Client source 127.0.0.2 (SPF checked).
. /tmp/h3-report/lib.sh
D=/tmp/h3t/tlsh; PORT=2611
mkenv $D $PORT 'certificates certs' 'spf tag'
cat >> $D/test.zone <<'Z'
pass-all.test. TXT "v=spf1 +all"
neutral.test. TXT "v=spf1 ?all"
none.test. A 127.0.0.9
empty.test. TXT ""
Z
start $D || exit 1
python3 - $PORT <<'PY'
import sys; sys.path.insert(0,'/tmp/h3-report'); from smtp import *
P=int(sys.argv[1])
def mail(sender, over_tls, utf8=False, src='127.0.0.2'):
    s = conn(P, src=src); rd(s); cmd(s, 'EHLO client.example\r\n')
    if over_tls: cmd(s,'STARTTLS\r\n'); s = tls(s); cmd(s, 'EHLO client.example\r\n')
    r = cmd(s, 'MAIL FROM:<%s>%s\r\n' % (sender, ' SMTPUTF8' if utf8 else ''))
    s.close(); return r.decode(errors='replace').strip()
def case(label, sender, over_tls, **kw): print('  %-62s %s' % (label, mail(sender, over_tls, **kw)))
case('plain a@sender.test (nothing recorded yet)', 'a@sender.test', False)
case('TLS   a@sender.test (SPF pass: recorded)', 'a@sender.test', True)
case('plain a@sender.test (must be 451 4.7.3)', 'a@sender.test', False)
case('plain A@SENDER.TEST', 'A@SENDER.TEST', False)
case('plain a@sender.test. (trailing dot)', 'a@sender.test.', False)
case('plain "x@other.test"@sender.test', '"x@other.test"@sender.test', False)
case('plain <@relay.example:a@sender.test> (source route)', '@relay.example:a@sender.test', False)
case('plain a@other.test (a different domain: must pass)', 'a@other.test', False)
case('plain a@sender.test from 127.0.0.1 (SPF not checked: passes)', 'a@sender.test', False, src='127.0.0.1')
case('TLS   a@bücher.test SMTPUTF8 (U-label, SPF pass)', 'a@bücher.test', True, utf8=True)
case('plain a@xn--bcher-kva.test (A-label: must be 451)', 'a@xn--bcher-kva.test', False)
case('plain a@BÜCHER.test SMTPUTF8 (must be 451)', 'a@BÜCHER.test', False, utf8=True)
case('plain a@ｂüｃｈｅｒ.test SMTPUTF8 fullwidth (must be 451)', 'a@ｂüｃｈｅｒ.test', False, utf8=True)
for d in ['softfail.test', 'neutral.test', 'none.test', 'fail.test', 'empty.test', 'nx.test']:
    case('TLS   a@%s (SPF not pass: nothing recorded)' % d, 'a@' + d, True)
    case('plain a@%s (must pass)' % d, 'a@' + d, False)
case('TLS   a@pass-all.test (+all: anyone passes)', 'a@pass-all.test', True)
case('plain a@pass-all.test', 'a@pass-all.test', False)
PY
echo "--- tls-history files:"; ls $D/spool/tls-history/ 2>&1 | sed 's/^/  /'
echo "--- ternctl tls show:"
for n in sender.test SENDER.TEST. bücher.test xn--bcher-kva.test softfail.test '../etc' 'a/b' 'xn--zz' ''; do printf '  %-20s ' "'$n'"; (cd $D; $TERNCTL tls show "$n" --config tern.conf 2>&1 | tr '\n' ' '; echo "rc=$?"); done
echo "--- ternctl tls reset SENDER.TEST. then plaintext:"
(cd $D; $TERNCTL tls reset SENDER.TEST. --config tern.conf)
python3 - $PORT <<'PY'
import sys; sys.path.insert(0,'/tmp/h3-report'); from smtp import *
s = conn(int(sys.argv[1]), src='127.0.0.2'); rd(s); cmd(s, 'EHLO c\r\n'); print('  plain a@sender.test after reset:', cmd(s,'MAIL FROM:<a@sender.test>\r\n').strip())
PY
echo "--- log:"; grep -a "tls:\|4.7.3\|sent mail over\|tls history" $D/log | sed 's/^ternd\[[0-9]*\]: /  /'
stop $D
