// ternbench: the load generator and sink bundled with Tern. See docs/ternbench.md.
import ArgumentParser
import Bench
import CTernSystem
import Glibc
import Reactor

extension IOBackendKind: ExpressibleByArgument {}

@main
struct TernBench: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "ternbench",
        abstract: "SMTP load generator and sink.",
        subcommands: [Send.self, Sink.self]
    )
}

func fail(_ message: String) -> Never {
    FileHandleErr.write("ternbench: \(message)\n")
    exit(2)
}

enum FileHandleErr {
    static func write(_ s: String) {
        var s = s
        s.withUTF8 { _ = Glibc.write(2, $0.baseAddress, $0.count) }
    }
}

func parseAddress(_ s: String) throws -> HostPort {
    do {
        return try HostPort(parsing: s, allowPortZero: true)
    } catch {
        throw ValidationError(error.description)
    }
}

struct Send: ParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Send messages with N concurrent sessions and report rates and latencies.")

    @Option(help: "Server to send to, HOST:PORT (numeric host).") var server: String
    @Option(help: "Concurrent sessions.") var sessions: Int = 10
    @Option(help: "Messages in all.") var messages: Int = 1000
    @Option(name: .customLong("per-connection"), help: "Messages per connection before reconnecting (0: all on one).")
    var perConnection: Int = 0
    @Option(help: "Message size in bytes, headers included.") var size: Int = 1000
    @Option(help: "Recipients per message.") var rcpts: Int = 1
    @Option(help: "Spread messages over N recipient domains: dK.DOMAIN for K = 0…N-1, in turn (0: --to's domain only).") var domains: Int = 0
    @Option(help: "Envelope sender.") var from: String = "sender@ternbench.test"
    @Option(help: "Envelope recipient (with --rcpts R > 1: local+1@domain ... local+R@domain).")
    var to: String = "rcpt@ternbench.test"
    @Flag(name: .customLong("no-pipelining"), help: "Do not pipeline even when the server offers PIPELINING.")
    var noPipelining = false
    @Flag(help: "Use BDAT when the server offers CHUNKING.") var chunking = false
    @Option(help: "Event loop threads (0: one per core, at most one per session).") var threads: Int = 0
    @Option(help: "Idle timeout per connection, seconds.") var timeout: Int = 60
    @Flag(help: "Print the report as JSON.") var json = false
    @Flag(help: "STARTTLS after EHLO (RFC 3207); a server that does not offer it fails the session.") var starttls = false
    @Flag(help: "Implicit TLS from the first byte (RFC 8314, port 465).") var tls = false
    @Option(name: .customLong("ca-file"), help: "PEM CA file to verify the server against (default: the system store); the report counts verified handshakes.")
    var caFile: String?
    @Option(name: .customLong("server-name"), help: "SNI name, and the name the certificate is checked for.") var serverName: String?
    @Option(help: "Log in with AUTH PLAIN as USER:PASSWORD (needs --starttls or --tls).") var auth: String?
    @Option(name: .customLong("io-backend"), help: "I/O backend: auto, epoll or io_uring.") var ioBackend: IOBackendKind = .auto
    @Option(name: .customLong("message-ids"), help: "Give each message its own Message-ID and write those the server accepted to FILE, one a line (to check a server lost none).")
    var messageIDs: String?
    @Option(help: "Send for S seconds (as many messages as fit; --messages is ignored).") var duration: Double?

    func validate() throws {
        _ = try parseAddress(server)
        if let duration { guard duration > 0, duration <= 86_400 else { throw ValidationError("--duration must be between 0 and 86400 seconds") } }
        if let messageIDs {
            // Fails now, not after the run.
            guard let f = fopen(messageIDs, "w") else { throw ValidationError("--message-ids: cannot write \(messageIDs): \(String(cString: strerror(errno)))") }
            fclose(f)
        }
        guard !(starttls && tls) else { throw ValidationError("--starttls and --tls exclude each other") }
        if let auth {
            guard auth.contains(":") else { throw ValidationError("--auth takes USER:PASSWORD") }
            guard starttls || tls else { throw ValidationError("--auth needs --starttls or --tls: passwords are not sent in clear") }
        }
        guard sessions >= 1 else { throw ValidationError("--sessions must be at least 1") }
        guard messages >= 0 else { throw ValidationError("--messages must not be negative") }
        guard perConnection >= 0 else { throw ValidationError("--per-connection must not be negative") }
        guard size >= 0, size <= 1 << 30 else { throw ValidationError("--size must be between 0 and 1 GiB") }
        guard rcpts >= 1, rcpts <= 10_000 else { throw ValidationError("--rcpts must be between 1 and 10000") }
        guard domains >= 0, domains <= 100_000 else { throw ValidationError("--domains must be between 0 and 100000") }
        guard domains <= 1 || to.contains("@") else { throw ValidationError("--domains needs --to with a domain") }
        guard threads >= 0, timeout >= 1 else { throw ValidationError("--threads must be ≥ 0 and --timeout ≥ 1") }
        for (name, address) in [("--from", from), ("--to", to)] {
            // The address goes into MAIL/RCPT as is: no line breaks, brackets or spaces.
            guard !address.unicodeScalars.contains(where: { $0.value < 0x21 || $0 == "<" || $0 == ">" || $0.value == 0x7F }) else {
                throw ValidationError("\(name) must be a bare address without spaces, control characters or angle brackets")
            }
        }
    }

    func run() throws {
        var options = SendOptions(
            server: try parseAddress(server), sessions: sessions, messages: messages, perConnection: perConnection,
            size: size, recipients: rcpts, from: from, to: to, pipelining: !noPipelining, chunking: chunking,
            threads: threads, timeout: timeout)
        options.tls = tls ? .implicit : starttls ? .startTLS : .none
        options.domains = domains
        options.uniqueMessageIDs = messageIDs != nil
        options.duration = duration
        options.caFile = caFile
        options.serverName = serverName
        if let auth, let colon = auth.firstIndex(of: ":") {
            options.auth = (String(auth[..<colon]), String(auth[auth.index(after: colon)...]))
        }
        FileHandleErr.write("ternbench send: \(IOBackendChoice.select(ioBackend).note)\n")
        let generator = LoadGenerator(options: options)
        let tty = isatty(2) != 0
        var lastPrint = ReactorSystem.now()
        let start = lastPrint
        let report = try generator.run { g in
            guard tty else { return }
            let now = ReactorSystem.now()
            guard now - lastPrint >= 500_000_000 else { return }
            lastPrint = now
            let p = g.progress
            let rate = Double(p.accepted) / (Double(now - start) / 1e9)
            FileHandleErr.write("\r\u{1B}[K\(p.done)/\(options.duration == nil ? String(options.messages) : "…") messages, \(p.accepted) accepted, \(Int(rate)) msg/s")
        }
        if tty { FileHandleErr.write("\r\u{1B}[K") }
        if let messageIDs {
            let text = report.acceptedMessageIDs.map { $0 + "\n" }.joined()
            guard let f = fopen(messageIDs, "w"), fwrite(text, 1, text.utf8.count, f) == text.utf8.count, fclose(f) == 0 else {
                fail("--message-ids: cannot write \(messageIDs): \(String(cString: strerror(errno)))")
            }
        }
        print(json ? report.json : report.text)
        if !report.allAccepted { throw ExitCode(1) }
    }
}

