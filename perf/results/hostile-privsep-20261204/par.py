#!/usr/bin/env python3
# parallel senders: par.py PORT SESSIONS MSGS SIZE [declared-size]; prints acked Message-IDs to acked.txt
import smtplib, sys, threading, uuid, time, ssl
port, S, M, size = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
acked, lock, res, refused = [], threading.Lock(), {}, []
def body(mid):
    line = b"x" * 76 + b"\r\n"
    b = (f"From: x@example.org\r\nTo: alice@example.test\r\nMessage-ID: <{mid}>\r\nSubject: t\r\n\r\n").encode()
    return b + line * (size // 78)
def worker(i):
    try:
        s = smtplib.SMTP("127.0.0.1", port, timeout=120)
        s.ehlo("c.example.org")
        for j in range(M):
            mid = f"{uuid.uuid4().hex}@h"
            try:
                s.sendmail("x@example.org", ["alice@example.test"], body(mid))
                with lock: acked.append(mid); res["250"] = res.get("250", 0) + 1
            except smtplib.SMTPResponseException as e:
                with lock: k = str(e.smtp_code) + " " + str(e.smtp_error[:40]); res[k] = res.get(k, 0) + 1; refused.append("%s %d" % (mid, e.smtp_code))
                try: s.rset()
                except Exception: break
            except smtplib.SMTPRecipientsRefused as e:
                with lock: k = "rcpt " + str(list(e.recipients.values())[0])[:60]; res[k] = res.get(k, 0) + 1
            except smtplib.SMTPSenderRefused as e:
                with lock: k = "mail %d %s" % (e.smtp_code, e.smtp_error[:40]); res[k] = res.get(k, 0) + 1
        s.quit()
    except Exception as e:
        with lock: k = "exc " + type(e).__name__ + " " + str(e)[:50]; res[k] = res.get(k, 0) + 1
t0 = time.time()
ts = [threading.Thread(target=worker, args=(i,)) for i in range(S)]
[t.start() for t in ts]; [t.join() for t in ts]
print("%.1fs" % (time.time() - t0), res)
with open(__import__("os").environ.get("ACKED", "/var/tmp/hostile-run/acked.txt"), "a") as f:
    for m in acked: f.write(m + "\n")
with open(__import__("os").environ.get("ACKED", "/var/tmp/hostile-run/acked.txt") + ".refused", "a") as f:
    for m in refused: f.write(m + "\n")
