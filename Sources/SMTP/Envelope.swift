// The envelope of one SMTP transaction: sender, recipients and the ESMTP parameters kept
// for later stages (SIZE, BODY, SMTPUTF8, and the DSN parameters of RFC 3461).
// Addresses live in one reused byte array so a steady stream of transactions allocates nothing.

public enum BodyType: String, Sendable, Equatable {
    case sevenBit = "7BIT"
    case eightBitMIME = "8BITMIME"
    case binaryMIME = "BINARYMIME"
}

/// RFC 3461 RET.
public enum DSNReturn: String, Sendable, Equatable {
    case full = "FULL"
    case headers = "HDRS"
}

/// RFC 3461 NOTIFY.
public struct DSNNotify: OptionSet, Sendable, Hashable {
    public let rawValue: UInt8
    public init(rawValue: UInt8) { self.rawValue = rawValue }
    public static let never = DSNNotify(rawValue: 1)
    public static let success = DSNNotify(rawValue: 2)
    public static let failure = DSNNotify(rawValue: 4)
    public static let delay = DSNNotify(rawValue: 8)
}

/// One recipient of a transaction; ranges index `Envelope.storage`.
public struct EnvelopeRecipient: Sendable, Equatable {
    public var mailbox: Range<Int>
    public var notify: DSNNotify
    /// ORCPT as sent: `addr-type ";" xtext`.
    public var originalRecipient: Range<Int>?
}

public struct Envelope: Sendable, Equatable {
    /// Bytes of all addresses and xtext values of this transaction.
    public private(set) var storage: [UInt8] = []
    var senderRange: Range<Int>? = nil
    var envelopeIDRange: Range<Int>? = nil
    public var declaredSize: Int? = nil
    public var body: BodyType = .sevenBit
    public var smtpUTF8 = false
    public var ret: DSNReturn? = nil
    public private(set) var recipients: [EnvelopeRecipient] = []

    public init() {}

    public var hasSender: Bool { senderRange != nil }

    /// The reverse path without brackets; "" for the null sender.
    public var sender: String { senderRange.map { string($0) } ?? "" }

    public var isNullSender: Bool { senderRange?.isEmpty ?? false }

    public var envelopeID: String? { envelopeIDRange.map { Xtext.decode(storage[$0]) } }

    public var recipientCount: Int { recipients.count }

    public func recipient(_ index: Int) -> String { string(recipients[index].mailbox) }

    public var recipientAddresses: [String] { recipients.map { string($0.mailbox) } }

    /// ORCPT decoded from xtext, e.g. `rfc822;user@example.org`.
    public func originalRecipient(_ index: Int) -> String? {
        recipients[index].originalRecipient.map { Xtext.decode(storage[$0]) }
    }

    func string(_ r: Range<Int>) -> String { String(decoding: storage[r], as: UTF8.self) }

    mutating func store(_ b: UnsafeRawBufferPointer, _ r: Range<Int>) -> Range<Int> {
        let start = storage.count
        storage.append(contentsOf: UnsafeRawBufferPointer(rebasing: b[r]))
        return start..<storage.count
    }

    mutating func setSender(_ b: UnsafeRawBufferPointer, _ r: Range<Int>) { senderRange = store(b, r) }

    mutating func addRecipient(_ b: UnsafeRawBufferPointer, _ r: Range<Int>, notify: DSNNotify, orcpt: Range<Int>?) {
        let m = store(b, r)
        let o = orcpt.map { store(b, $0) }
        recipients.append(EnvelopeRecipient(mailbox: m, notify: notify, originalRecipient: o))
    }

    mutating func setEnvelopeID(_ b: UnsafeRawBufferPointer, _ r: Range<Int>) { envelopeIDRange = store(b, r) }

    mutating func removeLastRecipient() { recipients.removeLast() }

    /// Clears the transaction, keeping the storage capacity.
    public mutating func reset() {
        storage.removeAll(keepingCapacity: true)
        recipients.removeAll(keepingCapacity: true)
        senderRange = nil
        envelopeIDRange = nil
        declaredSize = nil
        body = .sevenBit
        smtpUTF8 = false
        ret = nil
    }
}

/// RFC 3461 §4 xtext: `+HH` encodes a byte.
public enum Xtext {
    public static func isValid(_ b: UnsafeRawBufferPointer, _ r: Range<Int>) -> Bool {
        var i = r.lowerBound
        while i < r.upperBound {
            let c = b[i]
            if c == UInt8(ascii: "+") {
                guard i + 2 < r.upperBound, PathParser.isHex(b[i + 1]), PathParser.isHex(b[i + 2]) else { return false }
                i += 3
                continue
            }
            guard c >= 33, c <= 126, c != UInt8(ascii: "=") else { return false }
            i += 1
        }
        return true
    }

    /// `+HH` for '+', '=', controls, space and bytes outside ASCII; the rest as it is.
    public static func encode(_ s: String) -> String {
        var out = ""
        for c in s.utf8 {
            if c >= 33, c <= 126, c != UInt8(ascii: "+"), c != UInt8(ascii: "=") {
                out.unicodeScalars.append(Unicode.Scalar(c))
            } else {
                let h = String(c, radix: 16, uppercase: true)
                out += "+" + (h.count == 1 ? "0" + h : h)
            }
        }
        return out
    }

    public static func decode(_ bytes: ArraySlice<UInt8>) -> String {
        var out: [UInt8] = []
        out.reserveCapacity(bytes.count)
        var i = bytes.startIndex
        while i < bytes.endIndex {
            if bytes[i] == UInt8(ascii: "+"), i + 2 < bytes.endIndex,
                let h = hex(bytes[i + 1]), let l = hex(bytes[i + 2])
            {
                out.append(h << 4 | l)
                i += 3
            } else {
                out.append(bytes[i])
                i += 1
            }
        }
        return String(decoding: out, as: UTF8.self)
    }

    static func hex(_ c: UInt8) -> UInt8? {
        switch c {
        case 48...57: return c - 48
        case 65...70: return c - 55
        case 97...102: return c - 87
        default: return nil
        }
    }
}
