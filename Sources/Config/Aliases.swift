// Alias files, in chasquid's format (one file per domain):
//
//   # comment
//   user: dest, dest          destinations without '@' are in the same domain
//   list: | /usr/bin/handler --flag
//   *: catchall               catch-all for users that do not exist
//
// Keys are normalised like incoming local parts (Unicode lower-case, drop characters removed).

import SMTP

public struct AliasFile: Sendable, Equatable {
    public enum Target: Sendable, Hashable {
        /// `local@domain`, domain already filled in for bare names.
        case address(String)
        /// A command and its arguments (no shell), fed the message on stdin.
        case pipe([String])
    }

    public private(set) var entries: [String: [Target]] = [:]
    public private(set) var catchAll: [Target]? = nil

    public init() {}

    /// Parses an alias file of `domain`, normalising keys with `dropCharacters`.
    public static func parse(_ text: String, file: String, domain: Domain, dropCharacters: String) throws(ConfigErrors) -> AliasFile {
        var a = AliasFile()
        var errors: [ConfigError] = []
        var n = 0
        for raw in text.split(omittingEmptySubsequences: false, whereSeparator: { $0 == "\n" || $0 == "\r\n" }) {
            n += 1
            let line = raw.trimmingSpaces()
            if line.isEmpty || line.hasPrefix("#") { continue }
            guard let colon = line.firstIndex(of: ":") else {
                errors.append(ConfigError(file: file, line: n, message: "expected 'user: destination, ...'"))
                continue
            }
            let key = line[..<colon].trimmingSpaces()
            let value = line[line.index(after: colon)...].trimmingSpaces()
            guard !key.isEmpty, !key.contains(where: { $0 == " " || $0 == "," || $0 == "@" || $0 == "\t" }) else {
                errors.append(ConfigError(file: file, line: n, message: "invalid alias name '\(key)' (no spaces, commas or '@')"))
                continue
            }
            guard !value.isEmpty else {
                errors.append(ConfigError(file: file, line: n, message: "alias '\(key)' has no destination"))
                continue
            }
            var targets: [Target] = []
            if value.hasPrefix("|") {
                guard let argv = Parser.argv(String(value.dropFirst())), let first = argv.first, first.hasPrefix("/") else {
                    errors.append(ConfigError(file: file, line: n, message: "a pipe alias needs an absolute command path: '| /path/to/program args'"))
                    continue
                }
                targets = [.pipe(argv)]
            } else {
                var bad: String? = nil
                for part in value.split(separator: ",") {
                    let d = part.trimmingSpaces()
                    guard !d.isEmpty, !d.contains(where: { $0 == " " || $0 == "<" || $0 == ">" }) else {
                        bad = String(d)
                        break
                    }
                    if d.contains("@") {
                        guard let mb = try? Mailbox(String(d)), mb.domain != nil, !mb.localPart.isEmpty else {
                            bad = String(d)
                            break
                        }
                        targets.append(.address(String(d)))
                    } else {
                        targets.append(.address("\(d)@\(domain.unicode)"))
                    }
                }
                if let bad {
                    errors.append(ConfigError(file: file, line: n, message: "invalid destination '\(bad)' for alias '\(key)'"))
                    continue
                }
            }
            if key == "*" {
                if a.catchAll != nil { errors.append(ConfigError(file: file, line: n, message: "the catch-all '*' is given twice")) }
                a.catchAll = targets
                continue
            }
            let k = Self.normalize(String(key), dropCharacters: dropCharacters)
            if a.entries[k] != nil {
                errors.append(ConfigError(file: file, line: n, message: "alias '\(key)' is given twice"))
                continue
            }
            a.entries[k] = targets
        }
        if !errors.isEmpty { throw ConfigErrors(errors: errors) }
        return a
    }

    /// Lower-cases (Unicode) and removes drop characters.
    public static func normalize(_ local: String, dropCharacters: String) -> String {
        var s = CaseFolding.fold(local)
        if !dropCharacters.isEmpty { s.removeAll { dropCharacters.contains($0) } }
        return s
    }
}

extension Substring {
    func trimmingSpaces() -> Substring {
        var s = self
        while let f = s.first, f == " " || f == "\t" || f == "\r" { s = s.dropFirst() }
        while let l = s.last, l == " " || l == "\t" || l == "\r" { s = s.dropLast() }
        return s
    }
}
