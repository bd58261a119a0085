// Which envelope senders an authenticated user may use (`submission-senders`, per domain).

import SMTP

extension Configuration.SubmissionSenders {
    /// Whether `user` (`local@domain`, a user of `userDomain`) may send as `sender` (MAIL FROM
    /// without brackets). The null sender is always allowed (notifications, vacation replies).
    public func allows(user: String, sender: String, userDomain: Configuration.LocalDomain, isLocal: (Domain) -> Bool) -> Bool {
        if sender.isEmpty { return true }
        guard let at = sender.lastIndex(of: "@"), let domain = try? Domain(String(sender[sender.index(after: at)...])) else { return false }
        switch self {
        case .any:
            return true
        case .localDomains:
            return isLocal(domain)
        case .ownDomain:
            return domain == userDomain.name
        case .ownAddress:
            guard domain == userDomain.name, let userAt = user.lastIndex(of: "@") else { return false }
            return Self.mailbox(String(sender[..<at]), userDomain) == Self.mailbox(String(user[..<userAt]), userDomain)
        }
    }

    /// A local part as delivery sees it: case folded, drop characters removed, suffix cut.
    static func mailbox(_ local: String, _ d: Configuration.LocalDomain) -> String {
        let s = AliasFile.normalize(local, dropCharacters: d.dropCharacters)
        guard let cut = s.firstIndex(where: { d.suffixSeparators.contains($0) }) else { return s }
        return String(s[..<cut])
    }
}
