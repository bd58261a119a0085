import socket,sys,time
class C:
    def __init__(s,port,host='127.0.0.1'):
        s.s=socket.create_connection((host,port),timeout=30); s.buf=b''
    def line(s):
        while b'\r\n' not in s.buf:
            d=s.s.recv(65536)
            if not d: r=s.buf; s.buf=b''; return r.decode(errors='replace')+'<EOF>'
            s.buf+=d
        l,s.buf=s.buf.split(b'\r\n',1); return l.decode(errors='replace')
    def reply(s):
        out=[]
        while True:
            l=s.line(); out.append(l)
            if len(l)<4 or l[3]!='-': return out
    def send(s,b):
        if isinstance(b,str): b=b.encode()
        s.s.sendall(b)
    def cmd(s,c):
        s.send(c+'\r\n'); return s.reply()
