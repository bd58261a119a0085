# Many slow sessions at once (a byte every second each), and a legitimate client meanwhile.
import sys, time, socket, selectors
sys.path.insert(0, '/tmp/h3-report'); from smtp import *
PORT = int(sys.argv[1]); N = int(sys.argv[2])
socks = []
for i in range(N):
    s = socket.socket(); s.bind(('127.0.0.%d' % (2 + i % 200), 0)); s.connect(('127.0.0.1', PORT)); s.setblocking(False); socks.append(s)
t0 = time.time(); line = b'EHLO trickler.example\r\n'; closed_at = {}
k = 0
while time.time() - t0 < 12 and len(closed_at) < N:
    for i, s in enumerate(socks):
        if i in closed_at: continue
        try:
            d = s.recv(4096)
            if d == b'' or b'421' in d: closed_at[i] = time.time() - t0
        except BlockingIOError: pass
        except OSError: closed_at[i] = time.time() - t0
        if i not in closed_at:
            try: s.send(line[k % len(line):k % len(line) + 1])
            except OSError: closed_at[i] = time.time() - t0
    if k == 2:
        c = conn(PORT); t1 = time.time(); g = rd(c); e = cmd(c, 'EHLO legit\r\n'); m = cmd(c, 'MAIL FROM:<a@example.test>\r\n')
        print('legit client during the flood: %.2fs %r %r' % (time.time() - t1, g[:20], m.strip())); c.close()
    k += 1; time.sleep(1)
ts = sorted(closed_at.values())
print('%d/%d trickling sessions closed; first at %.1fs, last at %.1fs' % (len(ts), N, ts[0] if ts else -1, ts[-1] if ts else -1))
