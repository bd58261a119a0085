import sys, threading, hashlib, json; sys.path.insert(0,sys.path[0]); from h import *
N=int(sys.argv[1]); SZ=int(sys.argv[2]); mode=sys.argv[3] if len(sys.argv)>3 else 'data'
PIDF=os.environ.get('PIDF','/var/tmp/hostile-streaming/a/ternd.pid')
pid=open(PIDF).read().strip()
base=b''.join(b'%07d abcdefghijklmnopqrstuvwxyz0123456789\r\n'%i for i in range(SZ//46+2))
results={}; peak=[0]; stop=[False]
def mon():
    while not stop[0]:
        try:
            st=open('/proc/%s/status'%pid).read()
            rss=int(re.search(r'VmRSS:\s+(\d+)',st).group(1)); peak[0]=max(peak[0],rss)
        except Exception: pass
        time.sleep(0.1)
def one(i):
    m=b'Subject: par %d\r\n\r\n'%i+base[:SZ-2]+b'\r\n'
    try:
        if mode=='data':
            s=S(timeout=300); s.cmd('EHLO c')
            r=sendmsg(m, s=s); s.close()
        else:
            from t_bdat import bdat
            r=bdat(m,[SZ//3, SZ//3])
        results[i]=(r, hashlib.sha256(m).hexdigest())
    except Exception as e:
        results[i]=(['EXC %r'%e], None)
threading.Thread(target=mon,daemon=True).start()
t0=time.time()
ts=[threading.Thread(target=one,args=(i,)) for i in range(N)]
[t.start() for t in ts]; [t.join() for t in ts]
stop[0]=True
print('elapsed %.1fs peak ternd RSS during run (sampled) %d kB'%(time.time()-t0, peak[0]))
codes={}
for i,(r,h) in results.items(): codes[r[-1][:3]]=codes.get(r[-1][:3],0)+1
print('codes',codes, [r for r,h in results.values() if not r[-1].startswith('250')][:3])
# verify
time.sleep(3)
bad=0; ok=0
d=by_id()
for i,(r,h) in results.items():
    q=qid(r)
    if not q: continue
    if q not in d: print('NOT DELIVERED', i, q); bad+=1; continue
    if len(d[q])!=1: print('DUP', i, q); bad+=1; continue
    data=open(d[q][0],'rb').read(); tr,rest=split_trace(data)
    if hashlib.sha256(rest).hexdigest()!=h: print('CORRUPT', i, q, len(rest)); bad+=1
    else: ok+=1
print('verified ok',ok,'bad',bad)
print(open('/proc/%s/status'%pid).read().split('VmPeak')[1][:0] or '', re.findall(r'(VmHWM|VmRSS):\s+(\d+ kB)', open('/proc/%s/status'%pid).read()))
