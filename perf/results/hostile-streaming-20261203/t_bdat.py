import sys; sys.path.insert(0,sys.path[0]); from h import *
def bdat(m, sizes, body_opt=''):
    s=S(); s.cmd('EHLO c')
    r=s.cmd('MAIL FROM:<a@c.test>'+body_opt); 
    if code(r)!=250: return r
    s.cmd('RCPT TO:<bob@example.test>')
    pos=0; out=[]
    chunks=[]
    for z in sizes:
        chunks.append(m[pos:pos+z]); pos+=z
    chunks.append(m[pos:])
    for i,c in enumerate(chunks):
        last = i==len(chunks)-1
        s.send(b'BDAT %d%s\r\n'%(len(c), b' LAST' if last else b'')+c)
        r=s.reply(); out.append(r[-1])
        if code(r)!=250: break
    s.close(); return [out[-1]]
if __name__=='__main__':
    m=b'Subject: b\r\nX: y\r\n\r\nbody\r\n.\r\nmore\r\n'
    bad=[]
    for i in range(0,len(m)+1):
        r=bdat(m,[i]); c=check(m,r)
        if c[0]!='ok': bad.append((i,r,c))
    print('bdat single cuts', bad or 'ok')
    r=bdat(m,[1]*len(m)); print('bytewise', check(m,r))
    r=bdat(m,[len(m)]); print('then 0 LAST', r, check(m,r))
    body=b''.join(b'%07d abcdefghijklmnopqrstuvwxyz0123456789\r\n'%i for i in range(5000))
    m2=b'Subject: s\r\n\r\n'+body
    for sz in [[65536],[65535,2],[14],[13,1,65536],[100000]]:
        r=bdat(m2,sz); print(sz, r, check(m2,r))
    # bare LF / binary with BINARYMIME
    m3=b'Subject: bin\r\nContent-Transfer-Encoding: binary\r\n\r\n'+bytes(range(256))*300
    r=bdat(m3,[1000,65536],' BODY=BINARYMIME'); print('binarymime', r, check(m3,r))
    m4=b'Subject: lf\n\nbody\nline\n'
    r=bdat(m4,[]); print('bare LF bdat no binarymime', r, check(m4,r) if code([r[-1]])==250 else '')

