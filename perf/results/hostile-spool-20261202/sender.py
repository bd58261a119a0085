#!/usr/bin/env python3
# sender.py PORT THREADS SIZE DURATION OUT [RCPT]: sends messages with unique Message-IDs from THREADS
# sessions for DURATION seconds; writes "ID CODE PHASE" for every message tried (CODE 250 = acked).
import smtplib, sys, threading, time, uuid, socket
port, threads, size, duration, out = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]), float(sys.argv[4]), sys.argv[5]
rcpt = sys.argv[6] if len(sys.argv) > 6 else 'rcpt@example.test'
run = uuid.uuid4().hex[:8]
lock = threading.Lock(); f = open(out, 'w'); stop = time.time() + duration
line = ('x' * 76 + '\r\n')
body_fill = line * max(1, size // len(line))
def rec(mid, code, phase):
    with lock: f.write(f"{mid} {code} {phase}\n"); f.flush()
def worker(t):
    n = 0; s = None
    while time.time() < stop:
        if s is None:
            try:
                s = smtplib.SMTP('127.0.0.1', port, timeout=120); s.ehlo('client.test')
            except Exception as e:
                rec('-', 'connect', type(e).__name__); s = None; time.sleep(0.5); continue
        n += 1; mid = f"py.{run}.{t}.{n}@test"
        msg = f"From: a@example.test\r\nTo: {rcpt}\r\nMessage-ID: <{mid}>\r\nSubject: t\r\n\r\n" + body_fill
        try:
            code, resp = s.mail('a@example.test')
            if code != 250: rec(mid, code, 'MAIL'); s.rset(); time.sleep(0.2); continue
            code, resp = s.rcpt(rcpt)
            if code != 250: rec(mid, code, 'RCPT'); s.rset(); continue
            code, resp = s.data(msg)
            rec(mid, code, 'DATA:' + resp.decode(errors='replace')[:40].replace(' ', '_'))
        except smtplib.SMTPDataError as e:
            rec(mid, e.smtp_code, 'DATA:' + e.smtp_error.decode(errors='replace')[:40].replace(' ', '_'))
        except Exception as e:
            rec(mid, 'exc', type(e).__name__); 
            try: s.close()
            except Exception: pass
            s = None
    if s:
        try: s.quit()
        except Exception: pass
ts = [threading.Thread(target=worker, args=(i,)) for i in range(threads)]
for t in ts: t.start()
for t in ts: t.join()
