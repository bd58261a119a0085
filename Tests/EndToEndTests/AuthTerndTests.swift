import Foundation
import TernTestSupport
import Testing

/// A ternd with certificates, a users file holding alice@example.test, and the three listeners.
final class AuthTernd {
    let t: TerndProcess
    let submission = freePort()
    let submissions = freePort()
    static let password = "correct horse 7"

    init(limits: String = "") throws {
        t = try TerndProcess(
            extraConfig: """
                certificates certs
                listen submission 127.0.0.1:\(submission)
                listen submissions 127.0.0.1:\(submissions)
                \(limits)
                """,
            domainConfig: "users users.example.test")
        try STARTTLSTests.makeCertificates(t.dir)
        try addUser("alice@example.test", Self.password)
        try t.start()
    }

    static var ternctl: String { builtBinary("ternctl") }

    /// `ternctl user add` with the password on standard input, as an admin script would.
    @discardableResult
    func addUser(_ user: String, _ password: String) throws -> (status: Int32, out: String, err: String) {
        try run("/bin/sh", ["-c", "printf '%s\\n' \"$0\" | '\(Self.ternctl)' user add \"$1\" --config '\(t.dir)/tern.conf'", password, user])
    }

    /// Runs one SMTP dialog from Python: `mode` is plain, starttls or tls (implicit); each command
    /// line is sent alone and its reply printed as one line `CODE text` (multi-line replies joined).
    func dialog(port: Int, mode: String, _ commands: [String], timeout: TimeInterval = 60) throws -> [String] {
        let script = """
            import socket, ssl, sys, json, time
            port, mode, commands = int(sys.argv[1]), sys.argv[2], json.loads(sys.argv[3])
            ctx = ssl.create_default_context(cafile=sys.argv[4])
            s = socket.create_connection(("127.0.0.1", port), timeout=20)
            if mode == "tls":
                s = ctx.wrap_socket(s, server_hostname="mx.example.test")
            f = s.makefile("rb")
            def reply():
                lines = []
                while True:
                    line = f.readline()
                    if not line:
                        return "closed"
                    lines.append(line.decode("utf-8", "replace").rstrip("\\r\\n"))
                    if line[3:4] != b"-":
                        return " | ".join(lines)
            print(reply(), flush=True)
            if mode == "starttls":
                s.sendall(b"EHLO c.test\\r\\n"); reply()
                s.sendall(b"STARTTLS\\r\\n"); reply()
                s = ctx.wrap_socket(s, server_hostname="mx.example.test")
                f = s.makefile("rb")
            for c in commands:
                start = time.monotonic()
                try:
                    s.sendall(c.encode() + b"\\r\\n")
                    r = reply()
                except OSError:
                    r = "closed"
                print("%s [%.2fs]" % (r, time.monotonic() - start) if c.startswith("AUTH") or c.startswith("cGFz") else r, flush=True)
                if r == "closed":
                    break
            """
        let json = String(decoding: try JSONSerialization.data(withJSONObject: commands), as: UTF8.self)
        let r = try run("/usr/bin/python3", ["-c", script, String(port), mode, json, "\(t.dir)/ca.pem"], timeout: timeout)
        #expect(r.err.isEmpty || r.status == 0, "\(r.err)")
        return r.out.split(separator: "\n").map(String.init)
    }

    static func plain(_ user: String, _ password: String) -> String {
        Data("\0\(user)\0\(password)".utf8).base64EncodedString()
    }
}

