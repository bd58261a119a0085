#!/usr/bin/env python3
# alias removed between RCPT and DATA, within one session
import smtplib, time, sys, subprocess
A = "/var/tmp/hostile-run/aliases"
open(A, "w").write("postmaster: alice\npepe: alice\nteam: alice, bob\ntemp: bob\n")
subprocess.run(["kill", "-HUP", sys.argv[1]]); time.sleep(2)
s = smtplib.SMTP("127.0.0.1", 2525, timeout=60); s.ehlo("c.example.org")
def msg(tag): return ("From: x@example.org\r\nMessage-ID: <%s@h>\r\nSubject: %s\r\n\r\nbody\r\n" % (tag, tag)).encode()
print("1 MAIL", s.docmd("MAIL FROM:<x@example.org>")); print("1 RCPT temp", s.docmd("RCPT TO:<temp@example.test>"))
open(A, "w").write("postmaster: alice\npepe: alice\nteam: alice, bob\n")   # temp removed
time.sleep(4)
print("1 DATA", s.docmd("DATA")); s.send(msg("cache-1").replace(b"\r\n.", b"\r\n..") + b".\r\n"); print("1 end", s.getreply())
# second transaction, same session: cached answer for temp
print("2 MAIL", s.docmd("MAIL FROM:<x@example.org>")); print("2 RCPT temp", s.docmd("RCPT TO:<temp@example.test>"))
print("2 DATA", s.docmd("DATA")); s.send(msg("cache-2") + b".\r\n"); print("2 end", s.getreply())
print("3 MAIL", s.docmd("MAIL FROM:<x@example.org>")); print("3 RCPT TEMP", s.docmd("RCPT TO:<TEMP@example.test>"))
s.quit()
