# A scripted SMTP peer (next hop) that logs every line it gets. Usage:
#   peer.py PORT LOG [--dsn] [--chunking] [--refuse-rcpt WORD] [--refuse-mail WORD] [--refuse-data] [--starttls]
import asyncio, sys, ssl
args = sys.argv[1:]; PORT = int(args[0]); LOG = open(args[1], 'a', buffering=1)
def opt(n): return n in args
def val(n): return args[args.index(n)+1] if n in args else None
caps = ['PIPELINING', 'SIZE 100000000', '8BITMIME', 'ENHANCEDSTATUSCODES', 'SMTPUTF8']
if opt('--dsn'): caps.append('DSN')
if opt('--chunking'): caps += ['CHUNKING', 'BINARYMIME']
if opt('--starttls'): caps.append('STARTTLS')
async def handle(r, w):
    rcpts = 0; mail_ok = False
    def out(s): w.write(s.encode() + b'\r\n')
    out('220 peer.example ESMTP scripted'); await w.drain()
    while True:
        line = await r.readline()
        if not line: break
        LOG.write('C: %r\n' % line)
        u = line.strip().upper()
        if u.startswith(b'EHLO'): out('\r\n'.join(['250-peer.example'] + ['250-' + c for c in caps[:-1]] + ['250 ' + caps[-1]]))
        elif u.startswith(b'HELO'): out('250 peer.example')
        elif u.startswith(b'MAIL'):
            if val('--refuse-mail') and val('--refuse-mail').encode().upper() in u: out('550 5.7.1 sender refused'); mail_ok = False
            else: out('250 2.1.0 ok'); rcpts = 0; mail_ok = True
        elif u.startswith(b'RCPT') and not mail_ok: out('503 5.5.1 need MAIL')
        elif u.startswith(b'RCPT'):
            if val('--refuse-rcpt') and val('--refuse-rcpt').encode().upper() in u: out('550 5.1.1 no such user')
            else: out('250 2.1.5 ok'); rcpts += 1
        elif u == b'DATA' and not mail_ok: out('503 5.5.1 need MAIL')
        elif u == b'DATA' and rcpts == 0: out('554 5.5.1 no valid recipients')
        elif u == b'DATA':
            out('354 go'); await w.drain(); body = b''
            while True:
                l = await r.readline()
                if not l or l == b'.\r\n': break
                body += l
            LOG.write('BODY %d bytes, bare CR/LF: %s\n' % (len(body), (b'\r' in body.replace(b'\r\n', b'')) or (b'\n' in body.replace(b'\r\n', b''))))
            out('554 5.6.0 refused data' if opt('--refuse-data') else '250 2.0.0 queued'); mail_ok = False
        elif u.startswith(b'BDAT'):
            n = int(u.split()[1]); chunk = await r.readexactly(n)
            LOG.write('CHUNK %d bytes, bare CR/LF: %s\n' % (n, (b'\r' in chunk.replace(b'\r\n', b'')) or (b'\n' in chunk.replace(b'\r\n', b''))))
            out('250 2.0.0 chunk ok')
        elif u == b'RSET': out('250 2.0.0 reset'); mail_ok = False
        elif u == b'QUIT': out('221 bye'); await w.drain(); break
        else: out('502 5.5.1 no')
        await w.drain()
    w.close()
async def main():
    srv = await asyncio.start_server(handle, '127.0.0.1', PORT); LOG.write('listening %d %s\n' % (PORT, caps))
    async with srv: await srv.serve_forever()
asyncio.run(main())