@Suite("ternd: AUTH, submission, users", .serialized)
struct AuthTerndTests {
    @Test("swaks: AUTH PLAIN on submission (STARTTLS) relays; AUTH LOGIN on submissions (implicit TLS) delivers; Received says ESMTPSA")
    func swaks() throws {
        let a = try AuthTernd()
        defer { a.t.cleanUp() }
        let t = a.t
        #expect(t.log.contains("listening: submission on 127.0.0.1:\(a.submission)") && t.log.contains("listening: submissions on 127.0.0.1:\(a.submissions)"), "\(t.log)")
        let swaks = try #require(which("swaks"))
        let relayed = try run(swaks, [
            "--server", "127.0.0.1:\(a.submission)", "--tls", "--auth", "PLAIN", "--auth-user", "alice@example.test", "--auth-password", AuthTernd.password,
            "--from", "alice@example.test", "--to", "friend@elsewhere.example", "--helo", "laptop.example", "--suppress-data",
        ])
        #expect(relayed.status == 0 && relayed.out.contains("235 2.7.0 Authentication successful") && relayed.out.contains("250 2.0.0 Ok: queued as"), "\(relayed.out)")
        let implicit = try run(swaks, [
            "--server", "127.0.0.1:\(a.submissions)", "--tlsc", "--auth", "LOGIN", "--auth-user", "alice@example.test", "--auth-password", AuthTernd.password,
            "--from", "alice+lists@example.test", "--to", "bob@example.test", "--helo", "laptop.example", "--header", "Subject: via 465", "--suppress-data",
        ])
        #expect(implicit.status == 0 && implicit.out.contains("250 2.0.0 Ok: queued as"), "\(implicit.out)")
        for _ in 0..<400 where t.mailbox("bob").isEmpty { usleep(25_000) }
        let text = try String(contentsOfFile: try #require(t.mailbox("bob").first), encoding: .utf8)
        #expect(text.contains("by mx.example.test (Tern) with ESMTPSA (TLSv1.3"), "\(text)")
        #expect(!text.contains("Received-SPF"), "no SPF for an authenticated sender")
        #expect(t.log.contains("auth: alice@example.test logged in from 127.0.0.1"), "\(t.log)")
        // The relayed message waits in the queue for outbound delivery (not refused, not lost).
        #expect(t.log.contains("rcpts=1 deliveries=1"), "\(t.log)")
        #expect(t.stop() == 0)
    }

    @Test("Python smtplib: starttls() and login(); wrong password and unknown user fail alike after the fixed delay; AUTH before TLS is 530")
    func smtplib() throws {
        let a = try AuthTernd()
        defer { a.t.cleanUp() }
        let script = """
            import smtplib, ssl, sys, time
            port, ca, pw = int(sys.argv[1]), sys.argv[2], sys.argv[3]
            ctx = ssl.create_default_context(cafile=ca)
            ctx.check_hostname = False  # smtplib names the server 127.0.0.1; the CA is still checked
            def attempt(user, password, tls=True):
                s = smtplib.SMTP("127.0.0.1", port, local_hostname="c.test", timeout=20)
                s.ehlo()
                if tls:
                    s.starttls(context=ctx)
                    s.ehlo()
                start = time.monotonic()
                try:
                    s.login(user, password)
                    s.sendmail(user, ["bob@example.test"], b"Subject: smtplib\\r\\n\\r\\nhello\\r\\n")
                    result = "ok"
                except smtplib.SMTPAuthenticationError as e:
                    result = "%d %s" % (e.smtp_code, e.smtp_error.decode())
                except smtplib.SMTPNotSupportedError as e:
                    result = "not offered"
                print("%s | %.2f" % (result, time.monotonic() - start), flush=True)
                s.close()
            attempt("alice@example.test", pw)
            attempt("alice@example.test", "wrong")
            attempt("nobody@example.test", pw)
            attempt("alice@example.test", pw, tls=False)
            s = smtplib.SMTP("127.0.0.1", port, local_hostname="c.test", timeout=20)
            s.ehlo()
            print(s.docmd("AUTH", "PLAIN AGFsaWNlAHB3")[0])
            """
        let r = try run("/usr/bin/python3", ["-c", script, String(a.t.port), "\(a.t.dir)/ca.pem", AuthTernd.password], timeout: 60)
        let lines = r.out.split(separator: "\n").map(String.init)
        #expect(lines.count == 5, "\(r)")
        guard lines.count == 5 else { return }
        func fields(_ l: String) -> (String, Double) {
            let p = l.components(separatedBy: " | ")
            return (p[0], Double(p[1]) ?? -1)
        }
        #expect(fields(lines[0]).0 == "ok")
        #expect(fields(lines[0]).1 < 0.9, "success is not delayed: \(lines[0])")
        let wrong = fields(lines[1]), unknown = fields(lines[2])
        #expect(wrong.0 == "535 5.7.8 Authentication credentials invalid" && unknown.0 == wrong.0, "\(lines)")
        #expect(wrong.1 >= 0.95 && unknown.1 >= 0.95, "failures answer after the fixed delay: \(lines)")
        #expect(abs(wrong.1 - unknown.1) < 0.3, "wrong user and wrong password take the same time: \(lines)")
        #expect(fields(lines[3]).0 == "not offered", "AUTH is not advertised before TLS: \(lines[3])")
        #expect(lines[4] == "530", "\(lines[4])")
        for _ in 0..<400 where a.t.mailbox("bob").isEmpty { usleep(25_000) }
        #expect(a.t.mailbox("bob").count == 1)
        #expect(a.t.stop() == 0)
    }

    @Test("AUTH checks are taken in turn by client address: 60 sessions from one address do not keep another address waiting")
    func authFairByAddress() throws {
        let a = try AuthTernd()
        defer { a.t.cleanUp() }
        let script = """
            import base64, socket, ssl, sys, threading
            port, ca, pw, n = int(sys.argv[1]), sys.argv[2], sys.argv[3], int(sys.argv[4])
            ctx = ssl.create_default_context(cafile=ca)
            ctx.check_hostname = False
            token = base64.b64encode(b"\\0alice@example.test\\0" + pw.encode()).decode()
            def reply(f):
                while True:
                    line = f.readline()
                    if line[3:4] != b"-":
                        return line
            def ready(source):
                s = socket.create_connection(("127.0.0.1", port), timeout=60, source_address=(source, 0))
                f = s.makefile("rb")
                reply(f)
                s.sendall(b"EHLO c.test\\r\\n"); reply(f)
                s.sendall(b"STARTTLS\\r\\n"); reply(f)
                t = ctx.wrap_socket(s)
                tf = t.makefile("rb")
                t.sendall(b"EHLO c.test\\r\\n"); reply(tf)
                return t, tf
            flood = [ready("127.0.0.1") for _ in range(n)]
            victim = ready("127.0.0.2")
            order, lock = [], threading.Lock()
            def wait(name, f):
                line = reply(f)
                with lock:
                    order.append((name, line[:3]))
            threads = []
            for i, (t, tf) in enumerate(flood):
                t.sendall(("AUTH PLAIN " + token + "\\r\\n").encode())
                threads.append(threading.Thread(target=wait, args=("flood", tf)))
            for th in threads: th.start()
            victim[0].sendall(("AUTH PLAIN " + token + "\\r\\n").encode())
            v = threading.Thread(target=wait, args=("victim", victim[1]))
            v.start()
            for th in threads + [v]: th.join()
            before = [k for k, _ in order].index("victim")
            print("victim", dict(order)["victim"].decode(), "after", before, "of", n, "flood answers")
            """
        let r = try run("/usr/bin/python3", ["-c", script, String(a.submission), "\(a.t.dir)/ca.pem", AuthTernd.password, "60"], timeout: 300)
        let words = r.out.split(separator: " ")
        #expect(words.count >= 4 && words[1] == "235", "\(r)")
        // Taken in turn by address, the victim waits for a check or two of the flood's; by session
        // (or in order of arrival) it would wait for most of the 60.
        #expect(words.count >= 4 && (Int(words[3]) ?? 99) < 20, "\(r)")
        #expect(a.t.stop() == 0)
    }

    @Test("submission: MAIL needs AUTH (530); another domain's sender is 553 5.7.1; 3 failures close the session; the per-address limit answers 454")
    func refusals() throws {
        let a = try AuthTernd(limits: "limits {\n auth-failures 4\n}")
        defer { a.t.cleanUp() }
        let good = AuthTernd.plain("alice@example.test", AuthTernd.password)
        let bad = AuthTernd.plain("alice@example.test", "guess")
        let noAuth = try a.dialog(port: a.submission, mode: "starttls", ["EHLO c.test", "MAIL FROM:<alice@example.test>", "QUIT"])
        #expect(noAuth.count == 4 && noAuth[2] == "530 5.7.0 Authentication required", "\(noAuth)")
        let plainText = try a.dialog(port: a.submission, mode: "plain", ["EHLO c.test", "AUTH PLAIN \(good)", "MAIL FROM:<alice@example.test>"])
        #expect(plainText.count == 4 && plainText[1].contains("STARTTLS") && !plainText[1].contains("AUTH"), "\(plainText)")
        #expect(plainText.count == 4 && plainText[2].hasPrefix("530 5.7.0 Must issue a STARTTLS command first"), "\(plainText)")
        #expect(plainText.count == 4 && plainText[3] == "530 5.7.0 Must issue a STARTTLS command first", "\(plainText)")
        let foreign = try a.dialog(port: a.submissions, mode: "tls", ["EHLO c.test", "AUTH PLAIN \(good)", "MAIL FROM:<ceo@bank.example>", "MAIL FROM:<>", "QUIT"])
        #expect(foreign.count == 6 && foreign[1].hasSuffix("250 AUTH PLAIN LOGIN"), "\(foreign)")
        #expect(foreign.count == 6 && foreign[3] == "553 5.7.1 Sender address not allowed for the authenticated user", "\(foreign)")
        #expect(foreign.count == 6 && foreign[4] == "250 2.1.0 Sender OK", "the null sender is allowed: \(foreign)")
        // Three failures in one session: closed.
        let three = try a.dialog(port: a.submissions, mode: "tls", ["EHLO c.test", "AUTH PLAIN \(bad)", "AUTH PLAIN \(bad)", "AUTH PLAIN \(bad)", "NOOP", "NOOP"])
        #expect(three.count == 7 && three[4].hasPrefix("535 5.7.8 Authentication credentials invalid"), "\(three)")
        #expect(three.count == 7 && three[5] == "421 4.7.0 Too many failed authentication attempts; closing", "\(three)")
        #expect(three.last == "closed", "\(three)")
        // That was 3 failures from 127.0.0.1; the 4th reaches the limit, then even the right
        // password is refused unchecked.
        let limited = try a.dialog(port: a.submissions, mode: "tls", ["EHLO c.test", "AUTH PLAIN \(bad)", "AUTH PLAIN \(good)"])
        #expect(limited.count == 4 && limited[2].hasPrefix("535 5.7.8"), "\(limited)")
        #expect(limited.count == 4 && limited[3].hasPrefix("454 4.7.0 Too many failed authentication attempts from your address"), "\(limited)")
        #expect(a.t.log.contains("auth: failed for alice@example.test from 127.0.0.1"), "\(a.t.log)")
        #expect(a.t.stop() == 0)
    }

    @Test("ternctl user: add, check, list, remove through the config ternd reads; SIGHUP picks the change up")
    func ternctlUsers() throws {
        let a = try AuthTernd()
        defer { a.t.cleanUp() }
        let t = a.t
        let ctl = AuthTernd.ternctl
        let conf = "\(t.dir)/tern.conf"
        #expect(try a.addUser("carol@example.test", "carol's pw").out == "added carol@example.test to \(t.dir)/users.example.test\n")
        #expect(try a.addUser("carol@EXAMPLE.test", "carol's new pw").out.hasPrefix("changed the password of carol@example.test"))
        #expect(try run(ctl, ["user", "list", "--config", conf]).out == "alice@example.test\ncarol@example.test\n")
        let check = try run("/bin/sh", ["-c", "echo \"carol's new pw\" | '\(ctl)' user check carol@example.test --config '\(conf)'"])
        #expect(check.status == 0 && check.out == "ok: carol@example.test\n", "\(check)")
        let wrong = try run("/bin/sh", ["-c", "echo nope | '\(ctl)' user check carol@example.test --config '\(conf)'"])
        #expect(wrong.status == 1 && wrong.err.contains("does not match"))
        let noFile = try run("/bin/sh", ["-c", "echo pw | '\(ctl)' user add x@elsewhere.example --config '\(conf)'"])
        #expect(noFile.status == 1 && noFile.err.contains("'elsewhere.example' is not a domain of"), "\(noFile)")
        let mode = try FileManager.default.attributesOfItem(atPath: "\(t.dir)/users.example.test")[.posixPermissions] as? Int
        #expect(mode == 0o640)
        // ternd learns of carol on SIGHUP: her login works and she is a recipient now.
        let carol = AuthTernd.plain("carol@example.test", "carol's new pw")
        #expect(try a.dialog(port: a.submissions, mode: "tls", ["EHLO c.test", "AUTH PLAIN \(carol)"]).last?.hasPrefix("535") == true)
        kill(t.process!.processIdentifier, SIGHUP)
        for _ in 0..<1000 where !t.log.contains("tls: certificates reloaded") { usleep(10_000) }
        #expect(try a.dialog(port: a.submissions, mode: "tls", ["EHLO c.test", "AUTH PLAIN \(carol)"]).last?.hasPrefix("235 2.7.0") == true, "\(t.log)")
        #expect(try t.rcptReply("<carol@example.test>").hasPrefix("250 2.1.5"))
        #expect(try run(ctl, ["user", "remove", "carol@example.test", "--config", conf]).status == 0)
        #expect(try run(ctl, ["user", "remove", "carol@example.test", "--config", conf]).status == 1)
        #expect(t.stop() == 0)
    }

    @Test("config errors: a missing users file and a submission port without certificates name the file and line")
    func configErrors() throws {
        let t = try TerndProcess(domainConfig: "users nowhere.users")
        defer { t.cleanUp() }
        let r = try run(TerndProcess.terndPath, ["--check", "--config", "\(t.dir)/tern.conf"])
        #expect(r.status == 1 && r.out.contains("tern.conf:6: cannot read the users file: No such file or directory: \(t.dir)/nowhere.users (create it with `ternctl user add USER@example.test`)"), "\(r)")
        let s = try TerndProcess(extraConfig: "listen submission 127.0.0.1:\(freePort())")
        defer { s.cleanUp() }
        let q = try run(TerndProcess.terndPath, ["--check", "--config", "\(s.dir)/tern.conf"])
        #expect(q.status == 1 && q.out.contains("tern.conf:10: 'listen submission' needs TLS: add 'certificates DIR'"), "\(q)")
    }
}

/// No open relay on any listener: every route to a non-local recipient without AUTH is refused,
/// over real sockets, in plain text and over TLS.
@Suite("ternd: the relay matrix", .serialized)
struct RelayMatrixTests {
    /// Non-local recipients, plain and disguised. None may be accepted without AUTH.
    static let tricks = [
        "<victim@elsewhere.example>",
        "<VICTIM@ELSEWHERE.EXAMPLE>",
        "<victim@elsewhere.example.>",
        "<victim%elsewhere.example@example.test>",  // percent hack through a local domain
        "<victim%elsewhere.example@EXAMPLE.TEST.>",
        "<@example.test:victim@elsewhere.example>",  // source route through us
        "<@example.test,@mx.example.test:victim@elsewhere.example>",
        "<\"victim@elsewhere.example\"@example.test>",  // quoted '@'
        "<\"victim%elsewhere.example\"@example.test>",
        "<elsewhere.example!victim@example.test>",  // bang path
        "<victim@exаmple.test>",  // Cyrillic 'а': an IDN look-alike of example.test
        "<victim@xn--exmple-4nf.test>",  // the same in A-labels
        "<victim@example.test.elsewhere.example>",
        "<victim@sub.example.test>",
        "<victim@[127.0.0.1]>",  // address literals
        "<victim@[IPv6:::1]>",
        "<victim@localhost>",
        "<postmaster@elsewhere.example>",
        "<victim@elsewhere.example@example.test>",
        "<victim@elsewhere.example> NOTIFY=NEVER",
    ]

