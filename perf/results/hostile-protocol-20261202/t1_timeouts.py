# Time limits against a ternd with command/data/write timeouts 5s, session 30s (see run_t1.sh).
import sys, time, socket, threading
sys.path.insert(0, '/tmp/h3-report'); from smtp import *
PORT = int(sys.argv[1]); which = sys.argv[2:] or ['cmd','data','session','starttls','bdat','bdatslow','implicit_stall','tlstrickle','authtrickle']
def t(name, f):
    t0 = time.time()
    try: r = f()
    except Exception as e: r = 'EXC %r' % e
    print('%-14s %5.1fs %r' % (name, time.time() - t0, r)[:400]); sys.stdout.flush()
def trickle(s, data, gap):
    for b in data:
        try: s.send(bytes([b]))
        except Exception as e: return 'send failed %r' % e
        time.sleep(gap)
    return None
def cmd_trickle():
    s = conn(PORT); rd(s); e = trickle(s, b'EHLO trickle.example\r\n'*5, 0.5)
    return e, rd(s, 1)
def data_trickle():
    s = conn(PORT); rd(s); cmd(s,'EHLO x\r\n'); cmd(s,'MAIL FROM:<a@sender.test>\r\n'); cmd(s,'RCPT TO:<bob@example.test>\r\n'); cmd(s,'DATA\r\n')
    # 100 bytes/s, far below 500 B/s
    for i in range(100):
        try: s.send(b'x'*98 + b'\r\n')
        except Exception as e: return ('sent %d lines' % i, repr(e))
        time.sleep(1)
    return rd(s,1)
def session():
    s = conn(PORT); rd(s); cmd(s,'EHLO x\r\n')
    for i in range(40):
        r = cmd(s,'NOOP\r\n', 3)
        if not r.startswith(b'250'): return i, r
        time.sleep(1)
    return 'still open'
def starttls_stall():
    s = conn(PORT); rd(s); cmd(s,'EHLO x\r\n'); r = cmd(s,'STARTTLS\r\n')
    # send nothing: the handshake stalls
    return r, rd(s, 40)
def starttls_trickle_hello():
    s = conn(PORT); rd(s); cmd(s,'EHLO x\r\n'); cmd(s,'STARTTLS\r\n')
    e = trickle(s, b'\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03' + b'\x00'*60, 1)
    return e, rd(s, 2)
def bdat_trickle():
    # one big chunk announced, trickled: the data rate must apply
    s = conn(PORT); rd(s); cmd(s,'EHLO x\r\n'); cmd(s,'MAIL FROM:<a@sender.test>\r\n'); cmd(s,'RCPT TO:<bob@example.test>\r\n')
    s.send(b'BDAT 100000 LAST\r\n')
    for i in range(60):
        try: s.send(b'x'*50)
        except Exception as e: return ('sent', i, repr(e))
        time.sleep(1)
    return rd(s,1)
def bdat_slow_chunks():
    # many tiny chunks, each a whole command arriving in time: 1 byte per 4 s
    s = conn(PORT); rd(s); cmd(s,'EHLO x\r\n'); cmd(s,'MAIL FROM:<a@sender.test>\r\n'); cmd(s,'RCPT TO:<bob@example.test>\r\n')
    n = 0
    for i in range(12):
        r = cmd(s, b'BDAT 1\r\nx', 3)
        if not r.startswith(b'250'): return ('chunk', i, r)
        n += 1; time.sleep(4)
    return ('%d chunks of 1 byte over %d s accepted' % (n, n*4), rd(s,1))
def implicit_stall():
    s = conn(PORT); s.send(b'\x16\x03\x01'); return rd(s, 40)
def tlstrickle():
    s = conn(PORT); rd(s); cmd(s,'EHLO x\r\n'); cmd(s,'STARTTLS\r\n'); ss = tls(s)
    for b in b'EHLO trickle.example\r\n' * 3:
        try: ss.send(bytes([b]))
        except Exception as e: return 'send failed %r' % e
        time.sleep(0.5)
    return rd(ss,1)
def authtrickle():
    s = conn(PORT); rd(s); cmd(s,'EHLO x\r\n'); cmd(s,'STARTTLS\r\n'); ss = tls(s); r = cmd(ss,'EHLO x\r\n')
    r = cmd(ss, 'AUTH LOGIN\r\n')
    out = [r]
    for i in range(10):
        time.sleep(4); r = cmd(ss, 'dXNlcg==\r\n' if i % 2 == 0 else 'cGFzcw==\r\n', 3); out.append(r[:40])
        if b'421' in r or b'EOF' in r: break
    return out
fs = {'cmd': cmd_trickle, 'data': data_trickle, 'session': session, 'starttls': starttls_stall, 'starttls_trickle': starttls_trickle_hello,
      'bdat': bdat_trickle, 'bdatslow': bdat_slow_chunks, 'implicit_stall': implicit_stall, 'tlstrickle': tlstrickle, 'authtrickle': authtrickle}
ths = [threading.Thread(target=t, args=(w, fs[w])) for w in which]
for th in ths: th.start()
for th in ths: th.join()
