import os,sys,glob,re,collections
mail=sys.argv[1]; idglob=sys.argv[2]
acked=collections.Counter()
for f in glob.glob(idglob):
    if f.endswith('.out'): continue
    for l in open(f):
        l=l.strip()
        if l: acked[l]+=1
got=collections.Counter(); nomid=0; files=0
for d in ('new','cur'):
    for f in glob.glob(os.path.join(mail,'*','*',d,'*')):
        files+=1
        with open(f,'rb') as fh:
            head=fh.read(65536).split(b'\r\n\r\n')[0].split(b'\n\n')[0]
        m=re.search(rb'(?im)^message-id:\s*<([^>]+)>',head)
        if m: got[m.group(1).decode()]+=1
        else: nomid+=1
tmp=len(glob.glob(os.path.join(mail,'*','*','tmp','*')))
lost=[k for k in acked if got[k]==0]
dups={k:v for k,v in got.items() if v>1}
dupack={k:v for k,v in acked.items() if v>1}
unacked_delivered=[k for k in got if k not in acked]
print(f"acked={len(acked)} files={files} distinct_delivered={len(got)} lost={len(lost)} dup_delivered={len(dups)} dup_in_idfiles={len(dupack)} delivered_not_acked={len(unacked_delivered)} no_msgid={nomid} maildir_tmp={tmp}")
for k in lost[:20]: print("LOST",k)
for k,v in list(dups.items())[:20]: print("DUP",k,v)
