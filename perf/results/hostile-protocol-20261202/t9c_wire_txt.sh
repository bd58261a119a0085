#!/bin/bash
# SPF through the wire format: a TXT record with no strings (rdlength 0) beside the SPF record, alone,
# a zero-length string, and a malformed TXT (string longer than its rdata). A tiny DNS server on 127.0.0.1:5354.
. /tmp/h3-report/lib.sh
python3 - <<'PY' & DNS=$!
import socket, struct
recs = {
 'emptytxt.test': [b'', b'\x1bv=spf1 ip4:127.0.0.0/8 -all'],
 'onlyempty.test': [b''],
 'zerostring.test': [b'\x00', b'\x1bv=spf1 ip4:127.0.0.0/8 -all'],
 'badlen.test': [b'\x40v=spf1 -all'],
 'split.test': [b'\x04v=sp\x17f1 ip4:127.0.0.0/8 -all'],
}
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.bind(('127.0.0.1', 5354))
while True:
    q, a = s.recvfrom(4096)
    qid = q[:2]; i = 12; labels = []
    while q[i]: labels.append(q[i+1:i+1+q[i]].decode()); i += 1 + q[i]
    qend = i + 5; qtype = struct.unpack('>H', q[i+1:i+3])[0]; name = '.'.join(labels).lower()
    ans = recs.get(name, []) if qtype == 16 else []
    rcode = 0 if name in recs else 3
    hdr = qid + struct.pack('>HHHHH', 0x8180 | rcode, 1, len(ans), 0, 0)
    body = q[12:qend] + b''.join(b'\xc0\x0c' + struct.pack('>HHIH', 16, 1, 60, len(r)) + r for r in ans)
    s.sendto(hdr + body, a)
PY
sleep 0.5
D=/tmp/h3t/wire; mkenv $D 2632; sed -i 's/^resolver zone test.zone/resolver 127.0.0.1:5354/' $D/tern.conf
for d in emptytxt.test onlyempty.test zerostring.test badlen.test split.test; do
  printf '  %-16s %s\n' $d "$(cd $D; timeout 20 $TERNCTL spf check --ip 127.0.0.2 --helo c.example --from a@$d --config tern.conf 2>&1 | tr '\n' ' ')"
done
kill $DNS
