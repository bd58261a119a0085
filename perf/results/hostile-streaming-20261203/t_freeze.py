import sys, threading, hashlib, subprocess; sys.path.insert(0,sys.path[0]); from h import *
D='/var/tmp/hostile-streaming/d'; SP=D+'/spool'
T0=time.time()
def log(*a): print('%6.2f'%(time.time()-T0), *a, flush=True)
base=b''.join(b'%07d abcdefghijklmnopqrstuvwxyz0123456789\r\n'%j for j in range(200000))
acked={}
def upload(i, SZ, slow):
    m=b'Subject: frz %d\r\n\r\n'%i+base[:SZ-2]+b'\r\n'
    try:
        s=S(timeout=120); s.cmd('EHLO c'); s.cmd('MAIL FROM:<a@c.test>'); s.cmd('RCPT TO:<bob@example.test>'); s.cmd('DATA')
        data=stuff(m)+b'.\r\n'
        for off in range(0,len(data),256*1024):
            s.send(data[off:off+256*1024]); 
            if slow: time.sleep(0.2)
        t=time.time(); r=s.reply(); log('upload',i,r[-1][:50],'reply wait %.1fs'%(time.time()-t))
        if code(r)==250: acked[i]=(qid(r), hashlib.sha256(m).hexdigest())
    except Exception as e: log('upload',i,'EXC',repr(e))
idle=S(); idle.cmd('EHLO idle')
ts=[threading.Thread(target=upload,args=(i,6_000_000,True)) for i in range(4)]
[t.start() for t in ts]
time.sleep(1.5)
subprocess.run(['fsfreeze','-f',SP]); log('FROZEN')
def timed(f,label):
    t=time.time()
    try: r=f()
    except Exception as e: r=['EXC %r'%e]
    log(label, r[-1][:70], '%.1fs'%(time.time()-t))
    return r
time.sleep(1)
timed(lambda: idle.cmd('NOOP'),'idle NOOP')
def newmail(tag):
    s=S(timeout=60); s.cmd('EHLO n')
    r=timed(lambda: s.cmd('MAIL FROM:<a@c.test>'), 'new MAIL '+tag)
    if code(r)==250:
        s.cmd('RCPT TO:<bob@example.test>'); s.cmd('DATA'); s.send(b'Subject: frz small '+tag.encode()+b'\r\n\r\nx\r\n.\r\n')
        r=timed(lambda: s.reply(), 'small msg end-of-data '+tag)
        if code(r)==250: acked['small'+tag]=(qid(r),None)
    s.close()
threading.Thread(target=newmail,args=('A',)).start()
time.sleep(6)
newmail('B')
timed(lambda: idle.cmd('EHLO again'),'idle EHLO')
timed(lambda: idle.cmd('MAIL FROM:<a@c.test>'),'idle-session MAIL')
timed(lambda: idle.cmd('RSET'),'idle RSET')
# small message from another session during freeze via big upload
time.sleep(float(os.environ.get("FRZ","8")))
subprocess.run(['fsfreeze','-u',SP]); log('THAWED')
[t.join() for t in ts]
time.sleep(2)
newmail('C')
time.sleep(5)
d=by_id()
for k,(q,h) in acked.items():
    if q not in d: log('LOST', k, q); continue
    if len(d[q])>1: log('DUP',k,q)
    if h and hashlib.sha256(split_trace(open(d[q][0],'rb').read())[1]).hexdigest()!=h: log('CORRUPT',k,q)
log('acked',len(acked), sorted(map(str,acked)))
# deliveries of anything not acked?
for q,fs in d.items():
    for f in fs:
        subj=open(f,'rb').read(2000).split(b'Subject: ')[1].split(b'\r\n')[0]
        log('delivered', q, subj, 'ACKED' if q in [v[0] for v in acked.values()] else 'NOT-ACKED')
