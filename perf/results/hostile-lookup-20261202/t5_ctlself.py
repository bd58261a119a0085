# passes the parent's own end of the control socket back to lookup as an "smtp channel"
from harness import *
p,ctl=start()
socket.send_fds(ctl,[b's'],[ctl.fileno()]); time.sleep(1)
print('alive',alive(p),'rc',p.poll())
ctl.setblocking(False)
try: print('bytes that arrived on the control socket:', ctl.recv(100).hex())
except Exception as e: print('ctl recv',e)
if alive(p): ctl.close(); p.wait(10); print('exit', p.returncode)
