// A domain's users file (`domain example.test { users FILE }`): one user a line,
//     LOCALPART $scrypt$ln=14,r=8,p=1$SALT$HASH
// with `#` comments and blank lines kept as they are when ternctl rewrites the file.

import Config
import Glibc
import Reactor

public struct UsersFile: Sendable {
    enum Line: Sendable {
        case other(String)
        case user(name: String, hash: PasswordHash)
    }

    var lines: [Line] = []
    /// Normalised local part → index in `lines`.
    var index: [String: Int] = [:]

    public init() {}

    /// Local parts compare case-insensitively (`Alice@` logs in as `alice@`).
    public static func normalize(_ local: String) -> String { CaseFolding.fold(local) }

    /// Why `local` cannot be a user name, or nil.
    public static func invalidName(_ local: String) -> String? {
        if local.isEmpty { return "the local part is empty" }
        if local.utf8.count > 64 { return "the local part is longer than 64 bytes" }
        if local.unicodeScalars.contains(where: { $0.value <= 32 || $0.value == 127 || $0 == "@" || $0 == "/" || $0 == "\"" || $0 == "#" }) {
            return "the local part may not contain spaces, control characters, '@', '/', '\"' or '#'"
        }
        if local.hasPrefix(".") || local.hasSuffix(".") || local.contains("..") { return "misplaced '.' in the local part" }
        return nil
    }

    public static func parse(_ text: String, file: String) throws(ConfigErrors) -> UsersFile {
        var f = UsersFile()
        var errors: [ConfigError] = []
        for (i, raw) in text.split(omittingEmptySubsequences: false, whereSeparator: { $0 == "\n" || $0 == "\r\n" }).enumerated() {
            let n = i + 1
            let line = raw.hasSuffix("\r") ? raw.dropLast() : raw
            let trimmed = line.drop { $0 == " " || $0 == "\t" }
            if trimmed.isEmpty || trimmed.hasPrefix("#") {
                f.lines.append(.other(String(line)))
                continue
            }
            let words = trimmed.split(whereSeparator: { $0 == " " || $0 == "\t" })
            guard words.count == 2 else {
                errors.append(ConfigError(file: file, line: n, message: "expected LOCALPART HASH (made by `ternctl user add`)"))
                continue
            }
            let name = String(words[0])
            if let why = invalidName(name) {
                errors.append(ConfigError(file: file, line: n, message: "invalid user '\(name)': \(why)"))
                continue
            }
            let hash: PasswordHash
            do {
                hash = try PasswordHash(parsing: String(words[1]))
            } catch {
                errors.append(ConfigError(file: file, line: n, message: "user '\(name)': \(error)"))
                continue
            }
            let key = normalize(name)
            if f.index[key] != nil {
                errors.append(ConfigError(file: file, line: n, message: "user '\(name)' is listed twice"))
                continue
            }
            f.index[key] = f.lines.count
            f.lines.append(.user(name: name, hash: hash))
        }
        // The final newline leaves an empty last line; it is written again by `text`.
        if case .other("") = f.lines.last { f.lines.removeLast() }
        if !errors.isEmpty { throw ConfigErrors(errors: errors) }
        return f
    }

    /// The users, in file order.
    public var users: [String] {
        lines.compactMap { if case .user(let name, _) = $0 { return name } else { return nil } }
    }

    public func hash(for local: String) -> PasswordHash? {
        guard let i = index[Self.normalize(local)], case .user(_, let h) = lines[i] else { return nil }
        return h
    }

    public func contains(_ local: String) -> Bool { index[Self.normalize(local)] != nil }

    /// Adds the user, or replaces its password; true when it was new.
    @discardableResult
    public mutating func set(_ local: String, _ hash: PasswordHash) -> Bool {
        if let i = index[Self.normalize(local)], case .user(let name, _) = lines[i] {
            lines[i] = .user(name: name, hash: hash)
            return false
        }
        index[Self.normalize(local)] = lines.count
        lines.append(.user(name: local, hash: hash))
        return true
    }

    /// Removes the user; false when there was none.
    public mutating func remove(_ local: String) -> Bool {
        guard let i = index[Self.normalize(local)] else { return false }
        lines.remove(at: i)
        index = [:]
        for (k, l) in lines.enumerated() {
            if case .user(let name, _) = l { index[Self.normalize(name)] = k }
        }
        return true
    }

    /// The file's text.
    public var text: String {
        var s = ""
        for l in lines {
            switch l {
            case .other(let t): s += t
            case .user(let name, let hash): s += "\(name) \(hash)"
            }
            s += "\n"
        }
        return s
    }

    /// Reads `path`; a file that does not exist is empty (`ternctl user add` creates it).
    public static func load(_ path: String, missingIsEmpty: Bool) throws(ConfigErrors) -> UsersFile {
        let text: String
        do {
            text = try ReactorSystem.loadText(path)
        } catch {
            if error.errno == ENOENT, missingIsEmpty { return UsersFile() }
            throw ConfigErrors(errors: [ConfigError(file: path, line: 0, message: "cannot read the users file: \(error.reason)")])
        }
        return try parse(text, file: path)
    }

    /// Writes the file atomically: a temporary file beside it, fsync, rename, fsync of the
    /// directory. A new file is 0640, its group `group` when given (the queue user's, whose
    /// lookup process reads it); an existing one keeps its mode, owner and group.
    public func write(to path: String, group: gid_t? = nil) throws(ConfigErrors) {
        do {
            try ReactorSystem.writeFileAtomically(Array(text.utf8), to: path, mode: 0o640, owner: group.map { (getuid(), $0) })
        } catch {
            throw ConfigErrors(errors: [ConfigError(file: path, line: 0, message: "\(error)")])
        }
    }
}
