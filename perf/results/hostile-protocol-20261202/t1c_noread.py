# A client that pipelines without ever reading our replies: cut after write-timeout? memory?
import sys, time, socket, os
sys.path.insert(0, '/tmp/h3-report'); from smtp import *
PORT = int(sys.argv[1]); pid = int(sys.argv[2]); secs = float(sys.argv[3]) if len(sys.argv) > 3 else 30
def rss(): return int([l for l in open('/proc/%d/status' % pid) if l.startswith('VmRSS')][0].split()[1])
s = conn(PORT); s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
s.settimeout(None); s.setblocking(False)
chunk = b'NOOP\r\n' * 10000
sent = 0; t0 = time.time(); r0 = rss(); last = t0
while time.time() - t0 < secs:
    try: sent += s.send(chunk)
    except BlockingIOError: time.sleep(0.01)
    except Exception as e: print('%.1fs: send failed after %d bytes: %r' % (time.time()-t0, sent, e)); break
    if time.time() - last > 2: last = time.time(); print('%.1fs sent %d MB, ternd RSS %d MB' % (last - t0, sent >> 20, rss() >> 10)); sys.stdout.flush()
print('end: sent %d MB in %.1fs, RSS %d -> %d MB' % (sent >> 20, time.time()-t0, r0 >> 10, rss() >> 10))
