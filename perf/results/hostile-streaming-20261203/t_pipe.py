import sys, hashlib; sys.path.insert(0,sys.path[0]); from h import *
base=b''.join(b'%07d abcdefghijklmnopqrstuvwxyz0123456789\r\n'%j for j in range(100000))
msgs=[b'Subject: pipe %d\r\n\r\n'%i+base[:sz-2]+b'\r\n' for i,sz in enumerate([100, 65536, 70000, 1_500_000, 10])]
s=S(); s.cmd('EHLO c')
blob=b''
for i,m in enumerate(msgs):
    blob+=b'MAIL FROM:<a@c.test>\r\nRCPT TO:<bob@example.test>\r\n'
    if i%2==0: blob+=b'DATA\r\n'+stuff(m)+b'.\r\n'
    else: blob+=b'BDAT %d\r\n'%(len(m)//2)+m[:len(m)//2]+b'BDAT %d LAST\r\n'%(len(m)-len(m)//2)+m[len(m)//2:]
# partial BDAT + RSET + message
blob+=b'MAIL FROM:<a@c.test>\r\nRCPT TO:<bob@example.test>\r\nBDAT 200000\r\n'+base[:200000]+b'RSET\r\n'
blob+=b'QUIT\r\n'
import threading
threading.Thread(target=lambda: s.send(blob)).start()
replies=[]
try:
    while True: replies.append(s.reply()[-1])
except Exception as e: pass
print(replies)
qs=[re.search(r'queued as (\w+)',r).group(1) for r in replies if 'queued' in r]
time.sleep(3); d=by_id()
for i,(q,m) in enumerate(zip(qs,msgs)):
    print(i, q, q in d and split_trace(open(d[q][0],'rb').read())[1]==m)
