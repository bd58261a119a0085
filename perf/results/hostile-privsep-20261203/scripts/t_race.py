import socket,threading,time,sys
PORT=13525; stop=time.time()+float(sys.argv[1]); n=[0]
def one(i):
    while time.time()<stop:
        try:
            s=socket.create_connection(('127.0.0.1',PORT),timeout=10)
            s.sendall(b'EHLO t\r\nMAIL FROM:<a@example.org>\r\nRCPT TO:<bob@example.org>\r\nDATA\r\n')
            buf=b''
            while buf.count(b'\r\n354')<1 and b'354 ' not in buf:
                d=s.recv(4096)
                if not d: break
                buf+=d
            s.sendall(b'Message-ID: <race-%d-%d@t>\r\n\r\nhello\r\n.\r\n'%(i,n[0]))
            time.sleep(float(sys.argv[2])*(n[0]%7)/7)
            s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b'\x01\x00\x00\x00\x00\x00\x00\x00')
            s.close(); n[0]+=1
        except Exception as e:
            pass
ts=[threading.Thread(target=one,args=(i,)) for i in range(16)]
[t.start() for t in ts]; [t.join() for t in ts]; print('sent',n[0])
