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
    public var recipients: [IPCRecipient]

    public init(sender: String, body: BodyKind = .sevenBit, smtpUTF8: Bool = false, envelopeID: String = "", ret: UInt8 = 0, client: String, recipients: [IPCRecipient]) {
        self.sender = sender
        self.body = body
        self.smtpUTF8 = smtpUTF8
        self.envelopeID = envelopeID
        self.ret = ret
        self.client = client
        self.recipients = recipients
    }
}

/// A DKIM signature smtp asks the queue to make (the queue holds the keys): for the author
/// domain, over the header the queue reads back from the body it was streamed, with the body
/// hash smtp computed as the body went by.
public struct SigningRequest: Sendable, Equatable {
    public var domain: String
    /// The relaxed-canonicalised body's SHA-256.
    public var bodyHash: [UInt8]

    public init(domain: String, bodyHash: [UInt8]) {
        self.domain = domain
        self.bodyHash = bodyHash
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
    case authAnswer(request: UInt32, AuthAnswer)
    case resolveRecipient(request: UInt32, recipient: String)
    case resolved(request: UInt32, Resolution)
    /// May authenticated `user` send as `sender` (`submission-senders`)?
    case senderCheck(request: UInt32, user: String, sender: String)
    case senderAnswer(request: UInt32, allowed: Bool)

    // smtp → queue, and the answers
    case messageBegin(transaction: UInt32, IPCEnvelope)
    /// The next piece of the body (at most `IPCLimits.chunk` bytes), dot-unstuffed.
    case messageChunk(transaction: UInt32, bytes: [UInt8])
    /// The body is complete: `trace` (Authentication-Results, Received-SPF, Received, in that
    /// order) goes before it, and a signature when `signing` asks for one.
    case messageEnd(transaction: UInt32, trace: [UInt8], signing: SigningRequest?)
    /// The client went away or the transaction was refused: forget what came of this message.
    case messageAbort(transaction: UInt32)
    /// Durable in the spool: smtp may say 250 now.
    case messageStored(transaction: UInt32, queueID: UInt64)
    case messageRefused(transaction: UInt32, Reply)

    /// The version this build speaks. A change to any encoding below is a new version.
    public static let version: UInt16 = 1
}
