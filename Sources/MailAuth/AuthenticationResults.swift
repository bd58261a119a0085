// Authentication-Results (RFC 8601): the header ternd adds to every inbound message, and the
// removal of any incoming one that claims to come from us (§5: a forged one must not survive).

public enum AuthenticationResults {
    /// The header field, CRLF-terminated: `Authentication-Results: HOST;` then one method a line
    /// (spf with the identity checked, dkim per signature, dmarc with the policy), or `HOST; none`
    /// when nothing was checked. An unsigned message says `dkim=none` only next to other results.
    public static func header(
        authservID: String, spf: (result: SPFResult, mailFrom: String, helo: String)?, dkim: [DKIMVerification] = [], dmarc: DMARCOutcome? = nil
    ) -> String {
        var methods: [String] = []
        if let spf {
            let property = spf.mailFrom.isEmpty ? "smtp.helo=\(value(spf.helo))" : "smtp.mailfrom=\(value(spf.mailFrom))"
            methods.append("spf=\(spf.result.rawValue) \(property)")
        }
        for d in dkim {
            if d.result == .none {
                if spf != nil || dmarc != nil { methods.append("dkim=none") }
                continue
            }
            var m = "dkim=\(d.result.rawValue)"
            if !d.reason.isEmpty { m += " reason=" + quoted(d.reason) }
            if !d.domain.isEmpty { m += " header.d=\(value(d.domain))" }
            if !d.selector.isEmpty { m += " header.s=\(value(d.selector))" }
            if !d.algorithm.isEmpty { m += " header.a=\(value(d.algorithm))" }
            if !d.signaturePrefix.isEmpty { m += " header.b=\(value(d.signaturePrefix))" }
            methods.append(m)
        }
        if let dmarc {
            var m = "dmarc=\(dmarc.result.rawValue)"
            if let p = dmarc.publishedPolicy { m += " (p=\(p.rawValue) dis=\(dmarc.disposition.rawValue))" }
            if !dmarc.fromDomain.isEmpty { m += " header.from=\(value(dmarc.fromDomain))" }
            methods.append(m)
        }
        let id = value(authservID)
        if methods.isEmpty { return "Authentication-Results: \(id); none\r\n" }
        return "Authentication-Results: \(id);\r\n\t" + methods.joined(separator: ";\r\n\t") + "\r\n"
    }

    /// A quoted string: printable ASCII and UTF-8 (RFC 6532, for internationalised addresses,
    /// RFC 8616), control bytes dropped.
    static func quoted(_ s: String) -> String {
        var out = "\""
        for c in s.unicodeScalars where c.value >= 32 && c.value != 127 {
            if c == "\"" || c == "\\" { out += "\\" }
            out.unicodeScalars.append(c)
        }
        return out + "\""
    }

    /// A property value (RFC 8601 pvalue): `local@domain` or a domain as is when made of atext
    /// (UTF-8 included, RFC 6532) and dots, anything else as a quoted string.
    static func value(_ s: String) -> String {
        let atext = Set("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789!#$%&'*+-/=?^_`{|}~.".utf8)
        let bytes = Array(s.utf8)
        let ats = bytes.filter { $0 == UInt8(ascii: "@") }.count
        if !bytes.isEmpty, ats <= 1, bytes.allSatisfy({ atext.contains($0) || $0 == UInt8(ascii: "@") || $0 >= 0x80 }) {
            return s
        }
        return quoted(s)
    }

    /// The message without the Authentication-Results fields of its header section whose
    /// authserv-id is ours (compared without case); other fields and the body stay byte for byte.
    public static func removingOurs(_ message: [UInt8], authservID: String) -> [UInt8] {
        let ours = Array(authservID.lowercased().utf8)
        let name = Array("authentication-results:".utf8)
        var out: [UInt8] = []
        var i = 0
        var removedAny = false
        while i < message.count {
            // One field: its first line and the continuation lines (starting with space or tab).
            if message[i] == 13 || message[i] == 10 { break }  // end of the header section
            var end = i
            repeat {
                guard let lf = message[end...].firstIndex(of: 10) else { end = message.count; break }
                end = lf + 1
            } while end < message.count && (message[end] == 32 || message[end] == 9)
            let field = message[i..<end]
            var drop = false
            if field.count > name.count, zip(field.prefix(name.count), name).allSatisfy({ ($0 | 0x20) == $1 || $0 == $1 }) {
                // The authserv-id: the first token of the value, up to ';' or white space.
                let rest = field.dropFirst(name.count).drop { $0 == 32 || $0 == 9 || $0 == 13 || $0 == 10 }
                let id = rest.prefix { $0 != UInt8(ascii: ";") && $0 != 32 && $0 != 9 && $0 != 13 && $0 != 10 }
                drop = id.map { $0 >= 0x41 && $0 <= 0x5A ? $0 | 0x20 : $0 } == ours
            }
            if drop { removedAny = true } else { out += field }
            i = end
        }
        guard removedAny else { return message }
        out += message[i...]
        return out
    }
}
