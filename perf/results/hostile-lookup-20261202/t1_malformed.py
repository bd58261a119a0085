from harness import *
p,ctl=start()
cases={
 'before_hello': frame(12,struct.pack('>I',1)+s('a@b')),
 'len0': struct.pack('>I',0),
 'len_huge': struct.pack('>I',0xffffffff)+b'\x0a',
 'len_262145': struct.pack('>I',262145)+b'\x0a',
 'bad_version': frame(1,struct.pack('>HB',3,2)),
 'bad_role': frame(1,struct.pack('>HB',2,4)),
}
after_hello={
 'second_hello': HELLO,
 'answer_type': frame(11,struct.pack('>IB',1,1)),
 'unknown_type': frame(99,b''),
 'truncated_string': frame(12,struct.pack('>I',1)+struct.pack('>I',100)+b'abc'),
 'trailing_bytes': frame(12,struct.pack('>I',1)+s('alice@example.test')+b'XX'),
 'nul_in_string': resolve(1,'ali\x00ce@example.test'),
 'bad_utf8': frame(12,struct.pack('>I',1)+s(b'\xff\xfe@example.test')),
 'long_name_1025': resolve(1,'a'*1020+'@x.t'+'x'),
 'dup_request': resolve(7,'alice@example.test')+auth(7,'alice@example.test','x'),
 'str_len_overflow': frame(12,struct.pack('>I',1)+struct.pack('>I',0xfffffff0)),
 'huge_password': auth(1,'alice@example.test',b'A'*262000),
 'empty_payload_auth': frame(10,b''),
}
def run(name,data,hello):
    c=chan(ctl)
    if hello: c.sendall(HELLO)
    try: c.sendall(data)
    except Exception as e: print(name,'send err',e)
    res=[]
    try:
        while True:
            f=recvframe(c,3)
            if f is None: res.append('EOF'); break
            res.append((f[0],f[1][:12].hex()))
    except socket.timeout: res.append('TIMEOUT(open)')
    print(f'{name:20s} alive={alive(p)} -> {res}')
    c.close()
for k,v in cases.items(): run(k,v,False)
for k,v in after_hello.items(): run(k,v,True)
print('probe',probe(ctl)); rss(p)
ctl.close(); p.wait(timeout=5); print('exit',p.returncode)
