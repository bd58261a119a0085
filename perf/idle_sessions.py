#!/usr/bin/env python3
"""Opens N SMTP sessions to HOST:PORT, reads the greeting, sends EHLO, reads the reply, and holds
them idle; prints 'ready' when all are established, then waits for a line on stdin (or SIGTERM).
With 'starttls', each session does EHLO, STARTTLS, the TLS handshake and EHLO again over TLS
(one after the other: blocking sockets) before it idles.
Usage: idle_sessions.py HOST PORT N [starttls]"""
import resource
import selectors
import socket
import sys

host, port, n = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))

if len(sys.argv) > 4 and sys.argv[4] == "starttls":
    import ssl
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    held = []

    def reply(f):
        while True:
            line = f.readline()
            if not line:
                print("server closed a session", flush=True)
                sys.exit(1)
            if line[3:4] != b"-":
                return line

    for i in range(n):
        s = socket.create_connection((host, port), timeout=30)
        f = s.makefile("rb")
        reply(f)
        s.sendall(b"EHLO idle.test\r\n")
        reply(f)
        s.sendall(b"STARTTLS\r\n")
        reply(f)
        t = ctx.wrap_socket(s, server_hostname="idle.test")
        tf = t.makefile("rb")
        t.sendall(b"EHLO idle.test\r\n")
        reply(tf)
        held.append((t, tf))
    print("ready", flush=True)
    sys.stdin.readline()
    sys.exit(0)

sel = selectors.DefaultSelector()
socks = []
pending = {}
for i in range(n):
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.setblocking(False)
    s.connect_ex((host, port))
    socks.append(s)
    pending[s] = [b"", 0]  # buffer, stage (0: greeting, 1: EHLO reply, 2: done)
    sel.register(s, selectors.EVENT_READ)
    if i % 500 == 499:
        # Let the server accept in batches so the listen backlog never overflows.
        for key, _ in sel.select(timeout=0.05):
            pass

done = 0
while done < n:
    events = sel.select(timeout=30)
    if not events:
        print(f"timeout: {done}/{n} sessions ready", flush=True)
        sys.exit(1)
    for key, _ in events:
        s = key.fileobj
        st = pending[s]
        data = s.recv(65536)
        if not data:
            print("server closed a session", flush=True)
            sys.exit(1)
        st[0] += data
        while b"\r\n" in st[0]:
            line, st[0] = st[0].split(b"\r\n", 1)
            if line[3:4] == b"-":
                continue
            if st[1] == 0:
                s.sendall(b"EHLO idle.test\r\n")
                st[1] = 1
            elif st[1] == 1:
                st[1] = 2
                sel.unregister(s)
                done += 1
print("ready", flush=True)
sys.stdin.readline()
