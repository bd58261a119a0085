#!/bin/bash
# Size limit edges and a message with 100 recipients (the limit), 101st refused.
source /tmp/hostile-findings/lib.sh
D=/tmp/tlim; rm -rf $D; EXTRA_LIMITS="message-size 100K" mkenv $D 2620
for i in $(seq 1 101); do mkbox $D u$i; done; mkbox $D rcpt
start $D
python3 - <<'PY'
import smtplib
s = smtplib.SMTP('127.0.0.1', 2620); s.ehlo('c')
print('SIZE ext:', s.esmtp_features.get('size'))
for n in (102400 - 1, 102400, 102400 + 1):
    hdr = f"Message-ID: <size.{n}@x>\r\n\r\n"
    left = n - len(hdr); line = 'y' * 76 + '\r\n'; k = left // len(line); rest = left - k * len(line)
    body = hdr + line * k + (('z' * (rest - 2) + '\r\n') if rest >= 2 else '')
    if rest == 1: body = body[:-len(line)] + 'y' * 77 + '\r\n'
    assert len(body.encode()) == n
    try:
        r = s.sendmail('a@example.test', ['rcpt@example.test'], body); print(n, 'accepted')
    except Exception as e: print(n, 'refused', e)
    try: s.rset()
    except Exception: s = smtplib.SMTP('127.0.0.1', 2620); s.ehlo('c')
s.mail('a@example.test')
codes = [s.rcpt(f'u{i}@example.test')[0] for i in range(1, 102)]
print('rcpt codes:', {c: codes.count(c) for c in set(codes)}, 'last:', s.rcpt('u101@example.test'))
print('data:', s.data("Message-ID: <many@x>\r\n\r\nhello\r\n"))
s.quit()
PY
waitempty $D 30
echo "size deliveries: $(grep -l 'size\.' $D/mail/example.test/rcpt/new/* 2>/dev/null | xargs -r grep -h -o 'size\.[0-9]*' | sort | uniq -c | tr '\n' ' ')"
n=0; for i in $(seq 1 100); do c=$(ls $D/mail/example.test/u$i/new | wc -l); [ $c -ne 1 ] && echo "u$i has $c"; n=$((n+c)); done; echo "u1..u100: $n copies; u101: $(ls $D/mail/example.test/u101/new | wc -l)"
stopd $D
