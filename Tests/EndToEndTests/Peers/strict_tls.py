# Strict TLS peers for close_notify (RFC 8446 §6.1): Python's ssl on OpenSSL 3 without
# OP_IGNORE_UNEXPECTED_EOF and with suppress_ragged_eofs=False, so a TCP close without close_notify
# is an error, as Exim treats it ("TLS connection was non-properly terminated").
#
#   python3 strict_tls.py client PORT          STARTTLS, EHLO, QUIT; prints "close_notify" or "unexpected-eof: ..."
#   python3 strict_tls.py server PORT CERT KEY LOG
#                                              an SMTP receiver with STARTTLS that takes every message;
#                                              after each session appends "close_notify" or
#                                              "unexpected-eof: ..." to LOG
import signal
import socket
import ssl
import sys


def strict(ctx):
    ctx.options &= ~getattr(ssl, "OP_IGNORE_UNEXPECTED_EOF", 0)
    return ctx


class Lines:
    def __init__(self, sock):
        self.sock, self.buf = sock, b""

    def line(self):
        while b"\r\n" not in self.buf:
            data = self.sock.recv(65536)
            if not data:
                raise EOFError("closed")
            self.buf += data
        line, self.buf = self.buf.split(b"\r\n", 1)
        return line

    def reply(self):
        while True:
            line = self.line()
            if line[3:4] != b"-":
                return line


def end_of(sock):
    """What ends the peer's side: close_notify, or an EOF without it."""
    try:
        while sock.recv(65536):
            pass
        return "close_notify"
    except ssl.SSLEOFError as e:
        return f"unexpected-eof: {e}"
    except (ssl.SSLError, OSError) as e:
        return f"unexpected-eof: {e}"


def client(port):
    ctx = strict(ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT))
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    sock = socket.create_connection(("127.0.0.1", port), timeout=20)
    r = Lines(sock)
    r.reply()
    sock.sendall(b"EHLO client.example\r\n")
    r.reply()
    sock.sendall(b"STARTTLS\r\n")
    assert r.reply().startswith(b"220"), "STARTTLS refused"
    tls = ctx.wrap_socket(sock, suppress_ragged_eofs=False)
    t = Lines(tls)
    tls.sendall(b"EHLO client.example\r\n")
    t.reply()
    tls.sendall(b"QUIT\r\n")
    assert t.reply().startswith(b"221")
    print(end_of(tls), flush=True)


def server(port, cert, key, log):
    # The test runner may start us with SIGTERM blocked: take it back, so terminate() ends us.
    signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGTERM, signal.SIGINT})
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    ctx = strict(ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER))
    ctx.load_cert_chain(cert, key)
    listener = socket.create_server(("127.0.0.1", port))
    print("listening", flush=True)
    while True:
        sock, _ = listener.accept()
        sock.settimeout(20)
        outcome = "no TLS"
        try:
            r = Lines(sock)
            sock.sendall(b"220 strict.example ESMTP\r\n")
            conn, lines = sock, r
            while True:
                cmd = lines.line().upper()
                if cmd.startswith(b"EHLO"):
                    ext = b"" if conn is not sock else b"250-STARTTLS\r\n"
                    conn.sendall(b"250-strict.example\r\n" + ext + b"250 PIPELINING\r\n")
                elif cmd.startswith(b"STARTTLS"):
                    sock.sendall(b"220 2.0.0 go ahead\r\n")
                    conn = ctx.wrap_socket(sock, server_side=True, suppress_ragged_eofs=False)
                    lines = Lines(conn)
                elif cmd.startswith(b"DATA"):
                    conn.sendall(b"354 go\r\n")
                    while lines.line() != b".":
                        pass
                    conn.sendall(b"250 2.0.0 taken\r\n")
                elif cmd.startswith(b"QUIT"):
                    conn.sendall(b"221 2.0.0 bye\r\n")
                    outcome = end_of(conn) if conn is not sock else "no TLS"
                    if conn is not sock and outcome == "close_notify":
                        try:
                            conn.unwrap()
                        except (ssl.SSLError, OSError):
                            pass
                    break
                else:
                    conn.sendall(b"250 2.0.0 ok\r\n")
        except Exception as e:  # a session that went wrong is reported, the server goes on
            outcome = f"error: {e}"
        finally:
            with open(log, "a") as f:
                f.write(outcome + "\n")
            try:
                sock.close()
            except OSError:
                pass


if __name__ == "__main__":
    if sys.argv[1] == "client":
        client(int(sys.argv[2]))
    else:
        server(int(sys.argv[2]), sys.argv[3], sys.argv[4], sys.argv[5])
