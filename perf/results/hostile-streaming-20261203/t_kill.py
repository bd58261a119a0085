import sys, threading, hashlib, subprocess, signal; sys.path.insert(0,sys.path[0]); from h import *
N=int(sys.argv[1]); SZ=int(sys.argv[2]); KILLAT=float(sys.argv[3])
D='/var/tmp/hostile-streaming/b'
pid=int(open(D+'/ternd.pid').read())
base=b''.join(b'%07d abcdefghijklmnopqrstuvwxyz0123456789\r\n'%i for i in range(SZ//46+2))
results={}
def one(i):
    m=b'Subject: kill %d\r\n\r\n'%i+base[:SZ-2]+b'\r\n'
    try:
        s=S(timeout=60); s.cmd('EHLO c')
        r=sendmsg(m, s=s); s.close(); results[i]=(r,hashlib.sha256(m).hexdigest(), m[:30])
    except Exception as e: results[i]=(['EXC %r'%e],None,None)
ts=[threading.Thread(target=one,args=(i,)) for i in range(N)]
[t.start() for t in ts]
time.sleep(KILLAT); os.kill(pid, signal.SIGKILL); print('killed at', KILLAT)
[t.join() for t in ts]
acked={i:v for i,v in results.items() if v[0][-1].startswith('250')}
print('acked', len(acked), 'others', len(results)-len(acked))
import json; json.dump({i:(qid(v[0]),v[1]) for i,v in acked.items()}, open(D+'/acked.json','w'))
