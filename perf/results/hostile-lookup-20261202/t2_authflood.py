# usage: t2_authflood.py NCHAN PER_CHAN  -- floods authCheck (wrong pw, distinct client strings), never reads answers
from harness import *
N=int(sys.argv[1]); M=int(sys.argv[2])
p,ctl=start(); rss(p)
cs=[]
t0=time.time()
for i in range(N):
    c,h=newchan(ctl); cs.append(c)
    buf=b''.join(auth(r,'alice@example.test','wrong%d'%r,'10.%d.%d.%d'%(i,r>>8,r&255)) for r in range(M))
    c.sendall(buf)
# one more over limit on one channel?
extra=cs[0]; extra.sendall(auth(M,'alice@example.test','x'))  # 4097th pending
time.sleep(1)
print('after send %.1fs'%(time.time()-t0)); rss(p)
print('extra chan status (4097th):', end=' ');
extra.setblocking(False)
for k in range(3):
    time.sleep(2); rss(p)
    r,dt=probe(ctl); print('  resolve probe', 'ok' if r else r, '%.3fs'%dt)
# good auth on fresh channel
c,h=newchan(ctl); t=time.time(); c.sendall(auth(1,'alice@example.test','s3cret','198.51.100.9'))
r=recvframe(c,60); print('good auth answer',r,'after %.1fs'%(time.time()-t)); rss(p)
print('alive',alive(p))
for c in cs: c.close()
time.sleep(3); rss(p)
ctl.close();
try: p.wait(timeout=20)
except Exception: print('did not exit in 20s'); p.kill(); p.wait()
print('exit',p.returncode)
