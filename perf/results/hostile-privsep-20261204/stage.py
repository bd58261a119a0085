#!/usr/bin/env python3
# stage.py PORT SESSIONS SIZE: where refusals come (MAIL or end of data) when many sessions declare SIZE at once
import smtplib, sys, threading, collections
port, S, size = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
res = collections.Counter(); lock = threading.Lock(); go = threading.Barrier(S)
body = b"Subject: s\r\n\r\n" + (b"y" * 76 + b"\r\n") * (size // 78) + b".\r\n"
def w(i):
    s = smtplib.SMTP("127.0.0.1", port, timeout=120); s.ehlo("c.example.org"); go.wait()
    c = s.docmd("MAIL FROM:<x@example.org> SIZE=%d" % size)
    if c[0] != 250:
        with lock: res["MAIL %d" % c[0]] += 1
        return
    s.docmd("RCPT TO:<alice@example.test>"); s.docmd("DATA"); s.send(body); c = s.getreply()
    with lock: res["end %d %s" % (c[0], c[1][:30].decode())] += 1
ts = [threading.Thread(target=w, args=(i,)) for i in range(S)]; [t.start() for t in ts]; [t.join() for t in ts]
print(dict(res))
