// The messages ternd's processes send each other over their socketpairs (docs/architecture.md,
// "How the processes talk"). One enum for all of them, encoded by hand (IPCMessage+Coding.swift),
// versioned by the `hello` each side sends first. Which side may send which message, and when,
// is `ChannelGuard`'s job.
import Config
import SMTP

/// Who is at the other end of a channel.
public enum IPCRole: UInt8, Sendable, CaseIterable, CustomStringConvertible {
    case parent = 1
    case smtp = 2
    case queue = 3
    case lookup = 4
    case courier = 5

    public var description: String {
        switch self {
        case .parent: return "parent"
        case .smtp: return "smtp"
        case .queue: return "queue"
        case .lookup: return "lookup"
        case .courier: return "courier"
        }
    }
}

/// Lookup's answer to an AUTH check.
public enum AuthAnswer: UInt8, Sendable, Equatable {
    /// The user and password hold.
    case accepted = 1
    /// They do not (a wrong user and a wrong password alike).
    case refused = 2
    /// The client may not try now (too many failures), or the users file cannot be read.
    case tryLater = 3
}

/// The body's kind as MAIL declared it (RFC 6152, RFC 3030).
public enum BodyKind: UInt8, Sendable, Equatable {
    case sevenBit = 0
    case eightBitMIME = 1
    case binaryMIME = 2
}

/// One recipient of a message as smtp accepted it: the address given, its DSN parameters, and
/// what lookup resolved it to.
public struct IPCRecipient: Sendable, Equatable {
    public var address: String
    /// RFC 3461 NOTIFY as the spool keeps it (bits: success 1, failure 2, delay 4, never 8).
    public var notify: UInt8
    /// RFC 3461 ORCPT, or empty.
    public var originalRecipient: String
    public var destinations: [Destination]

    public init(address: String, notify: UInt8 = 0, originalRecipient: String = "", destinations: [Destination]) {
        self.address = address
        self.notify = notify
        self.originalRecipient = originalRecipient
        self.destinations = destinations
    }
}

/// What the queue needs to know of a message before its body comes.
public struct IPCEnvelope: Sendable, Equatable {
    public var sender: String
    public var body: BodyKind
    public var smtpUTF8: Bool
    /// RFC 3461 ENVID, or empty.
    public var envelopeID: String
    /// RFC 3461 RET: 0 not given, 1 headers, 2 full.
    public var ret: UInt8
    /// The client's address, for the queue's log line.
    public var client: String
    /// The user the session authenticated as, or empty: such a transaction may relay.
    public var user: String
    /// Lookup's token for `user` (`UserToken`): the queue believes `user` only with it.
    public var userToken: [UInt8]
    public var recipients: [IPCRecipient]

    public init(sender: String, body: BodyKind = .sevenBit, smtpUTF8: Bool = false, envelopeID: String = "", ret: UInt8 = 0, client: String, user: String = "", userToken: [UInt8] = [], recipients: [IPCRecipient]) {
        self.sender = sender
        self.body = body
        self.smtpUTF8 = smtpUTF8
        self.envelopeID = envelopeID
        self.ret = ret
        self.client = client
        self.user = user
        self.userToken = userToken
        self.recipients = recipients
    }
}

/// One message for the courier to send: the deliveries of a spooled message to one destination
/// domain (its body follows in `messageChunk`s, `size` bytes in all).
public struct IPCOutbound: Sendable, Equatable {
    /// The queue ID (for the courier's log lines).
    public var id: UInt64
    /// The recipients' domain in A-labels, or an address literal ("[192.0.2.1]").
    public var domain: String
    public var sender: String
    public var recipients: [String]
    /// Per recipient: RFC 3461 NOTIFY as the courier's `OutboundMessage` keeps it, and ORCPT ("").
    public var notify: [UInt8]
    public var originalRecipients: [String]
    public var envelopeID: String
    /// RFC 3461 RET: 0 not given, 1 headers, 2 full.
    public var ret: UInt8
    public var body: BodyKind
    public var smtpUTF8: Bool
    public var size: UInt64
    /// The outgoing TLS level the queue's history holds for `historyKey` (the recipient domain,
    /// or the relay host it goes through): 0 plain, 1 TLS unverified, 2 TLS verified. The
    /// courier never sends below it.
    public var historyKey: String
    public var tlsFloor: UInt8

    public init(id: UInt64, domain: String, sender: String, recipients: [String], notify: [UInt8], originalRecipients: [String], envelopeID: String = "", ret: UInt8 = 0, body: BodyKind = .sevenBit, smtpUTF8: Bool = false, size: UInt64, historyKey: String = "", tlsFloor: UInt8 = 0) {
        self.id = id
        self.domain = domain
        self.sender = sender
        self.recipients = recipients
        self.notify = notify
        self.originalRecipients = originalRecipients
        self.envelopeID = envelopeID
        self.ret = ret
        self.body = body
        self.smtpUTF8 = smtpUTF8
        self.size = size
        self.historyKey = historyKey
        self.tlsFloor = tlsFloor
    }
}

