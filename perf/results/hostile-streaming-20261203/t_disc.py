import sys, struct; sys.path.insert(0,sys.path[0]); from h import *
body=b''.join(b'%07d abcdefghijklmnopqrstuvwxyz0123456789\r\n'%i for i in range(250000))  # ~11MB
before=set(glob.glob(MAILDIR+'/*'))
def partial(n, rst=False, mode='data'):
    s=S(); s.cmd('EHLO c'); s.cmd('MAIL FROM:<a@c.test>'); s.cmd('RCPT TO:<bob@example.test>')
    if mode=='data':
        s.cmd('DATA'); s.send(b'Subject: partial\r\n\r\n'+body[:n])
    else:
        s.send(b'BDAT %d LAST\r\n'%(n+1000)+b'Subject: partial\r\n\r\n'+body[:n])
    time.sleep(0.3)
    if rst: s.sk.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack('ii',1,0))
    s.close()
for n in [10, 1000, 65536, 65537, 200000, 3000000, len(body)]:
    for rst in (False, True):
        for mode in ('data','bdat'):
            partial(n, rst, mode)
# terminator almost complete: CRLF . without final CRLF
s=S(); s.cmd('EHLO c'); s.cmd('MAIL FROM:<a@c.test>'); s.cmd('RCPT TO:<bob@example.test>'); s.cmd('DATA')
s.send(b'Subject: p\r\n\r\n'+body[:500000]+b'.\r'); time.sleep(0.3); s.close()
# RSET after partial body? in DATA mode RSET is body data; in BDAT mode: BDAT chunk then RSET
s=S(); s.cmd('EHLO c'); s.cmd('MAIL FROM:<a@c.test>'); s.cmd('RCPT TO:<bob@example.test>')
s.send(b'BDAT 300000\r\n'+(b'Subject: r\r\n\r\n'+body)[:300000]); print('bdat chunk', s.reply())
print('RSET', s.cmd('RSET'))
m=b'Subject: after rset\r\n\r\nok\r\n'
r=sendmsg(m, s=s); print('after rset', r, check(m,r)); s.close()
time.sleep(2)
after=set(glob.glob(MAILDIR+'/*'))
print('new deliveries:', len(after-before), [open(f,'rb').read(600).split(b'Subject')[1][:20] for f in after-before])
