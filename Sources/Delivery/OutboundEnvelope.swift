// What goes on the wire for one message to one destination, given what the receiving server
// offers (RFC 6531 §3.2, RFC 3461, RFC 1870): SMTPUTF8 when the peer has it, else the domains
// as A-labels (punycode) and a non-ASCII local part refused with 5.6.7; DSN parameters passed
// through when the peer offers DSN; SIZE checked before MAIL. Pure: tested without sockets.

import SMTP

/// One message as the courier sends it.
public struct OutboundMessage: Sendable {
    /// The queue ID (for logs).
    public var id: UInt64
    public var sender: String
    /// Destination addresses, in the order results are reported.
    public var recipients: [String]
    public var body: [UInt8]
    /// The message came with SMTPUTF8.
    public var smtpUTF8: Bool
    /// 8BITMIME (or BINARYMIME) was declared.
    public var eightBit: Bool
    /// BINARYMIME was declared: the body may hold bare CR and LF and must leave with BDAT.
    public var binary = false
    /// DSN (RFC 3461): ENVID, RET (1 HDRS, 2 FULL, 0 none), NOTIFY per recipient (Tern's bits:
    /// 1 NEVER, 2 SUCCESS, 4 FAILURE, 8 DELAY; 0 none) and ORCPT per recipient ("" none).
    public var envelopeID: String = ""
    public var ret: UInt8 = 0
    public var notify: [UInt8] = []
    public var originalRecipients: [String] = []

    public init(id: UInt64, sender: String, recipients: [String], body: [UInt8], smtpUTF8: Bool = false, eightBit: Bool = false) {
        self.id = id
        self.sender = sender
        self.recipients = recipients
        self.body = body
        self.smtpUTF8 = smtpUTF8
        self.eightBit = eightBit
    }
}

/// How one recipient's delivery attempt ended.
public struct RecipientOutcome: Sendable, Equatable {
    public enum Kind: Sendable, Equatable { case delivered, temporary, permanent }
    public var kind: Kind
    /// An enhanced status code: "2.0.0", "4.4.1", "5.1.1", …
    public var status: String
    /// What happened, for the log and a bounce's diagnostic ("smtp; 550 5.1.1 no such user").
    public var text: String
    /// Delivered to a next hop that does not offer DSN (RFC 3461): it will send no success
    /// report, so ours says `Action: relayed` when the sender asked NOTIFY=SUCCESS.
    public var withoutDSN = false

    public init(_ kind: Kind, _ status: String, _ text: String) {
        self.kind = kind
        self.status = status
        self.text = text
    }

    public static func temporary(_ status: String, _ text: String) -> RecipientOutcome { RecipientOutcome(.temporary, status, text) }
    public static func permanent(_ status: String, _ text: String) -> RecipientOutcome { RecipientOutcome(.permanent, status, text) }

    /// The outcome a reply code says: 2xx delivered, 4xx temporary, 5xx permanent; the status is
    /// the reply's enhanced code when it has one.
    public static func reply(code: Int, text: String, host: String) -> RecipientOutcome {
        let fallback = code < 300 ? "2.0.0" : code < 500 ? "4.0.0" : "5.0.0"
        let status = Self.enhancedStatus(in: text).flatMap { $0.first == fallback.first ? $0 : nil } ?? fallback
        let said = Self.said(host: host, code: code, text: text)
        if code >= 200, code < 300 { return RecipientOutcome(.delivered, status, said) }
        return RecipientOutcome(code >= 500 ? .permanent : .temporary, status, said)
    }

    /// How a receiver's reply is told in the log and in a bounce: "mx.example.net[192.0.2.1] said:
    /// 550 5.1.1 no such user". `remoteReply(in:)` reads it back.
    public static func said(host: String, code: Int, text: String) -> String {
        "\(host) said: \(code) \(text)".trimmingSuffix()
    }

    /// The receiver ("mx.example.net", without the address) and its reply ("550 5.1.1 …") in a
    /// text made by `said`, possibly after a prefix of ours ("delivery time expired: …").
    public static func remoteReply(in text: String) -> (host: String, reply: String)? {
        guard let r = text.firstRange(of: " said: ") else { return nil }
        let reply = text[r.upperBound...]
        guard reply.count >= 3, reply.prefix(3).allSatisfy({ $0.isASCIIDigit }), reply.dropFirst(3).first ?? " " == " " else { return nil }
        var who = text[..<r.lowerBound]
        if let colon = who.ranges(of: ": ").last { who = who[colon.upperBound...] }
        guard who.last == "]", let open = who.lastIndex(of: "["), open > who.startIndex, !who[..<open].contains(" ") else { return nil }
        return (String(who[..<open]), String(reply))
    }

    /// A leading "x.y.z" of a reply text whose class matches its code's.
    static func enhancedStatus(in text: String) -> String? {
        guard let word = text.split(separator: " ", maxSplits: 1).first else { return nil }
        let parts = word.split(separator: ".", omittingEmptySubsequences: false)
        guard parts.count == 3, ["2", "4", "5"].contains(parts[0]), parts.dropFirst().allSatisfy({ !$0.isEmpty && $0.count <= 3 && $0.allSatisfy(\.isNumber) })
        else { return nil }
        return String(word)
    }
}

extension Character {
    fileprivate var isASCIIDigit: Bool { isASCII && isNumber }
}

extension String {
    fileprivate func trimmingSuffix() -> String {
        var s = Substring(self)
        while s.last == " " { s = s.dropLast() }
        return String(s)
    }
}

