#!/usr/bin/env python3
# frozen-txn.py PORT TAG: one whole transaction; prints each reply and how long it took
import smtplib, time, sys
s = smtplib.SMTP("127.0.0.1", int(sys.argv[1]), timeout=300); s.ehlo("c.example.org")
for cmd in ["MAIL FROM:<x@example.org> SIZE=1000", "RCPT TO:<alice@example.test>", "DATA"]:
    t = time.time(); print(cmd, s.docmd(cmd), "%.1fs" % (time.time() - t), flush=True)
t = time.time(); s.send(("Subject: %s\r\nMessage-ID: <%s@h>\r\n\r\nhi\r\n.\r\n" % (sys.argv[2], sys.argv[2])).encode())
print("end of data", s.getreply(), "%.1fs" % (time.time() - t), flush=True)
