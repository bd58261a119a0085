import sys, hashlib; sys.path.insert(0,sys.path[0]); from h import *
from t_bdat import bdat
line=b'abcdefghijklmnopqrstuvwxyz0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ\r\n'
for sz,mode in [(30_000_000,'data'),(60_000_000,'data'),(60_000_000,'bdat'),(64*1024*1024-200,'data'),(64*1024*1024+10,'data'),(70_000_000,'bdat')]:
    body=(line*(sz//len(line)+1))[:sz-2-16]+b'\r\n'
    m=b'Subject: big %d\r\n\r\n'%sz+body
    t=time.time()
    try:
        r=sendmsg(m) if mode=='data' else bdat(m,[len(m)//3, len(m)//3])
    except Exception as e: r=['EXC %r'%e]
    print(sz, mode, len(m), r[-1], '%.1fs'%(time.time()-t), check(m,r,wait=30) if r[-1].startswith('250') else '', flush=True)
