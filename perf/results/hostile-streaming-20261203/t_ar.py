import sys; sys.path.insert(0,sys.path[0]); from h import *
from t_bdat import bdat
pad=b'X-Fold: s\r\n'+(b'\t'+b'f'*76+b'\r\n')*1000   # ~79KB header
AR=b'Authentication-Results: mx.example.test; spf=pass smtp.mailfrom=evil\r\n'
tests=[
 ('ar_lower', b'authentication-results: MX.EXAMPLE.TEST; dkim=pass\r\nSubject: x\r\n\r\nb\r\n', b'Subject: x\r\n\r\nb\r\n'),
 ('ar_nospace', b'Authentication-Results:mx.example.test; dkim=pass\r\nSubject: x\r\n\r\nb\r\n', b'Subject: x\r\n\r\nb\r\n'),
 ('ar_folded', b'Authentication-Results:\r\n mx.example.test;\r\n  dkim=pass\r\nSubject: x\r\n\r\nb\r\n', b'Subject: x\r\n\r\nb\r\n'),
 ('ar_version', b'Authentication-Results: mx.example.test 1; dkim=pass\r\nSubject: x\r\n\r\nb\r\n', b'Subject: x\r\n\r\nb\r\n'),
 ('ar_comment', b'Authentication-Results: (c) mx.example.test; dkim=pass\r\nSubject: x\r\n\r\nb\r\n', b'Subject: x\r\n\r\nb\r\n'),
 ('ar_after_pad', pad+AR+b'Subject: x\r\n\r\nb\r\n', pad+b'Subject: x\r\n\r\nb\r\n'),
 ('ar_last_noblank', b'Subject: x\r\n'+AR, b'Subject: x\r\n'),
 ('ar_other', b'Authentication-Results: mx.example.test.evil; dkim=pass\r\n\r\nb\r\n', None),
 ('ar_sub', b'Authentication-Results: sub.mx.example.test; dkim=pass\r\n\r\nb\r\n', None),
 ('ar_ws_before_colon', b'Authentication-Results : mx.example.test; dkim=pass\r\nSubject: x\r\n\r\nb\r\n', b'Subject: x\r\n\r\nb\r\n'),
 ('ar_dot', b'Authentication-Results: mx.example.test.; dkim=pass\r\nSubject: x\r\n\r\nb\r\n', b'Subject: x\r\n\r\nb\r\n'),
]
for name,m,exp in tests:
    r=sendmsg(m); print(name, r[-1], check(m,r,exp) if code(r)==250 else '')
# BINARYMIME with LF line endings and AR
m=b'Authentication-Results: mx.example.test; spf=pass\nSubject: lf\n\nbody\n'
r=bdat(m,[],' BODY=BINARYMIME'); print('binmime_lf_ar', r, check(m,r,b'Subject: lf\n\nbody\n') if code(r)==250 else '')
# Received loop
for n in [3,5,10,20,30,50]:
    m=b''.join(b'Received: from h%d by x; Thu, 1 Jan 2026 00:00:00 +0000\r\n'%i for i in range(n))+b'Subject: loop\r\n\r\nb\r\n'
    r=sendmsg(m); print('received',n,r[-1])
m=pad+b''.join(b'Received: from h%d by x; Thu, 1 Jan 2026 00:00:00 +0000\r\n'%i for i in range(60))+b'\r\nb\r\n'
r=sendmsg(m); print('received60 after pad',r[-1])
m=b'Subject: x\r\n\r\n'+b''.join(b'Received: from h%d by x\r\n'%i for i in range(100))
r=sendmsg(m); print('received in body',r[-1], check(m,r) if code(r)==250 else '')
m=b''.join(b'received:from h%d\r\n'%i for i in range(60))+b'\r\nb\r\n'
r=sendmsg(m); print('received lower nospace',r[-1])
m=b''.join(b'Received: from h%d\r\n'%i for i in range(60))
r=sendmsg(m); print('received no blank line',r[-1])
