# An HTTPS server for MTA-STS tests: serves ROOT/<Host> at /.well-known/mta-sts.txt with the
# content type in ROOT/<Host>.type (text/plain by default), or a redirect when ROOT/<Host>.redirect
# exists; appends each host asked for to ROOT/hits. Prints "ready" once listening.
import http.server, os, ssl, sys

root, port, cert, key = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4]


class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_GET(self):
        host = self.headers.get("Host", "")
        with open(os.path.join(root, "hits"), "a") as f:
            f.write(host + "\n")
        path = os.path.join(root, host)
        if os.path.exists(path + ".redirect"):
            self.send_response(301)
            self.send_header("Location", open(path + ".redirect").read().strip())
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        if self.path != "/.well-known/mta-sts.txt" or not os.path.exists(path):
            self.send_response(404)
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        body = open(path, "rb").read()
        ctype = open(path + ".type").read().strip() if os.path.exists(path + ".type") else "text/plain; charset=utf-8"
        self.send_response(200)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
ctx.load_cert_chain(cert, key)
server = http.server.ThreadingHTTPServer(("127.0.0.1", port), Handler)
server.socket = ctx.wrap_socket(server.socket, server_side=True)
print("ready", flush=True)
server.serve_forever()
