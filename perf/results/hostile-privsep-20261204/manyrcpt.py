#!/usr/bin/env python3
# 300 distinct recipients (past the 256-entry cache), repeats and case variants, in one message
import smtplib, sys
s = smtplib.SMTP("127.0.0.1", int(sys.argv[1]), timeout=60); s.ehlo("c.example.org")
rc = ["alice+%d@example.test" % i for i in range(300)] + ["alice@example.test", "ALICE@example.test", "alice@EXAMPLE.TEST", "A.lice@example.test", "bob@example.test", "pepe@example.test", "team@example.test", "nobody@example.test", "alice+0@example.test"]
print(s.docmd("MAIL FROM:<x@example.org>"))
codes = {}
for r in rc:
    c = s.docmd("RCPT TO:<%s>" % r)[0]; codes[c] = codes.get(c, 0) + 1
print(codes); print(s.docmd("DATA")); s.send(b"Message-ID: <manyrcpt-1@h>\r\nSubject: m\r\n\r\nb\r\n.\r\n"); print(s.getreply())
