# hostile helpers: raw SMTP client
import socket, time, hashlib, os, glob, email
HOST='127.0.0.1'; PORT=int(os.environ.get('PORT','2600'))
MAILDIR=os.environ.get('MAILDIR','/var/tmp/hostile-streaming/a/mail/example.test/bob/new')
class S:
    def __init__(s, port=None, timeout=30):
        s.sk=socket.create_connection((HOST, port or PORT), timeout=timeout); s.buf=b''
        s.greet=s.reply()
    def reply(s):
        lines=[]
        while True:
            while b'\r\n' not in s.buf:
                d=s.sk.recv(65536)
                if not d: raise EOFError('closed; got %r'%lines)
                s.buf+=d
            l,s.buf=s.buf.split(b'\r\n',1); lines.append(l.decode('latin1'))
            if len(l)<4 or l[3:4]!=b'-': return lines
    def cmd(s, c):
        s.sk.sendall(c.encode()+b'\r\n'); return s.reply()
    def send(s, b): s.sk.sendall(b)
    def close(s): s.sk.close()
def code(r): return int(r[-1][:3])
def stuff(body):
    # dot-stuff body bytes (CRLF lines)
    out=body.replace(b'\r\n.', b'\r\n..')
    if out.startswith(b'.'): out=b'.'+out
    return out
def sendmsg(msg, rcpt='bob@example.test', s=None, raw=False):
    own = s is None
    if own: s=S(); s.cmd('EHLO client.test')
    r=s.cmd('MAIL FROM:<a@client.test>'); 
    if code(r)!=250: return r
    r=s.cmd('RCPT TO:<%s>'%rcpt)
    if code(r)!=250: return r
    r=s.cmd('DATA')
    if code(r)!=354: return r
    data = msg if raw else stuff(msg)
    if not data.endswith(b'\r\n'): data+=b'\r\n'
    s.send(data+b'.\r\n'); r=s.reply()
    if own: 
        try: s.cmd('QUIT')
        except Exception: pass
        s.close()
    return r
def delivered():
    return sorted(glob.glob(MAILDIR+'/*'), key=os.path.getmtime)
def strip_trace(data):
    # remove leading server-added header fields (Received, Authentication-Results, Return-Path, etc) added at top
    return data
import re
def split_trace(data):
    """return (trace_bytes, rest) where trace = leading Return-Path/Delivered-To/Authentication-Results/Received fields added by server"""
    pos=0; names=[b'return-path:',b'delivered-to:',b'authentication-results:',b'received:']
    seen=0
    while True:
        m=data.find(b'\r\n',pos)
        if m<0: break
        line=data[pos:m+2]
        low=line.lower()
        if any(low.startswith(n) for n in names) and seen<4:
            seen+=1; pos=m+2
            # continuation lines
            while data[pos:pos+1] in (b' ',b'\t'):
                pos=data.find(b'\r\n',pos)+2
            if low.startswith(b'received:'): break
            continue
        break
    return data[:pos], data[pos:]
def by_id():
    d={}
    for f in glob.glob(MAILDIR+'/*'):
        with open(f,'rb') as fh: head=fh.read(4096)
        m=re.search(rb'with E?SMTP\S* id ([0-9A-F]+)', head)
        if m: d.setdefault(m.group(1).decode(),[]).append(f)
    return d
def qid(r):
    m=re.search(r'queued as ([0-9A-F]+)', r[-1]); return m.group(1) if m else None
def check(orig, r, expect_equal=None, wait=10):
    """wait for delivery of queued id, compare"""
    q=qid(r)
    if not q: return ('noqid', r)
    t=time.time()
    while time.time()-t<wait:
        d=by_id()
        if q in d: break
        time.sleep(0.2)
    else: return ('notdelivered', q)
    if len(d[q])>1: return ('DUP', d[q])
    data=open(d[q][0],'rb').read()
    tr,rest=split_trace(data)
    exp = expect_equal if expect_equal is not None else orig
    if rest==exp: return ('ok', q)
    return ('DIFF', q, len(rest), len(exp), d[q][0])
