// One line per event on stderr (systemd style), each written with a single write(2).
import Glibc

public enum Log {
    public static func info(_ message: String) { emit("info", message) }
    public static func warning(_ message: String) { emit("warning", message) }
    public static func error(_ message: String) { emit("error", message) }
    /// The mail log: one line per message and per delivery.
    public static func mail(_ message: String) { emit("mail", message) }

    /// The process id, read once (it was a system call per log line).
    static let pid = getpid()

    static func emit(_ level: String, _ message: String) {
        var line = "ternd[\(pid)]: \(level): \(message)\n"
        line.withUTF8 { _ = write(2, $0.baseAddress, $0.count) }
    }
}

/// RFC 5322 date-time in UTC, e.g. "Sun, 22 Nov 2026 05:32:35 +0000".
func rfc5322Date(_ t: time_t) -> String {
    var tm = tm()
    var t = t
    gmtime_r(&t, &tm)
    var buf = [CChar](repeating: 0, count: 64)
    let n = strftime(&buf, 64, "%a, %d %b %Y %H:%M:%S +0000", &tm)
    return String(decoding: buf[..<n].map { UInt8(bitPattern: $0) }, as: UTF8.self)
}