struct Sink: ParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Accept (or fail on request) and count every message; print counts when stopped.")

    @Option(help: "Address to listen on, HOST:PORT (numeric host).") var listen: String
    @Option(name: .customLong("max-size"), help: "Largest message accepted, bytes (0: no limit).") var maxSize: Int = 50 * 1024 * 1024
    @Option(name: .customLong("tempfail-rate"), help: "Fraction of messages answered 451 4.3.0 (0–1).") var tempfailRate: Double = 0
    @Option(name: .customLong("permfail-rate"), help: "Fraction of messages answered 554 5.3.0 (0–1).") var permfailRate: Double = 0
    @Option(help: "Delay of each end-of-data reply, milliseconds.") var delay: Int = 0
    @Option(name: .customLong("max-recipients"), help: "Recipients taken per transaction; the next ones are answered 452 4.5.3.") var maxRecipients: Int = 1000
    @Option(name: .customLong("report-every"), help: "Print counts every S seconds (0: only when stopped).") var reportEvery: Double = 0
    @Option(help: "Stop after N messages were accepted (and report the rate from the first to the last).") var expect: Int = 0
    @Option(help: "Event loop threads (0: one per core).") var threads: Int = 0
    @Flag(help: "Print the final counts as JSON.") var json = false
    @Option(name: .customLong("tls-cert"), help: "Offer STARTTLS with this PEM certificate chain (with --tls-key).") var tlsCert: String?
    @Option(name: .customLong("tls-key"), help: "The PEM private key of --tls-cert.") var tlsKey: String?
    @Option(name: .customLong("io-backend"), help: "I/O backend: auto, epoll or io_uring.") var ioBackend: IOBackendKind = .auto

    func validate() throws {
        _ = try parseAddress(listen)
        guard (tlsCert == nil) == (tlsKey == nil) else { throw ValidationError("--tls-cert and --tls-key go together") }
        guard (0...1).contains(tempfailRate), (0...1).contains(permfailRate), tempfailRate + permfailRate <= 1 else {
            throw ValidationError("--tempfail-rate and --permfail-rate are fractions from 0 to 1 whose sum is at most 1")
        }
        guard maxSize >= 0, delay >= 0, reportEvery >= 0, threads >= 0, expect >= 0 else {
            throw ValidationError("--max-size, --delay, --report-every, --expect and --threads must not be negative")
        }
        guard maxRecipients >= 1 else { throw ValidationError("--max-recipients must be at least 1") }
    }

    func run() throws {
        // Block SIGINT/SIGTERM before any loop thread starts, and take them from a signalfd.
        var signals: [Int32] = [SIGINT, SIGTERM]
        let sfd = tern_signalfd(&signals, 2)
        guard sfd >= 0 else { fail("signalfd failed") }
        var options = SinkOptions(
            listen: try parseAddress(listen), maxSize: maxSize, tempfailRate: tempfailRate, permfailRate: permfailRate,
            delayMS: delay, threads: threads)
        if let tlsCert, let tlsKey { options.tlsCertificate = (tlsCert, tlsKey) }
        options.maxRecipients = maxRecipients
        FileHandleErr.write("ternbench sink: \(IOBackendChoice.select(ioBackend).note)\n")
        let sink: SinkServer
        do {
            sink = try SinkServer(options: options)
        } catch {
            fail("cannot listen on \(listen): \(error)")
        }
        FileHandleErr.write("ternbench sink: listening on \(HostPort(host: options.listen.host, port: sink.port))\n")
        let start = ReactorSystem.now()
        var previous = sink.counts
        var lastReport = start
        while true {
            var pfd = pollfd(fd: sfd, events: Int16(POLLIN), revents: 0)
            var wait = reportEvery > 0 ? Int32(max(reportEvery * 1000 - Double(ReactorSystem.now() - lastReport) / 1e6, 0)) : -1
            if expect > 0 { wait = wait < 0 ? 10 : min(wait, 10) }
            let r = poll(&pfd, 1, wait)
            if r > 0, tern_signalfd_read(sfd) > 0 { break }
            if expect > 0, sink.counts.messages >= expect { break }
            let now = ReactorSystem.now()
            if reportEvery > 0, Double(now - lastReport) / 1e9 >= reportEvery {
                let c = sink.counts
                print(c.text(elapsed: Double(now - start) / 1e9, since: previous, interval: Double(now - lastReport) / 1e9))
                fflush(nil)
                previous = c
                lastReport = now
            }
        }
        let c = sink.counts
        sink.shutdown()
        print(json ? c.json : c.text(elapsed: Double(ReactorSystem.now() - start) / 1e9))
    }
}
