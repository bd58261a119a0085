#!/bin/bash
# BDAT text with bare CR/LF: refused 554 5.6.0 (also across chunks), CRLF split across chunks
# accepted, BINARYMIME carries them; DATA refused by the next hop followed by RSET.
. /tmp/h3-report/lib.sh
D=/tmp/h3t/bdat; PORT=2616
mkenv $D $PORT 'relay bin.example via smtp://127.0.0.1:2624' 'relay nochunk.example via smtp://127.0.0.1:2625' 'relay refdata.example via smtp://127.0.0.1:2626'
python3 peer.py 2624 $D/peer-bin.log --chunking & P1=$!
python3 peer.py 2625 $D/peer-nochunk.log & P2=$!
python3 peer.py 2626 $D/peer-refdata.log --refuse-data & P3=$!
sleep 1; start $D || exit 1
python3 - $PORT <<'PY'
import sys; sys.path.insert(0,'/tmp/h3-report'); from smtp import *
P=int(sys.argv[1])
def bdat(label, chunks, body='', rcpt='bob@example.test'):
    s = conn(P); rd(s); cmd(s,'EHLO c\r\n'); cmd(s,'MAIL FROM:<alice@example.test>%s\r\n' % body); cmd(s,'RCPT TO:<%s>\r\n' % rcpt)
    rs = []
    for i, c in enumerate(chunks):
        last = ' LAST' if i == len(chunks) - 1 else ''
        rs.append(cmd(s, b'BDAT %d%s\r\n' % (len(c), last.encode()) + c).strip())
    rs.append(cmd(s, 'NOOP\r\n').strip())
    print('%-44s %r' % (label, rs))
H = b'Subject: b\r\n\r\n'
bdat('bare LF in one chunk', [H + b'a\nb\r\n'])
bdat('bare CR in one chunk', [H + b'a\rb\r\n'])
bdat('CR | LF split across chunks (valid CRLF)', [H + b'a\r', b'\nb\r\n'])
bdat('CR | x across chunks (bare CR)', [H + b'a\r', b'xb\r\n'])
bdat('LF at start of 2nd chunk after CRLF', [H + b'a\r\n', b'\nb\r\n'])
bdat('CR at the very end of the last chunk', [H + b'a\r\nb\r'])
bdat('empty LAST after a chunk ending in CR', [H + b'a\r', b''])
bdat('LF.CRLF smuggling in BDAT', [H + b'a\n.\r\nMAIL FROM:<x@y>\r\n'])
bdat('BINARYMIME bare LF (accepted)', [H + b'a\nb\r\n'], ' BODY=BINARYMIME')
bdat('BINARYMIME -> CHUNKING peer', [H + b'bin\nary\r\n'], ' BODY=BINARYMIME', rcpt='x@bin.example')
bdat('BINARYMIME -> peer without CHUNKING', [H + b'bin\nary\r\n'], ' BODY=BINARYMIME', rcpt='x@nochunk.example')
bdat('text -> peer that refuses DATA', [H + b'x\r\n'], rcpt='x@refdata.example')
bdat('text -> peer that refuses DATA, again', [H + b'y\r\n'], rcpt='y@refdata.example')
PY
sleep 5
echo "--- CHUNKING peer:"; grep -a "MAIL\|BDAT\|CHUNK\|RSET" $D/peer-bin.log | sed 's/^/  /'
echo "--- peer without CHUNKING:"; grep -a "MAIL\|BODY\|RSET" $D/peer-nochunk.log | sed 's/^/  /'
echo "--- peer refusing DATA:"; grep -a "C:\|BODY" $D/peer-refdata.log | sed 's/^/  /'
grep -a "mail:" $D/log | grep -a "bin.example\|nochunk\|refdata" | sed 's/^ternd\[[0-9]*\]: mail: /  /'
stop $D; kill $P1 $P2 $P3
