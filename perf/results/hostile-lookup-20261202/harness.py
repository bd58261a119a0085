import os, socket, struct, subprocess, sys, time, select
BIN='/var/tmp/tern-bin-hostile/ternd'; D='/var/tmp/hostile-lookup'; CONF=D+'/tern.conf'
def start(conf=CONF):
    a,b=socket.socketpair()
    err=open(D+'/stderr.log','ab')
    def pre():
        os.dup2(b.fileno(),3)
    p=subprocess.Popen([BIN,'--role','lookup','--config',conf,'--parent-pid',str(os.getpid())],
        pass_fds=(3,),preexec_fn=pre,stderr=err)
    b.close(); time.sleep(0.5); return p,a
def chan(ctl):
    x,y=socket.socketpair(); socket.send_fds(ctl,[b's'],[y.fileno()]); y.close(); return x
def s(v): v=v.encode() if isinstance(v,str) else v; return struct.pack('>I',len(v))+v
def frame(t,p=b''): return struct.pack('>IB',len(p)+1,t)+p
HELLO=frame(1,struct.pack('>HB',2,2))
def auth(r,u,pw,cl='192.0.2.1'): return frame(10,struct.pack('>I',r)+s(u)+s(pw)+s(cl))
def resolve(r,rc): return frame(12,struct.pack('>I',r)+s(rc))
def sender(r,u,sn): return frame(14,struct.pack('>I',r)+s(u)+s(sn))
def recvframe(c,timeout=5):
    c.settimeout(timeout); h=b''
    while len(h)<4:
        d=c.recv(4-len(h))
        if not d: return None
        h+=d
    n=struct.unpack('>I',h)[0]; b=b''
    while len(b)<n:
        d=c.recv(n-len(b))
        if not d: return None
        b+=d
    return b[0],b[1:]
def rss(p):
    for l in open('/proc/%d/status'%p.pid):
        if l.startswith('VmRSS') or l.startswith('Threads'): print('   ',l.strip())
def threads(p): return len(os.listdir('/proc/%d/task'%p.pid))
def newchan(ctl):
    c=chan(ctl); c.sendall(HELLO); h=recvframe(c); return c,h
def alive(p): return p.poll() is None
def probe(ctl,timeout=5):
    c,h=newchan(ctl); c.sendall(resolve(1,'alice@example.test')); t=time.time(); r=recvframe(c,timeout); c.close(); return r,time.time()-t
