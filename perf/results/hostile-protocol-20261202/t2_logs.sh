#!/bin/bash
# Control bytes into the log: HELO, MAIL/RCPT (with and without SMTPUTF8, invalid UTF-8), AUTH user
# names (PLAIN and LOGIN), pipe alias arguments, a bare LF in DATA, too many errors, a TLS handshake
# failure, HTTP. Then every log line is scanned for control bytes, C1, and invisible line/bidi marks.
. /tmp/h3-report/lib.sh
D=/tmp/h3t/logs; PORT=2602
mkenv $D $PORT 'certificates certs'
sed -i 's#aliases aliases#aliases aliases\n    users users#' $D/tern.conf
printf 'secret\n' | $TERNCTL user add alice@example.test --config $D/tern.conf >/dev/null
printf 'ctl: | /bin/echo "a\\x1bb\\nc\\rd\\te" "\xe2\x80\xae gro.live" "\x1b[31mred"\n' >> $D/aliases
printf 'rtl\xe2\x80\xae: bob\n' >> $D/aliases
$TERND --check --config $D/tern.conf
start $D || exit 1
python3 - $PORT <<'PY'
import sys, time, base64, socket, ssl; sys.path.insert(0,'/tmp/h3-report'); from smtp import *
P=int(sys.argv[1])
evil = [b'\x00', b'\x1b[2J', b'\r', b'\x7f', b'\xc2\x85', b'\xc2\x9b', b'\xff\xfe', b'\xe2\x80\xa8', b'\xe2\x80\xae', b'\xed\xa0\x80', b'\xc0\x8a', b'\x0b\x0c']
for src in ['127.0.0.1', '127.0.0.2']:
  for e in evil:
    s = conn(P, src=src); rd(s)
    cmd(s, b'EHLO h' + e + b'.example\r\n'); cmd(s, b'HELO h' + e + b'.example\r\n'); cmd(s, b'EHLO ok.example\r\n')
    cmd(s, b'MAIL FROM:<a' + e + b'@sender.test>\r\n'); cmd(s, b'RSET\r\n')
    cmd(s, b'MAIL FROM:<a' + e + b'@sender.test> SMTPUTF8\r\n'); cmd(s, b'RSET\r\n')
    cmd(s, b'MAIL FROM:<a@sender' + e + b'.test> SMTPUTF8\r\n')
    cmd(s, b'RCPT TO:<x' + e + b'@elsewhere.example>\r\n'); cmd(s, b'RCPT TO:<x' + e + b'@example.test>\r\n')
    cmd(s, b'RCPT TO:<"x' + e + b'"@example.test>\r\n')
    cmd(s, b'QUIT\r\n'); s.close()
# AUTH user names over TLS
for e in evil:
    s = conn(P); rd(s); cmd(s,'EHLO x\r\n'); cmd(s,'STARTTLS\r\n'); ss = tls(s); cmd(ss,'EHLO x\r\n')
    ir = base64.b64encode(b'\x00alice' + e + b'@example.test\x00pw').decode()
    print(cmd(ss, 'AUTH PLAIN %s\r\n' % ir)[:60])
    ss.close()
    s = conn(P); rd(s); cmd(s,'EHLO x\r\n'); cmd(s,'STARTTLS\r\n'); ss = tls(s); cmd(ss,'EHLO x\r\n')
    cmd(ss, 'AUTH LOGIN\r\n'); cmd(ss, base64.b64encode(b'u' + e + b'@example.test').decode() + '\r\n'); print(cmd(ss, 'cHc=\r\n')[:60]); ss.close()
# pipe alias with control bytes in argv, and an alias name with U+202E
s = conn(P); rd(s); cmd(s,'EHLO x\r\n'); cmd(s,'MAIL FROM:<a\x1b@sender.test> SMTPUTF8\r\n'); print(cmd(s,'RCPT TO:<ctl@example.test>\r\n')); cmd(s,'DATA\r\n'); print(cmd(s,'Subject: x\r\n\r\nx\r\n.\r\n'))
# bare LF in DATA (521), errors (421), HTTP, a TLS handshake failure
s = conn(P); rd(s); cmd(s,'EHLO x\r\n'); cmd(s,'MAIL FROM:<a@sender.test>\r\n'); cmd(s,'RCPT TO:<bob@example.test>\r\n'); cmd(s,'DATA\r\n'); print(cmd(s,'Subject: x\n\r\nx\r\n.\r\n'))
s = conn(P); rd(s); print([cmd(s, 'BOGUS\r\n') for i in range(11)][-1])
s = conn(P); rd(s); print(cmd(s, 'GET / HTTP/1.0\r\n'))
s = conn(P); rd(s); cmd(s,'EHLO x\r\n'); cmd(s,'STARTTLS\r\n'); s.send(b'GET / HTTP/1.1\r\n\r\n' + b'\x1b[31m'); print(rd(s, 3))
s = conn(P); rd(s); cmd(s,'EHLO x\r\n'); cmd(s,'STARTTLS\r\n'); ctx = ssl.create_default_context(cafile='/tmp/h3-report/ca/ca.pem')
try: ctx.wrap_socket(s, server_hostname='wrong.name')
except Exception as e: print('client-side verify failure:', e)
s = conn(P); rd(s); cmd(s,'EHLO x\r\n'); cmd(s,'STARTTLS\r\n'); ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT); ctx.check_hostname=False; ctx.verify_mode=ssl.CERT_NONE; ctx.maximum_version = ssl.TLSVersion.TLSv1_1
try: ctx.wrap_socket(s, server_hostname='mx.example.test')
except Exception as e: print('TLS 1.1:', e)
PY
sleep 3
echo "--- closed lines"; grep -a "closed client" $D/log | sort | uniq -c
echo "--- log lines with a control byte, C1, U+2028/2029, bidi controls, or invalid UTF-8:"
python3 - $D/log <<'PY'
import sys, re
data = open(sys.argv[1],'rb').read()
bad = 0
for i, line in enumerate(data.split(b'\n')):
    try: t = line.decode('utf-8')
    except UnicodeDecodeError: print('invalid UTF-8 line %d: %r' % (i, line)); bad += 1; continue
    hits = [c for c in t if ord(c) < 0x20 or 0x7f <= ord(c) < 0xa0 or c in '\u2028\u2029\u200e\u200f\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069\ufeff']
    if hits: print('line %d: %r -> %r' % (i, [hex(ord(c)) for c in hits], t[:200])); bad += 1
print('lines with such bytes:', bad)
PY
stop $D
