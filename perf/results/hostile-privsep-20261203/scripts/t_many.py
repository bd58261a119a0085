# pipelined: MAIL + 500 RCPT + DATA in one write
import sys; sys.path.insert(0,'/var/tmp/h2'); from smtp import C
c=C(13525); print(c.reply()); print(c.cmd('EHLO t')[-1])
n=500
rc=['bob+%d@example.org'%i for i in range(n)]
c.send('MAIL FROM:<a@example.org>\r\n'+''.join('RCPT TO:<%s>\r\n'%r for r in rc)+'DATA\r\n')
rs=[c.reply() for _ in range(n+2)]
from collections import Counter
print(Counter(r[0][:3] for r in rs))
print(rs[0],rs[1],rs[-1])
c.send('Message-ID: <many500@t>\r\nSubject: x\r\n\r\nbody\r\n.\r\n'); print(c.reply())
print(c.cmd('RSET')); print(c.cmd('MAIL FROM:<a@example.org>')); print(c.cmd('RCPT TO:<team@example.org>')); print(c.cmd('RCPT TO:<alice@example.org>'))
print(c.cmd('DATA')); c.send('Message-ID: <after-rset@t>\r\n\r\nx\r\n.\r\n'); print(c.reply()); print(c.cmd('QUIT'))
