import sys, struct, threading; sys.path.insert(0,sys.path[0]); from h import *
N=int(sys.argv[1]); SZ=int(sys.argv[2]); mode=sys.argv[3] if len(sys.argv)>3 else 'data'
body=b''.join(b'%07d abcdefghijklmnopqrstuvwxyz0123456789\r\n'%i for i in range(SZ//46+1))[:SZ]
def one(i):
    s=S(); s.cmd('EHLO c'); s.cmd('MAIL FROM:<a@c.test>'); s.cmd('RCPT TO:<bob@example.test>')
    if mode=='data': s.cmd('DATA'); s.send(b'Subject: p\r\n\r\n'+body)
    else: s.send(b'BDAT %d LAST\r\n'%(SZ+1000)+b'Subject: p\r\n\r\n'+body)
    time.sleep(0.5); s.close()
ts=[threading.Thread(target=one,args=(i,)) for i in range(N)]
[t.start() for t in ts]; [t.join() for t in ts]
