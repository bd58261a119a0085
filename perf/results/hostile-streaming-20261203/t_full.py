import sys, threading, hashlib; sys.path.insert(0,sys.path[0]); from h import *
def mk(i,SZ):
    base=b''.join(b'%07d abcdefghijklmnopqrstuvwxyz0123456789\r\n'%j for j in range(SZ//46+2))
    return b'Subject: full %s\r\n\r\n'%str(i).encode()+base[:SZ-2]+b'\r\n'
def tryone(m):
    try:
        r=sendmsg(m); return r, (check(m,r)[0] if code(r)==250 else '')
    except Exception as e: return ['EXC %r'%e],''
if __name__=="__main__":
    for sz in [30_000_000, 19_000_000, 15_000_000, 10_000_000]:
        print(sz, tryone(mk('big%d'%sz, sz)))
    print('small', tryone(mk('small1',1000)))
    print('small 100k', tryone(mk('small2',100000)))
    res={}
    def one(i):
        m=mk('p%d'%i, 5_000_000); res[i]=tryone(m)
    ts=[threading.Thread(target=one,args=(i,)) for i in range(10)]
    [t.start() for t in ts]; [t.join() for t in ts]
    for i,v in sorted(res.items()): print('par',i,v[0][-1][:60],v[1])
    print('small after', tryone(mk('small3',1000)))
