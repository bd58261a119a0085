import sys; sys.path.insert(0,sys.path[0]); from h import *
K=1024
cases={}
cases['normal']=b'Subject: a\r\n\r\nbody\r\n'
cases['starts_empty_line']=b'\r\nbody line 1\r\nFrom: not-a-header\r\n'
cases['no_empty_line']=b'Subject: onlyheaders\r\nX-A: b\r\n'
cases['no_empty_line_bodyish']=b'this is not a header\r\nmore text\r\n'
cases['crcrlf']=b'Subject: x\r\r\n\r\nbody\r\n'
cases['cr_cr_lf_sep']=b'Subject: x\r\n\r\r\nbody\r\n'
cases['dot_lines']=b'Subject: d\r\n\r\n.\r\n..\r\n.x\r\n'
for n in (65535,65536,65537,65536*2, 65536-1-2, 64*K+100):
    body=(b'A'*(n-2)+b'\r\n') if n>2 else b'\r\n'
    cases['body%d'%n]=b'Subject: s\r\n\r\n'+body
    # body built of lines
    lines=b''.join(b'%07d abcdefghijklmnopqrstuvwxyz0123456789\r\n'%i for i in range(n//45+1))[:n-2]+b'\r\n'
    cases['lines%d'%n]=b'Subject: s\r\n\r\n'+lines
# headers total 64KiB and body
h=b'X-Pad: '+b'p'*(64*K-9-2)+b'\r\n'
cases['hdr64k']=h+b'\r\nbody\r\n'
cases['hdr64k_body64k']=h+b'\r\n'+b'B'*(64*K-2)+b'\r\n'
# folded huge header (~900KiB)
fold=b'X-Fold: start\r\n'+b''.join(b'\tfold %06d xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx\r\n'%i for i in range(900*K//66))
cases['fold900k']=fold+b'\r\n'+b'body\r\n'
# header with only empty body
cases['hdr_empty_body']=b'Subject: e\r\n\r\n'
# body with binary 8bit
cases['8bit']=b'Subject: 8\r\n\r\n'+bytes(range(1,256)).replace(b'\r',b'').replace(b'\n',b'')+b'\r\n'
# own-name AR removal
cases['ar_own']=b'Authentication-Results: mx.example.test; spf=pass\r\nSubject: ar\r\nAuthentication-Results: other.test; dkim=pass\r\n\r\nAuthentication-Results: mx.example.test; in body\r\n'
sel=sys.argv[1:] or list(cases)
for k in sel:
    m=cases[k]
    try:
        r=sendmsg(m)
    except Exception as e:
        print(k,'EXC',e); continue
    exp=None
    if k=='ar_own': exp=b'Subject: ar\r\nAuthentication-Results: other.test; dkim=pass\r\n\r\nAuthentication-Results: mx.example.test; in body\r\n'
    res=check(m,r,exp) if code(r)==250 else ('refused',)
    print(k, len(m), r[-1], res)
