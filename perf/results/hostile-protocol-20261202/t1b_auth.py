import sys, time
sys.path.insert(0, '/tmp/h3-report'); from smtp import *
PORT = int(sys.argv[1]); gap = float(sys.argv[2])
s = conn(PORT); rd(s); cmd(s,'EHLO x\r\n'); cmd(s,'STARTTLS\r\n'); ss = tls(s); print(cmd(ss,'EHLO x\r\n'))
t0 = time.time()
print(cmd(ss, 'AUTH LOGIN\r\n'))
for i in range(6):
    time.sleep(gap)
    try: r = cmd(ss, 'dXNlckBleGFtcGxlLnRlc3Q=\r\n' if i % 2 == 0 else 'cGFzcw==\r\n', 3)
    except Exception as e: r = repr(e)
    print('%.1f' % (time.time()-t0), r)
    if i % 2 == 1:
        try: print(cmd(ss, 'AUTH LOGIN\r\n'))
        except Exception as e: print(repr(e)); break
