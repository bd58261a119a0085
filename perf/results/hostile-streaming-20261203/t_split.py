import sys; sys.path.insert(0,sys.path[0]); from h import *
import random
socket_nodelay=True
def send_split(m, cuts):
    s=S(); s.sk.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1); s.cmd('EHLO c')
    s.cmd('MAIL FROM:<a@c.test>'); s.cmd('RCPT TO:<bob@example.test>'); s.cmd('DATA')
    data=stuff(m)+b'.\r\n'; prev=0
    for c in sorted(cuts)+[len(data)]:
        s.send(data[prev:c]); prev=c; time.sleep(0.02)
    r=s.reply(); s.close(); return r
m=b'Subject: split\r\nX-B: c\r\n\r\nbody\r\n.dotline\r\nend\r\n'
res=[]
for i in []:
    r=send_split(m,[i]); res.append((i,code(r),check(m,r)[0]))
print([x for x in res if x[2]!='ok'] or 'all single cuts ok')
# every byte separately
r=send_split(m, list(range(1,len(m)+3))); print('bytewise', r, check(m,r))
# cuts around 64KiB boundary in body of lines, also split the CRLF . CRLF terminator
body=b''.join(b'%07d abcdefghijklmnopqrstuvwxyz0123456789\r\n'%i for i in range(3000))
m2=b'Subject: s\r\n\r\n'+body[:65536-14]+b'.\r\n..x\r\n'+body[:70000]+b"\r\n"
for c in [65534,65535,65536,65537,65538,len(stuff(m2))-1,len(stuff(m2))+1,len(stuff(m2))+2]:
    r=send_split(m2,[c]); print(c, r, check(m2,r))
