// SMTP dialogs as data files, in the spirit of chasquid's .cmy tests:
//
//   # comment
//   config: maxRecipients=2 maxMessageSize=100 maxErrors=5
//   C: EHLO client.test          client line, sent with CRLF
//   C-: raw bytes\n              client bytes, sent as written (no CRLF added)
//   S: 250 2.1.0                 the next server reply line starts with this
//   S+: 250                      the next whole server reply (any number of lines) has this code
//   BODY: Subject: x\r\n\r\nhi\r\n   the next delivered message is exactly these bytes
//   CLOSE                        the server closes the session here
//
// Escapes in C-, C and BODY lines: \r \n \t \\ \xHH, and {x*N} for N repetitions of x.
// The runner replays a dialog against the sans-IO server, fed whole, split at every byte
// boundary, and byte by byte; the end-to-end tests replay the same files over TCP.

import SMTP

public struct Dialog: Sendable {
    public enum Step: Sendable, Equatable {
        case client([UInt8])
        case serverLine(String)
        case serverReply(Int)
        case body([UInt8])
        case close
    }

    public var name: String
    public var steps: [Step]
    public var configuration: ServerConfiguration

    public struct ParseError: Error, CustomStringConvertible {
        public var file: String
        public var line: Int
        public var message: String
        public var description: String { "\(file):\(line): \(message)" }
    }

    public init(name: String, text: String) throws {
        self.name = name
        steps = []
        configuration = ServerConfiguration(hostname: "mx.test")
        for (n, raw) in text.split(separator: "\n", omittingEmptySubsequences: false).enumerated() {
            let line = raw.hasSuffix("\r") ? raw.dropLast() : raw
            if line.isEmpty || line.hasPrefix("#") { continue }
            func err(_ m: String) -> ParseError { ParseError(file: name, line: n + 1, message: m) }
            if line.hasPrefix("C: ") {
                steps.append(.client(try Self.unescape(line.dropFirst(3), err) + [13, 10]))
            } else if line == "C:" {
                steps.append(.client([13, 10]))
            } else if line.hasPrefix("C-: ") {
                steps.append(.client(try Self.unescape(line.dropFirst(4), err)))
            } else if line.hasPrefix("S: ") {
                steps.append(.serverLine(String(line.dropFirst(3))))
            } else if line.hasPrefix("S+: ") {
                guard let code = Int(line.dropFirst(4)) else { throw err("S+: needs a reply code") }
                steps.append(.serverReply(code))
            } else if line.hasPrefix("BODY: ") {
                steps.append(.body(try Self.unescape(line.dropFirst(6), err)))
            } else if line == "BODY:" {
                steps.append(.body([]))
            } else if line == "CLOSE" {
                steps.append(.close)
            } else if line.hasPrefix("config: ") {
                for setting in line.dropFirst(8).split(separator: " ") {
                    let kv = setting.split(separator: "=", maxSplits: 1)
                    guard kv.count == 2, let v = Int(kv[1]) else { throw err("bad setting \(setting)") }
                    switch kv[0] {
                    case "maxRecipients": configuration.maxRecipients = v
                    case "maxMessageSize": configuration.maxMessageSize = v
                    case "maxErrors": configuration.maxErrors = v
                    case "chunking": if v == 0 { configuration.extensions.remove(.chunking) }
                    case "smtputf8": if v == 0 { configuration.extensions.remove(.smtpUTF8) }
                    default: throw err("unknown setting \(kv[0])")
                    }
                }
            } else {
                throw err("unknown line: \(line)")
            }
        }
    }

    static func unescape(_ s: Substring, _ err: (String) -> ParseError) throws -> [UInt8] {
        var out: [UInt8] = []
        let b = Array(s.utf8)
        var i = 0
        while i < b.count {
            let c = b[i]
            if c == UInt8(ascii: "\\"), i + 1 < b.count {
                switch b[i + 1] {
                case UInt8(ascii: "r"): out.append(13); i += 2
                case UInt8(ascii: "n"): out.append(10); i += 2
                case UInt8(ascii: "t"): out.append(9); i += 2
                case UInt8(ascii: "\\"): out.append(92); i += 2
                case UInt8(ascii: "{"): out.append(UInt8(ascii: "{")); i += 2
                case UInt8(ascii: "x"):
                    guard i + 3 < b.count, let v = UInt8(String(decoding: b[(i + 2)...(i + 3)], as: UTF8.self), radix: 16) else {
                        throw err("bad \\x escape")
                    }
                    out.append(v)
                    i += 4
                default: throw err("unknown escape")
                }
            } else if c == UInt8(ascii: "{"), let close = b[i...].firstIndex(of: UInt8(ascii: "}")),
                let star = b[i..<close].firstIndex(of: UInt8(ascii: "*")),
                let count = Int(String(decoding: b[(star + 1)..<close], as: UTF8.self))
            {
                let unit = Array(b[(i + 1)..<star])
                for _ in 0..<count { out += unit }
                i = close + 1
            } else {
                out.append(c)
                i += 1
            }
        }
        return out
    }

    /// All client bytes, in order.
    public var clientBytes: [UInt8] {
        steps.reduce(into: []) { if case .client(let b) = $1 { $0 += b } }
    }
}

