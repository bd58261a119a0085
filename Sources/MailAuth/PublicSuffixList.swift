// The public suffix list (publicsuffix.org; Debian's `publicsuffix` package), for DMARC's
// organisational domain (RFC 7489 §3.2). Rules are kept in their ASCII form (A-labels).

import Reactor
import SMTP
import Synchronization

public final class PublicSuffixList: Sendable {
    public static let defaultPath = "/usr/share/publicsuffix/public_suffix_list.dat"

    /// Rules by their ASCII text: `com`, `*.mm`, and exceptions (`!www.ck`) apart.
    let rules: Set<String>
    let exceptions: Set<String>

    public struct LoadError: Error, CustomStringConvertible {
        public let path: String
        public var description: String { "\(path):0: cannot read the public suffix list" }
    }

    public init(text: String) {
        var rules = Set<String>()
        var exceptions = Set<String>()
        for raw in text.split(whereSeparator: { $0 == "\n" || $0 == "\r" }) {
            // A rule is the first word of a line; `//` starts a comment.
            guard let word = raw.split(whereSeparator: { $0 == " " || $0 == "\t" }).first, !word.hasPrefix("//") else { continue }
            var rule = String(word)
            let exception = rule.hasPrefix("!")
            if exception { rule.removeFirst() }
            let ascii = rule.split(separator: ".", omittingEmptySubsequences: false).map { label -> String in
                label == "*" ? "*" : ((try? Domain(String(label)).ascii) ?? label.lowercased())
            }.joined(separator: ".")
            if exception { exceptions.insert(ascii) } else { rules.insert(ascii) }
        }
        self.rules = rules
        self.exceptions = exceptions
    }

    /// The list at `path`, read once per process and path.
    public static func load(_ path: String = defaultPath) throws(LoadError) -> PublicSuffixList {
        if let l = loaded.withLock({ $0[path] }) { return l }
        guard let text = ReactorSystem.readText(path) else { throw LoadError(path: path) }
        let list = PublicSuffixList(text: text)
        loaded.withLock { $0[path] = list }
        return list
    }

    static let loaded = Mutex<[String: PublicSuffixList]>([:])

    /// The public suffix of an ASCII lower-case domain: the longest matching rule (an exception
    /// wins and drops its first label; no match: the last label, the implicit `*` rule).
    public func publicSuffix(of domain: String) -> String {
        let labels = domain.split(separator: ".", omittingEmptySubsequences: false).map(String.init)
        var best = 1
        for n in 1...labels.count {
            let tail = labels[(labels.count - n)...]
            let name = tail.joined(separator: ".")
            if exceptions.contains(name) { return tail.dropFirst().joined(separator: ".") }
            if rules.contains(name) { best = max(best, n) }
            if rules.contains((["*"] + tail.dropFirst()).joined(separator: ".")) { best = max(best, n) }
        }
        return labels[(labels.count - best)...].joined(separator: ".")
    }

    /// The organisational domain (the public suffix and one more label), ASCII lower case; nil
    /// for a public suffix itself or a name that is not a domain (empty labels, a leading dot).
    public func organizationalDomain(_ name: String) -> String? {
        guard !name.hasPrefix("."), let d = try? Domain(name) else { return nil }
        let domain = d.ascii
        let labels = domain.split(separator: ".", omittingEmptySubsequences: false)
        guard !labels.contains(where: \.isEmpty) else { return nil }
        let suffixLabels = publicSuffix(of: domain).split(separator: ".").count
        guard labels.count > suffixLabels else { return nil }
        return labels.suffix(suffixLabels + 1).joined(separator: ".")
    }
}
