import sys, json, hashlib; sys.path.insert(0,sys.path[0]); from h import *
D='/var/tmp/hostile-streaming/b'
acked=json.load(open(D+'/acked.json'))
time.sleep(float(sys.argv[1]) if len(sys.argv)>1 else 5)
d=by_id(); bad=0
for i,(q,h) in acked.items():
    if q not in d: print('LOST acked', i, q); bad+=1; continue
    if len(d[q])>1: print('DUP', i, q, d[q]); bad+=1
    rest=split_trace(open(d[q][0],'rb').read())[1]
    if hashlib.sha256(rest).hexdigest()!=h: print('CORRUPT', i,q); bad+=1
# any duplicates by Subject among all deliveries
subj={}
for q,fs in d.items():
    for f in fs:
        s=open(f,'rb').read(1000).split(b'Subject: ')[1].split(b'\r\n')[0]; subj.setdefault(s,[]).append(q)
dups={k:v for k,v in subj.items() if len(v)>1}
print('acked',len(acked),'bad',bad,'total delivered',sum(len(v) for v in d.values()),'subject dups',len(dups), list(dups.items())[:3])
