import sys,time,socket; sys.path.insert(0,'/var/tmp/h2'); from smtp import C
# 1) disconnect mid-DATA after 500 KB (streamed past 64 KiB)
for mode in ['close','reset']:
    c=C(13525); c.reply(); c.cmd('EHLO t'); c.cmd('MAIL FROM:<a@example.org>'); c.cmd('RCPT TO:<bob@example.org>'); c.cmd('DATA')
    c.send('Message-ID: <abort-%s@t>\r\n\r\n'%mode + ('x'*998+'\r\n')*500)
    time.sleep(0.3)
    if mode=='reset':
        c.s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b'\x01\x00\x00\x00\x00\x00\x00\x00')
    c.s.close()
# 2) full message sent, but disconnect right after the final dot without reading the reply
c=C(13525); c.reply(); c.cmd('EHLO t'); c.cmd('MAIL FROM:<a@example.org>'); c.cmd('RCPT TO:<bob@example.org>'); c.cmd('DATA')
c.send('Message-ID: <dot-then-close@t>\r\n\r\n' + ('y'*998+'\r\n')*300 + '.\r\n'); c.s.close()
# 3) DATA then stall (should hit data-timeout 20s)
c=C(13525); c.reply(); c.cmd('EHLO t'); c.cmd('MAIL FROM:<a@example.org>'); c.cmd('RCPT TO:<bob@example.org>'); print(c.cmd('DATA'))
c.send('Message-ID: <stall@t>\r\n\r\n' + ('z'*998+'\r\n')*100)
t=time.time(); c.s.settimeout(60); print('stall reply', c.reply(), round(time.time()-t,1))