/// What the sans-IO server produced for a dialog's client bytes.
public struct DialogOutcome: Equatable, Sendable {
    public var output: [UInt8] = []
    public var messages: [[UInt8]] = []
    public var closed = false
    public var envelopes: [Envelope] = []
    public init() {}
}

public enum DialogRunner {
    /// Collects what a dialog's server delivers.
    final class Collector: ServerEventHandler {
        var outcome = DialogOutcome()
        var current: [UInt8] = []
        func messageStart() { current = [] }
        func messageBody(_ bytes: UnsafeRawBufferPointer) { current += bytes }
        func checkSender(_ session: ServerStateMachine) -> Reply? { nil }
        func checkRecipient(_ session: ServerStateMachine) -> Reply? { nil }
        func messageComplete(_ session: ServerStateMachine) -> Reply? {
            outcome.messages.append(current)
            outcome.envelopes.append(session.envelope)
            current = []
            return .messageAccepted
        }
    }

    /// Feeds `pieces` to a fresh server state machine the way the reactor does: unconsumed bytes
    /// are kept and presented again in front of the next piece.
    public static func run(_ configuration: ServerConfiguration, pieces: [[UInt8]]) -> DialogOutcome {
        let out = OutputBuffer()
        var machine = ServerStateMachine(context: ServerContext(configuration))
        let collector = Collector()
        machine.start(into: out)
        var pending: [UInt8] = []
        for piece in pieces {
            pending += piece
            let consumed = pending.withUnsafeBytes { machine.consume($0, into: out, handler: collector) }
            pending.removeFirst(consumed)
            if machine.isClosed { break }
        }
        collector.outcome.closed = machine.isClosed
        collector.outcome.output = Array(out.bytes)
        return collector.outcome
    }

    /// Checks an outcome against the dialog's expectations; returns the problems found.
    public static func check(_ dialog: Dialog, _ outcome: DialogOutcome) -> [String] {
        var problems: [String] = []
        var lines = crlfLines(outcome.output)
        var messages = outcome.messages[...]
        var sawClose = false
        for step in dialog.steps {
            switch step {
            case .client: continue
            case .serverLine(let prefix):
                guard let l = lines.first else {
                    problems.append("expected a reply starting '\(prefix)', got nothing")
                    continue
                }
                lines.removeFirst()
                if !l.hasPrefix(prefix) { problems.append("expected a reply starting '\(prefix)', got '\(l)'") }
            case .serverReply(let code):
                var done = false
                while !done {
                    guard let l = lines.first else {
                        problems.append("expected a \(code) reply, got nothing")
                        break
                    }
                    lines.removeFirst()
                    if !l.hasPrefix(String(code)) { problems.append("expected a \(code) reply, got '\(l)'"); break }
                    done = l.count < 4 || l[l.index(l.startIndex, offsetBy: 3)] != "-"
                }
            case .body(let expected):
                guard let m = messages.first else {
                    problems.append("expected a delivered message, none")
                    continue
                }
                messages.removeFirst()
                if m != expected {
                    problems.append("message differs: got \(String(decoding: m, as: UTF8.self).debugDescription), expected \(String(decoding: expected, as: UTF8.self).debugDescription)")
                }
            case .close:
                sawClose = true
                if !outcome.closed { problems.append("expected the server to close") }
            }
        }
        if !lines.isEmpty { problems.append("unexpected replies: \(lines)") }
        if !sawClose, outcome.closed { problems.append("server closed unexpectedly") }
        return problems
    }
}

/// Splits wire bytes into lines at CRLF (a trailing partial line is kept).
public func crlfLines(_ bytes: [UInt8]) -> [String] {
    var result: [String] = []
    var start = 0
    var i = 0
    while i + 1 < bytes.count {
        if bytes[i] == 13, bytes[i + 1] == 10 {
            result.append(String(decoding: bytes[start..<i], as: UTF8.self))
            i += 2
            start = i
        } else {
            i += 1
        }
    }
    if start < bytes.count { result.append(String(decoding: bytes[start...], as: UTF8.self)) }
    return result
}

extension DialogOutcome {
    /// A short description of how two outcomes differ (first differing reply line, messages).
    public func difference(from other: DialogOutcome) -> String {
        var parts: [String] = []
        let a = crlfLines(output), b = crlfLines(other.output)
        if a != b {
            let i = (0..<min(a.count, b.count)).first(where: { a[$0] != b[$0] }) ?? min(a.count, b.count)
            let x = i < a.count ? a[i] : "<none>", y = i < b.count ? b[i] : "<none>"
            parts.append("reply \(i): '\(x.prefix(80))' vs '\(y.prefix(80))'")
        }
        if messages != other.messages {
            parts.append("messages: \(messages.map { String(decoding: $0.prefix(60), as: UTF8.self) }) vs \(other.messages.map { String(decoding: $0.prefix(60), as: UTF8.self) })")
        }
        if closed != other.closed { parts.append("closed \(closed) vs \(other.closed)") }
        if envelopes != other.envelopes { parts.append("envelopes differ") }
        return parts.joined(separator: "; ")
    }
}
