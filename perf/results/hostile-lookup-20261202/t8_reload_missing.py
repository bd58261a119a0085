# SIGHUP with the users file missing, no load: old users must stay in force
from harness import *
p,ctl=start(); os.rename(D+'/example.test.users',D+'/users.bak')
try:
    os.kill(p.pid,1); time.sleep(1)
    c,h=newchan(ctl); t=time.time(); c.sendall(auth(1,'alice@example.test','s3cret','g1')); f=recvframe(c,15); print('alive',alive(p),'auth after refused reload:',f[1][4],'%.2fs'%(time.time()-t))
    for i in range(20): os.kill(p.pid,1); time.sleep(0.01)
    print('after HUP storm alive',alive(p), 'probe %.4f'%probe(ctl)[1])
finally: os.rename(D+'/users.bak',D+'/example.test.users')
ctl.close(); p.wait(10); print('exit',p.returncode)
