// The inbound session's decisions as pure functions: facts of the session, the envelope and the
// checks' results in; a reply (or a disposition) out. No sockets, no files, no clock: the driver
// (Daemon's MailDelegate today; the smtp process once privilege separation lands) gathers the
// facts and carries the answer out. Tested in Tests/PolicyTests without any I/O.
import Config
import MailAuth
import SMTP
import Spool

public enum Policy {
    // MARK: Replies

    public static let storageError = Reply(452, EnhancedStatus(4, 3, 1), "Insufficient system storage; try again later")
    public static let spoolTimedOut = Reply(451, EnhancedStatus(4, 3, 0), "The spool did not answer in time; try again later")
    /// A header section past what the end of data reads (1 MiB): refused as a message too big
    /// is (552 5.3.4); the header is what is kept in memory while the body streams to disk.
    public static let headerTooLarge = Reply(552, EnhancedStatus(5, 3, 4), "Message header section too large")
    public static let localError = Reply(451, EnhancedStatus(4, 3, 0), "Local error in processing; try again later")
    public static let senderNotOwned = Reply(553, EnhancedStatus(5, 7, 1), "Sender address not allowed for the authenticated user")
    public static let loopDetected = Reply(554, EnhancedStatus(5, 4, 6), "Routing loop detected: too many Received headers")
    /// The queue resolved a recipient differently from the smtp process that accepted it (the
    /// tables were reloaded in between): the client tries again and gets the new answer at RCPT.
    public static let tablesChanged = Reply(451, EnhancedStatus(4, 3, 0), "Recipient tables changed while the message came in; try again")
    /// More `Received:` fields than this and the message is taken for a loop (RFC 5321 §6.3
    /// suggests 100 as a bare minimum for a limit; Postfix uses 50: mail that went round that
    /// many hosts is looping).
    public static let maxReceived = 50

    // MARK: MAIL

    /// What a client is told when the spool cannot take its message.
    public static func refusal(for condition: SpoolCondition?) -> Reply {
        switch condition {
        case .full?: return storageError
        case .stalled?: return spoolTimedOut
        default: return localError
        }
    }

    /// MAIL: can the spool take a message now — and one of `declaredSize` (SIZE=), given
    /// whether the spool's disk has room for it (`fits`; nil: unknown, taken as room)?
    /// A refusal at MAIL saves the client sending data that would be refused after the dot.
    public static func admission(condition: SpoolCondition, declaredSize: Int?, fits: Bool?) -> Reply? {
        if condition != .ok { return refusal(for: condition) }
        if declaredSize != nil, fits == false { return storageError }
        return nil
    }

    /// MAIL from an authenticated user: the `submission-senders` rule of the user's domain.
    /// nil when `sender` is allowed; a user of no domain of ours may send as nobody.
    public static func senderRefusal(user: String, sender: String, tables: RecipientResolver) -> Reply? {
        guard let at = user.lastIndex(of: "@"), let domain = try? Domain(String(user[user.index(after: at)...])),
            let table = tables.domains[domain]
        else { return senderNotOwned }
        let ok = table.config.submissionSenders.allows(user: user, sender: sender, userDomain: table.config) { tables.domains[$0] != nil }
        return ok ? nil : senderNotOwned
    }

    /// MAIL, once SPF answered (RFC 7208 §8.4): `fail` is refused with 550 5.7.23 and the
    /// domain's explanation when `spf reject`; every other result is accepted (and recorded in
    /// the Received-SPF header by the driver).
    public static func spfRefusal(_ outcome: SPFOutcome, reject: Bool) -> Reply? {
        guard outcome.result == .fail, reject else { return nil }
        return Reply(550, EnhancedStatus(5, 7, 23), outcome.refusalText)
    }

    // MARK: RCPT

    public enum RecipientDecision: Sendable, Equatable {
        case accept([Destination])
        case refuse(Reply)
    }

    /// RCPT: the relay guard. **Invariant, enforced here and only here: Tern is never an open
    /// relay.** A recipient is accepted when resolution found a local destination (our domains,
    /// their aliases, `relay DOMAIN` routes); a recipient in no domain of ours only for a
    /// session that authenticated — never by client address, never by an address trick (those
    /// resolve to `.refused`, which no session gets past).
    public static func recipient(_ resolution: Resolution, recipient: String, authenticated: Bool) -> RecipientDecision {
        switch resolution {
        case .deliver(let destinations):
            return .accept(destinations)
        case .notLocal where authenticated:
            return .accept([.remote(recipient)])
        default:
            return .refuse(resolution.reply ?? localError)
        }
    }

    // MARK: End of data

    /// A message that went round more than `maxReceived` hosts.
    public static func loopRefusal(receivedFields: Int) -> Reply? {
        receivedFields > maxReceived ? loopDetected : nil
    }

    public enum DMARCDisposition: Sendable, Equatable {
        case accept
        /// Accept, with this header field first (`X-Tern-Quarantine:`).
        case quarantine(header: String)
        case reject(Reply)
    }

    /// End of data: what DMARC's verdict does under `dmarc reject|quarantine-header|none`.
    /// Only a `fail` with a policy other than none acts: p=reject is refused under `dmarc
    /// reject` and marked under `quarantine-header`; p=quarantine is marked under both.
    public static func dmarc(_ outcome: DMARCOutcome?, action: Configuration.DMARCAction) -> DMARCDisposition {
        guard let d = outcome, d.result == .fail, d.disposition != .none, action != .none else { return .accept }
        if d.disposition == .reject, action == .reject {
            return .reject(Reply(550, EnhancedStatus(5, 7, 1), "Message rejected by the DMARC policy of \(d.fromDomain)"))
        }
        return .quarantine(header: "X-Tern-Quarantine: DMARC fail for \(d.fromDomain) (p=\(d.publishedPolicy?.rawValue ?? "none"))\r\n")
    }
}
