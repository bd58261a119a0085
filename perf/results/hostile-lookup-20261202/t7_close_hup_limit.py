from harness import *
import fcntl, array
p,ctl=start()
def drain(c,t=3):
    out=[]
    try:
        while True:
            f=recvframe(c,t)
            if f is None: out.append('EOF'); break
            out.append(f[0])
    except socket.timeout: out.append('TIMEOUT')
    return out
# F: close channel with answers pending
for i in range(20):
    c,h=newchan(ctl); c.sendall(b''.join(auth(r,'alice@example.test','w','f%d'%r) for r in range(50))); c.close()
time.sleep(4); print('F alive',alive(p), 'probe', probe(ctl)[1])
# G: SIGHUP with users file missing
os.rename(D+'/example.test.users',D+'/users.bak')
os.kill(p.pid,1); time.sleep(1); print('G after HUP (missing users) alive',alive(p))
c,h=newchan(ctl); c.sendall(auth(1,'alice@example.test','s3cret','g1')); print('G auth after bad reload', recvframe(c,10)); c.close()
os.rename(D+'/users.bak',D+'/example.test.users')
# H: SIGHUP storm during load
c,h=newchan(ctl); c.sendall(b''.join(auth(r,'alice@example.test','w','h%d'%r) for r in range(200)))
for i in range(50): os.kill(p.pid,1); time.sleep(0.02)
r,dt=probe(ctl); print('H HUP storm alive',alive(p),'probe %.3f'%dt); c.close()
# A: 4097 pending in one burst
c,h=newchan(ctl)
c.sendall(b''.join(auth(r,'alice@example.test','w','203.0.113.%d'%(r%250)) for r in range(4097)))
time.sleep(1); c.setblocking(True)
print('A 4097 burst: answers/EOF (first 5, last 3):', end=' '); o=drain(c,4); print(len(o), o[:5], o[-3:]); c.close()
# B: duplicate pending id
c,h=newchan(ctl); c.sendall(auth(5,'alice@example.test','w','192.0.2.50')+auth(5,'alice@example.test','w','192.0.2.51'))
print('B dup pending id:', drain(c,3)); c.close()
t=time.time(); r,dt=probe(ctl); print('after A/B: resolve probe %.3f'%dt)
c,h=newchan(ctl); c.sendall(auth(1,'alice@example.test','s3cret','zz')); t=time.time()
try: print('good auth after closed-channel flood', recvframe(c,30)[1][4], '%.1fs'%(time.time()-t))
except Exception as e: print('good auth after closed-channel flood: no answer in 30s',e)
rss(p); ctl.close(); p.wait(timeout=30); print('exit',p.returncode)
