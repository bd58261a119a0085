# one data byte on the control socket with no SCM_RIGHTS (a cut-off / descriptor-less control message)
from harness import *
p,ctl=start(); ctl.send(b's'); time.sleep(1); print('alive',alive(p),'rc',p.poll())
if alive(p): ctl.close(); p.wait(10); print('exit',p.returncode)
# 65 descriptors in one message (one more than the 64 it accepts: MSG_CTRUNC)
p,ctl=start(); pairs=[socket.socketpair() for i in range(65)]
socket.send_fds(ctl,[b's'],[y.fileno() for x,y in pairs]); time.sleep(1); print('65 fds: alive',alive(p),'rc',p.poll())
if alive(p): ctl.close(); p.wait(10); print('exit',p.returncode)
