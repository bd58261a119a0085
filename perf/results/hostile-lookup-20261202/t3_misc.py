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
# C: failure limit with same client, then varied client
c,h=newchan(ctl)
c.sendall(b''.join(auth(r,'alice@example.test','w','198.51.100.1') for r in range(12)))
ans=[]
for i in range(12): f=recvframe(c,10); ans.append(f[1][4])
print('C same client 12 fails answers:', ans)
c.sendall(auth(100,'alice@example.test','s3cret','198.51.100.1')); f=recvframe(c,10); print('C correct pw after limit, same client:', f[1][4])
c.sendall(auth(101,'alice@example.test','s3cret','198.51.100.1 ')); f=recvframe(c,10); print('C correct pw, client + trailing space:', f[1][4])
c.sendall(auth(102,'alice@example.test','s3cret','')); f=recvframe(c,10); print('C correct pw, empty client:', f[1][4])
c.sendall(b''.join(auth(200+r,'alice@example.test','w','x%d'%r) for r in range(30)))
ans=[recvframe(c,20)[1][4] for r in range(30)]; print('C 30 fails each new client:', set(ans))
# D: timing unknown vs wrong (sequential)
def tm(u,pw,cl):
    t=time.time(); c.sendall(auth(999,u,pw,cl)); f=recvframe(c,10); return time.time()-t, f[1][4]
for u in ['alice@example.test','nobody@example.test','x@nolocal.test','garbage','']:
    print('D', repr(u), ['%.4f/%d'%tm(u,'w','t-%s-%d'%(u,i)) for i in range(3)])
c.close()
# E: weird descriptors over control socket
import tempfile
rf=open(D+'/regfile','w'); dn=os.open('/dev/null',os.O_RDWR); pr,pw=os.pipe()
ls=socket.socket(); ls.bind(('127.0.0.1',0)); ls.listen()
ud=socket.socket(socket.AF_UNIX,socket.SOCK_DGRAM)
lu=socket.socket(socket.AF_UNIX,socket.SOCK_STREAM); lu.bind(D+'/lsock%d'%os.getpid()); lu.listen()
for name,fd in [('regular',rf.fileno()),('devnull',dn),('pipe',pr),('tcp-listen',ls.fileno()),('unix-dgram',ud.fileno()),('unix-listen',lu.fileno())]:
    socket.send_fds(ctl,[b's'],[fd]); time.sleep(0.2); print('E',name,'alive',alive(p))
socket.send_fds(ctl,[b'q'],[pr]); time.sleep(0.2); print('E tag q alive',alive(p))
# (no-fds case: see t6_nofds.py)
# 64 channels at once, and 65
pairs=[socket.socketpair() for i in range(65)]
socket.send_fds(ctl,[b's'],[y.fileno() for x,y in pairs[:64]]); time.sleep(0.5)
ok=0
for x,y in pairs[:64]:
    x.sendall(HELLO); ok+= recvframe(x,3) is not None
print('E 64 fds at once: hello answered on',ok); 
try:
    socket.send_fds(ctl,[b's'],[y.fileno() for x,y in pairs]); time.sleep(0.5); print('E 65 fds alive',alive(p))
except Exception as e: print('E 65 send',e)
# cut-off control message: MSG_CTRUNC by sending 64 fds... (kernel limit SCM_MAX_FD=253)
many=[socket.socketpair() for i in range(200)]
socket.send_fds(ctl,[b's'],[y.fileno() for x,y in many]); time.sleep(0.5); print('E 200 fds alive',alive(p))
print('fd count in lookup:', len(os.listdir('/proc/%d/fd'%p.pid)))
for x,y in many: y.close()
print('probe',probe(ctl)[1])
print('fd count in lookup after peer close:', len(os.listdir('/proc/%d/fd'%p.pid)))
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