/// The transaction to send for a message, or the outcomes that make sending pointless.
public enum OutboundEnvelope {
    public struct Plan: Sendable {
        /// The transaction (its recipients are those still to send, in `sent` order).
        public var transaction: ClientTransaction
        /// Index into the message's recipients of each recipient in the transaction.
        public var sent: [Int]
        /// Outcomes settled before sending (5.6.3, 5.6.7, 5.3.4), by recipient index.
        public var settled: [Int: RecipientOutcome]
    }

    /// Adapts `message` to a peer with `capabilities`.
    public static func plan(_ message: OutboundMessage, capabilities c: ServerCapabilities) -> Plan {
        var settled: [Int: RecipientOutcome] = [:]
        func refuseAll(_ o: RecipientOutcome) -> Plan {
            for i in message.recipients.indices { settled[i] = o }
            return Plan(transaction: ClientTransaction(sender: message.sender, recipients: [], bodyLength: message.body.count), sent: [], settled: settled)
        }
        if message.binary, !(c.binaryMIME && c.chunking) {
            // Never converted to text (RFC 3030 §3: the server must not downgrade it).
            return refuseAll(.permanent("5.6.3", "the message is BINARYMIME (RFC 3030), which the receiving server does not offer with CHUNKING"))
        }
        if let limit = c.size, limit > 0, message.body.count > limit {
            return refuseAll(.permanent("5.3.4", "message of \(message.body.count) bytes exceeds the receiver's limit of \(limit) bytes (SIZE)"))
        }
        let utf8 = c.smtpUTF8
        let needsUTF8 = message.smtpUTF8 || !isASCII(message.sender) || message.recipients.contains { !isASCII($0) }
        let sender: String
        if utf8 || isASCII(message.sender) {
            sender = message.sender
        } else if let a = asciiAddress(message.sender) {
            sender = a
        } else {
            return refuseAll(.permanent("5.6.7", "the sender's address needs SMTPUTF8 (RFC 6531), which the receiving server does not offer"))
        }
        var recipients: [String] = []
        var sent: [Int] = []
        var parameters: [String] = []
        for (i, r) in message.recipients.enumerated() {
            let address: String
            if utf8 || isASCII(r) {
                address = r
            } else if let a = asciiAddress(r) {
                address = a
            } else {
                settled[i] = .permanent("5.6.7", "the address needs SMTPUTF8 (RFC 6531), which the receiving server does not offer")
                continue
            }
            recipients.append(address)
            sent.append(i)
            if c.dsn { parameters.append(rcptParameters(message, i)) }
        }
        var t = ClientTransaction(
            sender: sender, recipients: recipients, bodyLength: message.body.count,
            body: message.binary ? .binaryMIME : message.eightBit ? .eightBitMIME : .sevenBit,
            smtpUTF8: needsUTF8 && utf8)
        if c.dsn {
            t.recipientParameters = parameters
            if message.ret == 1 { t.mailParameters += " RET=HDRS" }
            if message.ret == 2 { t.mailParameters += " RET=FULL" }
            if !message.envelopeID.isEmpty { t.mailParameters += " ENVID=" + Xtext.encode(message.envelopeID) }
        }
        return Plan(transaction: t, sent: sent, settled: settled)
    }

    /// Recipient `k`'s outcome in a transaction's result: its own refusal, or the final reply.
    /// A `503` to MAIL says the session is out of step (a sequence the client got wrong), never
    /// that the message is bad: it is a temporary failure, tried again.
    public static func outcome(of r: TransactionResult, recipient k: Int, host: String) -> RecipientOutcome {
        let code = k < r.recipientCodes.count ? r.recipientCodes[k] : r.code
        if r.senderRefused, r.code == 503 {
            return .temporary("4.5.0", RecipientOutcome.said(host: host, code: r.code, text: r.status.map { "\($0) \(r.text)" } ?? r.text) + " (out of sequence; tried again)")
        }
        if !r.senderRefused, code < 200 || code >= 300 {
            return .reply(code: code, text: k < r.recipientTexts.count ? r.recipientTexts[k] : "", host: host)
        }
        // The final reply's text comes without its enhanced status (`status` has it).
        return .reply(code: r.code, text: r.status.map { "\($0) \(r.text)" } ?? r.text, host: host)
    }

    /// NOTIFY and ORCPT of recipient `i` (RFC 3461 §4).
    static func rcptParameters(_ m: OutboundMessage, _ i: Int) -> String {
        var s = ""
        let n = i < m.notify.count ? m.notify[i] : 0
        if n != 0 {
            if n & 1 != 0 {
                s += " NOTIFY=NEVER"
            } else {
                let words = [(2, "SUCCESS"), (4, "FAILURE"), (8, "DELAY")].filter { n & UInt8($0.0) != 0 }.map(\.1)
                if !words.isEmpty { s += " NOTIFY=" + words.joined(separator: ",") }
            }
        }
        if i < m.originalRecipients.count, !m.originalRecipients[i].isEmpty { s += " ORCPT=" + Xtext.encode(m.originalRecipients[i]) }
        return s
    }

    static func isASCII(_ s: String) -> Bool { s.utf8.allSatisfy { $0 < 0x80 } }

    /// The address with its domain as A-labels, or nil when the local part is not ASCII.
    static func asciiAddress(_ address: String) -> String? {
        guard let m = try? Mailbox(address), isASCII(m.localPart) else { return nil }
        let a = m.asciiForm
        return isASCII(a) ? a : nil
    }
}