    @Test("every trick on every listener, with and without TLS, is refused; local mail still gets in; AUTH opens relaying")
    func matrix() throws {
        // Every refusal counts as an error: let the session take them all.
        let a = try AuthTernd(limits: "limits {\n errors 1000\n}")
        defer { a.t.cleanUp() }
        let t = a.t
        let routes: [(name: String, port: Int, mode: String)] = [
            ("smtp", t.port, "plain"), ("smtp+STARTTLS", t.port, "starttls"), ("submission", a.submission, "plain"),
            ("submission+STARTTLS", a.submission, "starttls"), ("submissions", a.submissions, "tls"),
        ]
        var accepted: [String] = []
        for route in routes {
            let commands = ["EHLO c.test", "MAIL FROM:<someone@elsewhere.example> SMTPUTF8"] + Self.tricks.map { "RCPT TO:\($0)" } + ["RCPT TO:<bob@example.test>", "QUIT"]
            let replies = try a.dialog(port: route.port, mode: route.mode, commands)
            #expect(replies.count == commands.count + 1, "\(route.name): \(replies)")
            guard replies.count == commands.count + 1 else { continue }
            for (i, trick) in Self.tricks.enumerated() {
                let reply = replies[3 + i]
                if !reply.hasPrefix("5") { accepted.append("\(route.name) \(trick): \(reply)") }
            }
            // The control: a local recipient is accepted where MAIL was (port 25), so the
            // refusals above are about relaying, not a broken dialog.
            let local = replies[3 + Self.tricks.count]
            if route.name.hasPrefix("smtp") {
                #expect(replies[2] == "250 2.1.0 Sender OK" && local == "250 2.1.5 Recipient OK", "\(route.name): \(replies)")
            } else {
                #expect(replies[2].hasPrefix("530 5.7.0"), "\(route.name): MAIL without AUTH: \(replies[2])")
            }
        }
        #expect(accepted.isEmpty, "relayed without AUTH: \(accepted)")
        #expect(!t.log.contains("queued "), "nothing was queued: \(t.log)")
        // With AUTH, the plain non-local recipient is accepted (relaying is for users).
        let good = AuthTernd.plain("alice@example.test", AuthTernd.password)
        let authed = try a.dialog(port: a.submissions, mode: "tls", ["EHLO c.test", "AUTH PLAIN \(good)", "MAIL FROM:<alice@example.test>", "RCPT TO:<victim@elsewhere.example>", "RCPT TO:<victim%elsewhere.example@example.test>", "QUIT"])
        #expect(authed.count == 7 && authed[4] == "250 2.1.5 Recipient OK", "\(authed)")
        #expect(authed.count == 7 && authed[5].hasPrefix("554 5.7.1 Relay access denied: percent hack"), "tricks stay refused even then: \(authed)")
        #expect(t.stop() == 0)
    }
}

@Suite("ternd: certificates by SNI, reloaded under load; ternbench over TLS", .serialized)
struct CertificateReloadTests {
    /// Certificates for the names under DIR/SUBDIR/NAME/{fullchain,privkey}.pem (certbot's layout),
    /// signed by DIR/SUBDIR/ca.pem.
    static func certbot(_ dir: String, _ names: [String]) throws {
        try TestCertificates.make(in: dir, names.map { ("\($0)/fullchain", [$0]) })
        for n in names { try FileManager.default.moveItem(atPath: "\(dir)/\(n)/fullchain.key", toPath: "\(dir)/\(n)/privkey.pem") }
    }

