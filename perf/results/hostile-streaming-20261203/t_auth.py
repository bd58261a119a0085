import sys, ssl, socket, time, base64, threading
N=int(sys.argv[1]); DUR=float(sys.argv[2]); PIPE=int(sys.argv[3]) if len(sys.argv)>3 else 1
ctx=ssl.create_default_context(); ctx.check_hostname=False; ctx.verify_mode=ssl.CERT_NONE
class T:
    def __init__(s, host, port=2606):
        raw=socket.create_connection((host,port),timeout=60); s.sk=ctx.wrap_socket(raw, server_hostname='mx.example.test'); s.buf=b''; s.reply()
    def reply(s):
        while True:
            while b'\r\n' not in s.buf:
                d=s.sk.recv(65536)
                if not d: raise EOFError
                s.buf+=d
            l,s.buf=s.buf.split(b'\r\n',1)
            if l[3:4]!=b'-': return l.decode()
    def cmd(s,c): s.sk.sendall(c.encode()+b'\r\n'); return s.reply()
def plain(u,p): return 'AUTH PLAIN '+base64.b64encode(b'\0'+u.encode()+b'\0'+p.encode()).decode()
stop=[False]; count=[0,0]
def flood():
    while not stop[0]:
        try:
            t=T('127.0.0.1'); t.cmd('EHLO f')
            if PIPE>1:
                # pipeline many AUTH attempts then close without reading (abandoned checks)
                t.sk.sendall(((plain('flood@example.test','pw-flood')+'\r\n')*PIPE).encode()); t.sk.close(); count[1]+=1; continue
            r=t.cmd(plain('flood@example.test','pw-flood')); count[0]+=1; t.sk.close()
        except Exception as e: time.sleep(0.05)
ts=[threading.Thread(target=flood,daemon=True) for _ in range(N)]
[t.start() for t in ts]
time.sleep(2)
lat=[]
t_end=time.time()+DUR
while time.time()<t_end:
    t=T('::1'); t.cmd('EHLO v'); a=time.time(); r=t.cmd(plain('victim@example.test','pw-victim')); lat.append((round(time.time()-a,2), r[:20])); t.sk.close(); time.sleep(0.5)
stop[0]=True
print('flood auths completed', count, 'victim latencies', lat)
