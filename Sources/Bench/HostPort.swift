/// A numeric `HOST:PORT` (`127.0.0.1:2525`, `[::1]:25`); `localhost` means 127.0.0.1.
/// Names are never resolved: ternbench talks to addresses, not to DNS.
public struct HostPort: Sendable, Equatable, CustomStringConvertible {
    public var host: String
    public var port: Int

    public init(host: String, port: Int) {
        self.host = host
        self.port = port
    }

    public enum ParseError: Error, CustomStringConvertible, Equatable {
        case invalid(String)
        public var description: String {
            switch self {
            case .invalid(let s): return "invalid address '\(s)': expected HOST:PORT with a numeric host, e.g. 127.0.0.1:2525 or [::1]:2525"
            }
        }
    }

    public init(parsing s: String) throws(ParseError) {
        var host: Substring
        var portPart: Substring
        if s.hasPrefix("[") {
            guard let close = s.firstIndex(of: "]"), s[s.index(after: close)...].hasPrefix(":") else { throw .invalid(s) }
            host = s[s.index(after: s.startIndex)..<close]
            portPart = s[s.index(close, offsetBy: 2)...]
        } else {
            guard let colon = s.lastIndex(of: ":") else { throw .invalid(s) }
            host = s[..<colon]
            portPart = s[s.index(after: colon)...]
            if host.contains(":") { throw .invalid(s) }
        }
        if host == "localhost" { host = "127.0.0.1" }
        guard let port = Int(portPart), (0...65535).contains(port), !host.isEmpty else { throw .invalid(s) }
        let isV4 = host.split(separator: ".", omittingEmptySubsequences: false).count == 4
            && host.split(separator: ".", omittingEmptySubsequences: false).allSatisfy { UInt8($0) != nil }
        let isV6 = host.contains(":") && host.allSatisfy { $0.isHexDigit || $0 == ":" || $0 == "." }
        guard isV4 || isV6 else { throw .invalid(s) }
        self.host = String(host)
        self.port = port
    }

    public var description: String { host.contains(":") ? "[\(host)]:\(port)" : "\(host):\(port)" }
}