    /// The subject CN and SHA-256 fingerprint of the certificate ternd presents for `sni`.
    static func presented(port: Int, sni: String?, ca: String) throws -> (subject: String, fingerprint: String, verified: Bool) {
        let name = sni.map { "-servername \($0) -verify_hostname \($0)" } ?? "-noservername"
        let r = try run("/bin/sh", ["-c", "echo QUIT | openssl s_client -starttls smtp -connect 127.0.0.1:\(port) \(name) -CAfile '\(ca)' > /tmp/sclient.$$ 2>&1; "
            + "grep -q 'Verification: OK' /tmp/sclient.$$ && echo verified || echo unverified; openssl x509 -noout -subject -fingerprint -sha256 < /tmp/sclient.$$; rm -f /tmp/sclient.$$"])
        let lines = r.out.split(separator: "\n").map(String.init)
        let subject = lines.first { $0.hasPrefix("subject=") } ?? ""
        let fp = lines.first { $0.contains("Fingerprint=") } ?? ""
        return (subject, fp, lines.first == "verified")
    }

    @Test("SNI picks between two certificates, the first by name is the default; SIGHUP swaps one while ternbench --starttls runs, nothing dropped")
    func reloadUnderLoad() throws {
        let t = try TerndProcess(extraConfig: "certificates certs")
        defer { t.cleanUp() }
        try Self.certbot("\(t.dir)/certs", ["mx.example.test", "mail.other.test"])
        try t.start()
        let ca = "\(t.dir)/certs/ca.pem"
        let mx = try Self.presented(port: t.port, sni: "mx.example.test", ca: ca)
        let other = try Self.presented(port: t.port, sni: "mail.other.test", ca: ca)
        let none = try Self.presented(port: t.port, sni: nil, ca: ca)
        #expect(mx.subject.contains("CN = mx.example.test") && mx.verified, "\(mx)")
        #expect(other.subject.contains("CN = mail.other.test") && other.verified, "\(other)")
        #expect(none.subject.contains("CN = mail.other.test"), "without SNI: the first certificate by name: \(none)")

        // Load: 8 sessions, a new connection (and handshake) every 10 messages.
        let bench = Process()
        bench.executableURL = URL(fileURLWithPath: builtBinary("ternbench"))
        bench.arguments = ["send", "--server", "127.0.0.1:\(t.port)", "--starttls", "--ca-file", ca, "--server-name", "mx.example.test",
                           "--sessions", "8", "--messages", "1600", "--per-connection", "10", "--to", "bob@example.test", "--json"]
        let out = Pipe()
        bench.standardOutput = out
        try bench.run()
        usleep(300_000)
        // New certificate and key for mx.example.test from another CA, then SIGHUP mid-run.
        try Self.certbot("\(t.dir)/new", ["mx.example.test"])
        for f in ["fullchain.pem", "privkey.pem"] {
            _ = try? FileManager.default.removeItem(atPath: "\(t.dir)/certs/mx.example.test/\(f)")
            try FileManager.default.copyItem(atPath: "\(t.dir)/new/mx.example.test/\(f)", toPath: "\(t.dir)/certs/mx.example.test/\(f)")
        }
        kill(t.process!.processIdentifier, SIGHUP)
        for _ in 0..<1000 where !t.log.contains("tls: certificates reloaded") { usleep(10_000) }
        #expect(t.log.contains("tls: certificates reloaded: mail.other.test, mx.example.test"), "\(t.log)")
        bench.waitUntilExit()
        let report = try #require(try JSONSerialization.jsonObject(with: out.fileHandleForReading.readDataToEndOfFile()) as? [String: Any])
        #expect(report["accepted"] as? Int == 1600, "no message lost across the reload: \(report)")
        let tls = report["tls"] as? [String: Int] ?? [:]
        #expect(tls["handshakes"] == 160, "\(report)")
        #expect((tls["verified"] ?? 0) > 0 && (tls["verified"] ?? 0) < 160, "handshakes before the reload verify against the old CA, after it not: \(report)")
        let after = try Self.presented(port: t.port, sni: "mx.example.test", ca: "\(t.dir)/new/ca.pem")
        #expect(after.verified && after.fingerprint != mx.fingerprint, "\(after) vs \(mx)")
        #expect(bench.terminationStatus == 0)
        #expect(t.stop() == 0)
    }

