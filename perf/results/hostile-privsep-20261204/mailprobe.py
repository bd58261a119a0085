#!/usr/bin/env python3
# mailprobe.py PORT TIMEOUT: how long MAIL FROM takes to be answered
import smtplib, time, sys
s = smtplib.SMTP("127.0.0.1", int(sys.argv[1]), timeout=float(sys.argv[2])); s.ehlo("c.example.org")
t = time.time()
try: print("MAIL:", s.docmd("MAIL FROM:<x@example.org> SIZE=1000"), "%.1fs" % (time.time() - t))
except Exception as e: print("MAIL: no answer after %.1fs (%s)" % (time.time() - t, type(e).__name__))
