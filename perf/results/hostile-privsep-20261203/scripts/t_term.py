import sys,time,os; sys.path.insert(0,'/var/tmp/h2'); from smtp import C
P=int(sys.argv[1])
c=C(13525); c.reply(); c.cmd('EHLO t'); c.cmd('MAIL FROM:<a@example.org>'); c.cmd('RCPT TO:<bob@example.org>'); c.cmd('DATA')
c.send('Message-ID: <term-mid-data@t>\r\n\r\n' + ('x'*998+'\r\n')*2000)
d=C(13525); d.reply(); d.cmd('EHLO t')
os.kill(P,15); t=time.time(); time.sleep(2)
c.send(('x'*998+'\r\n')*2000 + '.\r\n'); print('mid-data after TERM:', c.reply(), round(time.time()-t,2))
print('second msg same session:', c.cmd('MAIL FROM:<a@example.org>'))
print('idle session:', d.cmd('MAIL FROM:<a@example.org>'))
try:
    e=C(13525); print('new conn', e.reply())
except Exception as ex: print('new conn', ex)
