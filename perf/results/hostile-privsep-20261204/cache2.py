#!/usr/bin/env python3
# alias redirected (temp: bob -> temp: alice) between RCPT and DATA
import smtplib, time, sys, subprocess
A = "/var/tmp/hostile-run/aliases"
open(A, "w").write("postmaster: alice\npepe: alice\nteam: alice, bob\ntemp: bob\n")
subprocess.run(["kill", "-HUP", sys.argv[1]]); time.sleep(2)
s = smtplib.SMTP("127.0.0.1", 2525, timeout=60); s.ehlo("c.example.org")
print("MAIL", s.docmd("MAIL FROM:<x@example.org>")); print("RCPT temp", s.docmd("RCPT TO:<temp@example.test>"))
open(A, "w").write("postmaster: alice\npepe: alice\nteam: alice, bob\ntemp: alice\n")
time.sleep(4)
print("DATA", s.docmd("DATA")); s.send(b"Message-ID: <redirect-1@h>\r\nSubject: r\r\n\r\nbody\r\n.\r\n"); print("end", s.getreply())
s.quit()
