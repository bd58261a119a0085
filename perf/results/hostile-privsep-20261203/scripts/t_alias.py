import sys; sys.path.insert(0,'/var/tmp/h2'); from smtp import C
c=C(13525); c.reply(); c.cmd('EHLO t')
print(c.cmd('MAIL FROM:<a@example.org>'), c.cmd('RCPT TO:<%s>'%sys.argv[1]), c.cmd('DATA')); c.send('Message-ID: <%s@t>\r\n\r\nhi\r\n.\r\n'%sys.argv[2]); print(c.reply()); c.cmd('QUIT')
