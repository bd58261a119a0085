import sys,time,os,subprocess; sys.path.insert(0,'/var/tmp/h2'); from smtp import C
P=int(sys.argv[1])
def smtp_pids():
    out=subprocess.run(['pgrep','-P',str(P)],capture_output=True,text=True).stdout.split()
    return [int(p) for p in out if open('/proc/%s/cmdline'%p).read().startswith('ternd: smtp')]
print('before', smtp_pids())
# session mid-DATA with a large message
c=C(13525); c.reply(); c.cmd('EHLO t'); c.cmd('MAIL FROM:<a@example.org>'); c.cmd('RCPT TO:<bob@example.org>'); c.cmd('DATA')
c.send('Message-ID: <mid-data-reload@t>\r\n\r\n' + ('x'*998+'\r\n')*800)
os.kill(P,1); time.sleep(1.5)
print('after HUP', smtp_pids())
# new connections: who serves them?
cs=[]
for i in range(20):
    d=C(13525); d.reply(); cs.append(d)
time.sleep(0.3)
ss=subprocess.run(['ss','-tnpH','state','established','( sport = :13525 )'],capture_output=True,text=True).stdout
import re, collections
print('new conns served by', collections.Counter(re.findall(r'pid=(\d+)',ss)))
c.send(('x'*998+'\r\n')*800 + '.\r\n'); print('mid-data reply', c.reply())
print(c.cmd('MAIL FROM:<a@example.org>'), c.cmd('RCPT TO:<bob@example.org>'), c.cmd('DATA'))
c.send('Message-ID: <second-on-old@t>\r\n\r\nx\r\n.\r\n'); print(c.reply()); print(c.cmd('QUIT'))
for d in cs: d.cmd('QUIT')
time.sleep(1); print('end', smtp_pids())