    @Test("ternbench send --tls --auth: implicit TLS and AUTH PLAIN on submissions; --auth without TLS is refused")
    func ternbenchImplicit() throws {
        let a = try AuthTernd()
        defer { a.t.cleanUp() }
        let bench = builtBinary("ternbench")
        let r = try run(bench, ["send", "--server", "127.0.0.1:\(a.submissions)", "--tls", "--ca-file", "\(a.t.dir)/ca.pem", "--server-name", "mx.example.test",
                                "--auth", "alice@example.test:\(AuthTernd.password)", "--from", "alice@example.test", "--to", "bob@example.test",
                                "--sessions", "2", "--messages", "20", "--json"])
        let report = try #require(try JSONSerialization.jsonObject(with: Data(r.out.utf8)) as? [String: Any], "\(r)")
        #expect(report["accepted"] as? Int == 20, "\(report)")
        #expect(report["tls"] as? [String: Int] == ["handshakes": 2, "verified": 2], "\(report)")
        let wrong = try run(bench, ["send", "--server", "127.0.0.1:\(a.submissions)", "--tls", "--auth", "alice@example.test:nope",
                                    "--from", "alice@example.test", "--to", "bob@example.test", "--sessions", "1", "--messages", "1", "--json"])
        #expect(wrong.status == 1 && wrong.out.contains("\"535\":1"), "\(wrong)")
        let clear = try run(bench, ["send", "--server", "127.0.0.1:\(a.submission)", "--auth", "alice@example.test:x"])
        #expect(clear.status != 0 && clear.err.contains("--auth needs --starttls or --tls"), "\(clear)")
        let notOffered = try run(bench, ["send", "--server", "127.0.0.1:\(a.t.port)", "--starttls", "--to", "bob@example.test", "--sessions", "1", "--messages", "1", "--json"])
        #expect(notOffered.status == 0, "STARTTLS is offered on port 25 with certificates: \(notOffered)")
        #expect(a.t.stop() == 0)
    }
}
