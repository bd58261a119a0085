# Raw SMTP helpers for the h3 scripts.
import socket, ssl, time, sys
def conn(port, src='127.0.0.1', host='127.0.0.1'):
    s = socket.socket(); s.bind((src, 0)); s.connect((host, port)); s.settimeout(10); return s
def rd(s, t=5):
    s.settimeout(t); out=b''
    try:
        while True:
            d = s.recv(65536)
            if not d: out += b'<EOF>'; break
            out += d
            # a complete final reply line?
            lines = out.split(b'\r\n')
            if len(lines) >= 2 and len(lines[-2]) >= 4 and lines[-2][3:4] == b' ' and out.endswith(b'\r\n'): break
    except socket.timeout: out += b'<TIMEOUT>'
    except ConnectionResetError: out += b'<RST>'
    return out
def cmd(s, line, t=5):
    s.sendall(line if isinstance(line, bytes) else line.encode()); return rd(s, t)
def tls(s, cafile='/tmp/h3-report/ca/ca.pem', sni='mx.example.test'):
    ctx = ssl.create_default_context(cafile=cafile); return ctx.wrap_socket(s, server_hostname=sni)