/// How the courier's attempt for one recipient ended.
public struct IPCOutcome: Sendable, Equatable {
    public enum Kind: UInt8, Sendable, Equatable {
        /// Not attempted (the courier is stopping): the queue keeps the delivery as it was.
        case notAttempted = 0
        case delivered = 1
        case temporary = 2
        case permanent = 3
    }
    public var kind: Kind
    /// The enhanced status ("2.0.0", "4.4.1", …; empty when not attempted).
    public var status: String
    public var text: String
    /// Delivered to a next hop without DSN.
    public var withoutDSN: Bool

    public init(_ kind: Kind, status: String = "", text: String = "", withoutDSN: Bool = false) {
        self.kind = kind
        self.status = status
        self.text = text
        self.withoutDSN = withoutDSN
    }
}

public enum IPCMessage: Sendable, Equatable {
    /// Sent first, each way: the protocol version and who the sender is.
    case hello(version: UInt16, role: IPCRole)

    // parent → any
    /// Drain and stop within `grace` seconds.
    case shutdown(grace: UInt32)
    /// The configuration changed: the new text follows (the child re-reads only what it uses).
    case reload(configuration: String)

    // smtp → lookup, and the answers
    case authCheck(request: UInt32, user: String, password: [UInt8], client: String)
    /// `token`: for `accepted`, what lets the queue believe the session is this user's
    /// (`UserToken`); empty otherwise.
    case authAnswer(request: UInt32, AuthAnswer, token: [UInt8] = [])
    case resolveRecipient(request: UInt32, recipient: String)
    case resolved(request: UInt32, Resolution)
    /// May authenticated `user` send as `sender` (`submission-senders`)?
    case senderCheck(request: UInt32, user: String, sender: String)
    case senderAnswer(request: UInt32, allowed: Bool)

    // smtp → queue, and the answers
    /// MAIL FROM: may the queue take a message now (the spool's condition, room for `size`
    /// bytes when SIZE was declared, else 0), and, when the sender's SPF passed (`tls` 1: the
    /// session is plain, 2: over TLS; 0: not checked), does its domain's TLS history allow it?
    case mailCheck(request: UInt32, sender: String, size: UInt64, tls: UInt8)
    /// nil: go on; a reply: refuse MAIL with it.
    case mailAnswer(request: UInt32, Reply?)
    case messageBegin(transaction: UInt32, IPCEnvelope)
    /// The next piece of the body (at most `IPCLimits.chunk` bytes), dot-unstuffed.
    case messageChunk(transaction: UInt32, bytes: [UInt8])
    /// The body is complete. `trace` (Authentication-Results, Received-SPF, a quarantine mark)
    /// goes before it, then the Received field: `received` is its start ("Received: from … with
    /// ESMTPS (…)"), the queue adds the queue id, the `for` clause and the date. `sign`: the
    /// sender is local or authenticated, so the queue signs with the author domain's keys when
    /// it holds some.
    /// `deadline`: smtp answers 451 by itself at this time (CLOCK_MONOTONIC, ns; 0: none), so the
    /// queue must have stored the message or given up on it before: an end that arrives later
    /// (it waited in smtp's channel behind other bodies) is refused, never stored.
    case messageEnd(transaction: UInt32, trace: [UInt8], received: [UInt8], sign: Bool, deadline: UInt64 = 0)
    /// The client went away or the transaction was refused: forget what came of this message.
    case messageAbort(transaction: UInt32)
    /// Durable in the spool: smtp may say 250 now.
    case messageStored(transaction: UInt32, queueID: UInt64)
    case messageRefused(transaction: UInt32, Reply)
    /// Sent by the queue after hello and whenever it changes: nil while the spool takes
    /// messages, else the reply MAIL gets (the disk full, stalled, failing); and the bytes a
    /// message may have (SIZE=) for the disk's room. smtp answers MAIL from it without asking
    /// (a spool in trouble must not cost a question that waits behind bodies the queue cannot
    /// take). The end of data is always the queue's decision: a state that went stale on the way
    /// costs a refusal there, never a message.
    /// `reason` says why for the log (the spool's condition), empty when it takes mail.
    case spoolState(refusal: Reply?, reason: String = "", room: UInt64)

    // queue → courier, and the answers
    /// A message to send (`job`: a new id on this channel); its body follows as
    /// `messageChunk(transaction: job, …)`s, `size` bytes in all.
    case deliver(job: UInt32, IPCOutbound)
    /// One outcome per recipient of `job`, in order.
    case delivered(job: UInt32, outcomes: [IPCOutcome])
    /// courier → queue: a connection with `domain` reached `level` (0 … 2), above what the
    /// history held: the queue records it (the history only goes up).
    case tlsReached(domain: String, level: UInt8)
    /// An MTA-STS policy (RFC 8461) as fetched (`fetched`: seconds since the epoch): the queue
    /// keeps the ones the courier fetches under SPOOL/mta-sts and hands them all to a courier
    /// that starts, so a restart keeps them.
    case mtaSTSPolicy(domain: String, id: String, fetched: Int64, text: [UInt8])
    /// courier → queue: it is stopping (SIGTERM, or a reload replaced it): no more jobs for it;
    /// it answers those it has (the ones it did not attempt as not attempted).
    case courierDraining

    /// The version this build speaks. A change to any encoding below is a new version.
    public static let version: UInt16 = 6
}
