#!/usr/bin/env python3
# auth.py PARENTPID: authenticated submission across reloads and kills
import smtplib, ssl, time, sys, subprocess, re
parent = sys.argv[1]
ctx = ssl.create_default_context(); ctx.check_hostname = False; ctx.verify_mode = ssl.CERT_NONE
def sess():
    s = smtplib.SMTP("127.0.0.1", 2587, timeout=60); s.ehlo("c.example.org"); s.starttls(context=ctx); s.ehlo("c.example.org"); return s
def send(s, tag, frm="alice@example.test", to="remote@remote.example"):
    try:
        s.sendmail(frm, [to], ("From: %s\r\nMessage-ID: <%s@h>\r\nSubject: %s\r\n\r\nb\r\n" % (frm, tag, tag)).encode()); return "250"
    except Exception as e: return "%s %s" % (type(e).__name__, str(e)[:100])
def pids():
    out = subprocess.run(["ps", "-o", "pid=,args=", "--ppid", parent], capture_output=True, text=True).stdout
    return {l.split(None, 1)[1].strip(): l.split()[0] for l in out.strip().splitlines()}
s = sess(); print("login", s.login("alice@example.test", "pw"))
for i in range(20):
    r = send(s, "auth-many-%d" % i)
    if r != "250": print("many", i, r)
print("reauth", s.docmd("AUTH PLAIN AGFsaWNlQGV4YW1wbGUudGVzdABwdw=="))
print("rset", s.docmd("RSET")); print("after rset", send(s, "auth-after-rset"))
print("from bob", send(s, "auth-from-bob", frm="bob@example.test"))
print("from other domain", send(s, "auth-from-other", frm="x@example.org"))
subprocess.run(["kill", "-HUP", parent]); time.sleep(3)
print("after HUP, same session", send(s, "auth-after-hup"))
s2 = sess(); s2.login("alice@example.test", "pw"); print("after HUP, new session", send(s2, "auth-after-hup-new"))
p = pids(); print(p)
lk = [v for k, v in p.items() if "lookup" in k][0]; subprocess.run(["kill", "-9", lk]); time.sleep(3)
print("after kill lookup, old session", send(s, "auth-after-kill-lookup"))
try: s3 = sess(); print("login", s3.login("alice@example.test", "pw")); print("after kill lookup, new session", send(s3, "auth-after-kill-lookup-new"))
except Exception as e: print("new session after kill lookup:", e)
p = pids(); q = [v for k, v in p.items() if "queue" in k][0]
s4 = sess(); s4.login("alice@example.test", "pw"); print("pre-kill queue", send(s4, "auth-pre-kill-queue"))
subprocess.run(["kill", "-9", q]); time.sleep(3)
print("after kill queue, old session", send(s4, "auth-after-kill-queue"))
try: s5 = sess(); print("login", s5.login("alice@example.test", "pw")); print("after kill queue, new session", send(s5, "auth-after-kill-queue-new"))
except Exception as e: print("new session after kill queue:", e)
# no AUTH relay attempt on both ports
s6 = smtplib.SMTP("127.0.0.1", 2525); s6.ehlo("c"); print("relay noauth 2525", send(s6, "relay-noauth", frm="alice@example.test"))
s7 = sess(); print("relay noauth 2587", send(s7, "relay-noauth2"))
