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
        var line = "ternd[\(pid)]: \(level): \(visible(message))\n"
        line.withUTF8 { _ = write(2, $0.baseAddress, $0.count) }
    }

    /// A message with every control character (C0, DEL, C1) written as `\xNN` (`\u{NNNN}` for
    /// C1): no log line ever holds a control byte — a NUL of a pipe alias's argv, a client's
    /// CR or ESC — and one event is always one line. The one place that ensures it.
    public static func visible(_ message: String) -> String {
        guard message.unicodeScalars.contains(where: { isControl($0) || $0 == "\\" }) else { return message }
        var out = ""
        out.reserveCapacity(message.utf8.count + 8)
        for u in message.unicodeScalars {
            if u == "\\" {
                // Doubled, so a client's literal "\x1B" cannot pass for an escaped ESC.
                out += "\\\\"
                continue
            }
            guard isControl(u) else {
                out.unicodeScalars.append(u)
                continue
            }
            let hex = String(u.value, radix: 16, uppercase: true)
            out += u.value < 0x80 ? "\\x" + (hex.count < 2 ? "0" : "") + hex : "\\u{" + hex + "}"
        }
        return out
    }

    /// C0, DEL, C1, and the characters that break or reorder a line when shown: LINE and
    /// PARAGRAPH SEPARATOR, the bidi marks, embeddings, overrides and isolates.
    static func isControl(_ u: Unicode.Scalar) -> Bool {
        let v = u.value
        return v < 0x20 || (v >= 0x7F && v < 0xA0) || v == 0x2028 || v == 0x2029 || v == 0x200E || v == 0x200F
            || (v >= 0x202A && v <= 0x202E) || (v >= 0x2066 && v <= 0x2069)
    }
}
