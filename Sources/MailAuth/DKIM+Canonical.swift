// DKIM canonicalisation (RFC 6376 §3.4): the header section split into fields, the relaxed form of
// a field, and the body canonicalisers (simple and relaxed) that hash the body as it streams in.

import CTernSystem
import Glibc

/// `c=` of a signature: one algorithm for the header, one for the body.
public enum Canonicalization: String, Sendable, Equatable {
    case simple
    case relaxed
}

/// One header field as it arrived: its lower-cased name and its raw bytes, folding and final CRLF
/// included.
public struct HeaderField: Sendable, Equatable {
    public let name: String
    public let raw: [UInt8]

    public init(name: String, raw: [UInt8]) {
        self.name = name
        self.raw = raw
    }

    /// The value: what follows the colon, raw (folding kept, final CRLF dropped).
    public var value: ArraySlice<UInt8> {
        guard let colon = raw.firstIndex(of: UInt8(ascii: ":")) else { return [] }
        var end = raw.endIndex
        if end > colon + 1, raw[end - 1] == 10 { end -= 1 }
        if end > colon + 1, raw[end - 1] == 13 { end -= 1 }
        return raw[(colon + 1)..<end]
    }

    /// The value unfolded and trimmed, as text.
    public var unfoldedValue: String {
        String(decoding: Self.relaxedValue(value), as: UTF8.self)
    }

    /// The field as `c=relaxed` hashes it: lower-case name, unfolded value, runs of whitespace as
    /// one space, none around the colon or at the end; then CRLF (`withCRLF`).
    public func relaxed(withCRLF: Bool = true) -> [UInt8] {
        var out: [UInt8] = []
        appendRelaxed(to: &out, withCRLF: withCRLF)
        return out
    }

    /// `relaxed()` written onto the end of `out` (no array of its own).
    public func appendRelaxed(to out: inout [UInt8], withCRLF: Bool = true) {
        out.append(contentsOf: name.utf8)
        out.append(UInt8(ascii: ":"))
        Self.appendRelaxedValue(value, to: &out)
        if withCRLF {
            out.append(13)
            out.append(10)
        }
    }

    /// The field in `c` canonicalisation, onto the end of `out`.
    func appendCanonical(_ c: Canonicalization, to out: inout [UInt8], withCRLF: Bool = true) {
        if c == .relaxed { return appendRelaxed(to: &out, withCRLF: withCRLF) }
        out += simple(withCRLF: withCRLF)
    }

    static func relaxedValue(_ v: ArraySlice<UInt8>) -> [UInt8] {
        var out: [UInt8] = []
        out.reserveCapacity(v.count)
        appendRelaxedValue(v, to: &out)
        return out
    }

    /// A value unfolded, its runs of white space as one space, none at either end.
    static func appendRelaxedValue(_ v: ArraySlice<UInt8>, to out: inout [UInt8]) {
        var space = false
        var wrote = false
        for c in v {
            if c == 13 || c == 10 { continue }
            if c == 32 || c == 9 {
                space = true
                continue
            }
            if space, wrote { out.append(32) }
            space = false
            wrote = true
            out.append(c)
        }
    }

    /// The field as `c=simple` hashes it: unchanged (without the final CRLF when `withCRLF` is false).
    public func simple(withCRLF: Bool = true) -> [UInt8] {
        if withCRLF { return raw }
        var end = raw.endIndex
        if end > 0, raw[end - 1] == 10 { end -= 1 }
        if end > 0, raw[end - 1] == 13 { end -= 1 }
        return Array(raw[..<end])
    }
}

/// The header section of a message, field by field.
public struct MessageHeader: Sendable {
    public var fields: [HeaderField]

    public init(fields: [HeaderField]) { self.fields = fields }

    /// Splits `message` (CRLF lines) into its header fields; also returns where the body starts
    /// (after the empty line), or the end when there is none.
    public static func parse(_ message: [UInt8]) -> (MessageHeader, bodyStart: Int) {
        var fields: [HeaderField] = []
        var i = 0
        let n = message.count
        while i < n {
            // An empty line ends the header section.
            if message[i] == 13, i + 1 < n, message[i + 1] == 10 { return (MessageHeader(fields: fields), i + 2) }
            if message[i] == 10 { return (MessageHeader(fields: fields), i + 1) }
            let start = i
            // The field runs to the CRLF not followed by whitespace.
            while i < n {
                guard let lf = message[i...].firstIndex(of: 10) else {
                    i = n
                    break
                }
                i = lf + 1
                if i < n, message[i] == 32 || message[i] == 9 { continue }
                break
            }
            let raw = Array(message[start..<i])
            fields.append(HeaderField(name: fieldName(raw), raw: raw))
        }
        return (MessageHeader(fields: fields), n)
    }

    static func fieldName(_ raw: [UInt8]) -> String {
        guard let colon = raw.firstIndex(of: UInt8(ascii: ":")) else { return "" }
        var end = colon
        while end > 0, raw[end - 1] == 32 || raw[end - 1] == 9 { end -= 1 }
        return String(decoding: raw[..<end].map { $0 >= 65 && $0 <= 90 ? $0 | 0x20 : $0 }, as: UTF8.self)
    }

    /// The fields named `name` (lower case), in order.
    public func all(_ name: String) -> [HeaderField] { fields.filter { $0.name == name } }

    /// The fields an `h=` list selects, in its order (RFC 6376 §5.4.2): each name takes the
    /// bottom-most instance not taken yet; a name with none left selects nothing.
    public func select(_ names: [String]) -> [HeaderField] {
        // Names arrive lower-cased (parsing and the signer see to it). For each distinct name:
        // its instances, and how many were taken.
        var distinct: [(name: String, instances: [Int], used: Int)] = []
        var out: [HeaderField] = []
        out.reserveCapacity(names.count)
        for name in names {
            var slot = distinct.firstIndex { $0.name == name }
            if slot == nil {
                distinct.append((name, fields.indices.filter { fields[$0].name == name }, 0))
                slot = distinct.count - 1
            }
            let k = distinct[slot!].used
            let instances = distinct[slot!].instances
            distinct[slot!].used = k + 1
            if k < instances.count { out.append(fields[instances[instances.count - 1 - k]]) }
        }
        return out
    }
}

/// Hashes a body through a DKIM canonicaliser as it streams in, with an optional `l=` limit.
/// Lines end in CRLF; a lone CR or LF is an ordinary byte.
public final class BodyHasher {
    public let canonicalization: Canonicalization
    public let limit: Int?
    let hash = SHA256Stream()
    /// Canonical bytes produced so far (all of them, also past `limit`).
    public private(set) var length = 0
    /// Line ends held back: trailing empty lines are dropped at the end.
    var pendingCRLF = 0
    /// Whitespace held back (relaxed): dropped at the end of a line, one space otherwise.
    var pendingSpace = false
    var pendingCR = false
    var emittedAny = false
    let staging: UnsafeMutablePointer<UInt8>
    var staged = 0
    static let stagingSize = 8192

    public init(_ c: Canonicalization, limit: Int? = nil) {
        canonicalization = c
        self.limit = limit
        staging = .allocate(capacity: Self.stagingSize)
    }

    deinit { staging.deallocate() }

    @inline(__always) func emit(_ b: UInt8) {
        if staged == Self.stagingSize { flush() }
        staging[staged] = b
        staged += 1
    }

    /// Hashes the staged bytes (as far as `limit` allows) and empties the stage.
    func flush() {
        guard staged > 0 else { return }
        consume(UnsafeRawBufferPointer(start: staging, count: staged))
        staged = 0
    }

    /// Canonical bytes, hashed up to `limit` and counted.
    @inline(__always) func consume(_ bytes: UnsafeRawBufferPointer) {
        var take = bytes.count
        if let limit { take = max(0, min(take, limit - length)) }
        if take > 0 { hash.update(UnsafeRawBufferPointer(rebasing: bytes[..<take])) }
        length += bytes.count
    }

    /// A run of bytes that canonicalisation leaves as they are.
    @inline(__always) func emitRun(_ p: UnsafePointer<UInt8>, _ count: Int) {
        // Long runs (most of a plain-text body) are hashed where they are, not copied.
        if count >= 512 || staged + count > Self.stagingSize {
            flush()
            if count >= 512 {
                consume(UnsafeRawBufferPointer(start: p, count: count))
                return
            }
        }
        (staging + staged).update(from: p, count: count)
        staged += count
    }

    @inline(__always) func content(_ b: UInt8) {
        while pendingCRLF > 0 {
            emit(13)
            emit(10)
            pendingCRLF -= 1
        }
        if pendingSpace {
            emit(32)
            pendingSpace = false
        }
        emit(b)
        emittedAny = true
    }

    /// One byte through the state machine (the general case).
    @inline(__always) func step(_ b: UInt8, relaxed: Bool) {
        if pendingCR {
            pendingCR = false
            if b == 10 {
                pendingSpace = false
                pendingCRLF += 1
                return
            }
            content(13)
        }
        if b == 13 {
            pendingCR = true
        } else if relaxed, b == 32 || b == 9 {
            pendingSpace = true
        } else {
            content(b)
        }
    }

    /// How many bytes from `p` the canonicaliser passes through unchanged, with nothing pending:
    /// anything but CR (simple); bytes above space, and single spaces between them (relaxed).
    /// Eight bytes at a time while none is a control character or white space.
    @inline(__always) static func ordinaryRun(_ p: UnsafePointer<UInt8>, _ end: UnsafePointer<UInt8>, relaxed: Bool) -> Int {
        var q = p
        if !relaxed {
            let n = end - p
            guard let cr = memchr(p, 13, n) else { return n }
            return UnsafePointer(cr.assumingMemoryBound(to: UInt8.self)) - p
        }
        while true {
            // Sixteen bytes at a time (SSE2, in the C module), then eight, then one.
            q += tern_relaxed_plain_prefix(q, end - q)
            while end - q >= 8 {
                let w = UnsafeRawPointer(q).loadUnaligned(as: UInt64.self)
                // A control character (CR, LF, TAB...) stops the run.
                if (w &- 0x2020_2020_2020_2020) & ~w & 0x8080_8080_8080_8080 != 0 { break }
                // So do two spaces in a row; single spaces between words pass.
                let t = w ^ 0x2020_2020_2020_2020
                let spaces = ~(((t & 0x7F7F_7F7F_7F7F_7F7F) &+ 0x7F7F_7F7F_7F7F_7F7F) | t | 0x7F7F_7F7F_7F7F_7F7F)
                if spaces & (spaces >> 8) != 0 { break }
                // A space in the last byte is judged with the byte after it, in the next word.
                if spaces >> 63 != 0 {
                    q += 7
                } else {
                    q += 8
                }
            }
            guard q < end else { return q - p }
            let b = q.pointee
            if b > 32 {
                q += 1
            } else if b == 32, q + 1 < end, q[1] > 32 {
                q += 2
            } else if b == 13, q > p, q[-1] > 32, end - q >= 3, q[1] == 10, q[2] > 32 {
                // A line end between two non-blank lines (no trailing white space before it, no
                // leading white space after it) stays as it is.
                q += 3
            } else {
                return q - p
            }
        }
    }

    public func update(_ bytes: UnsafeRawBufferPointer) {
        guard var p = bytes.baseAddress?.assumingMemoryBound(to: UInt8.self) else { return }
        let end = p + bytes.count
        let relaxed = canonicalization == .relaxed
        while p < end {
            if !pendingCR, pendingCRLF == 0, !pendingSpace {
                let run = Self.ordinaryRun(p, end, relaxed: relaxed)
                if run > 0 {
                    emitRun(p, run)
                    emittedAny = true
                    p += run
                    continue
                }
            }
            step(p.pointee, relaxed: relaxed)
            p += 1
        }
    }

    public func update(_ bytes: [UInt8]) { bytes.withUnsafeBytes { update($0) } }

    public func update(_ bytes: ArraySlice<UInt8>) { bytes.withUnsafeBytes { update($0) } }

    /// The body hash (`bh=`). Afterwards `length` is the whole canonical body's length.
    public func finish() -> [UInt8] {
        if pendingCR {
            pendingCR = false
            content(13)
        }
        // One line end closes a non-empty body; simple turns an empty body into one CRLF.
        pendingSpace = false
        if emittedAny || canonicalization == .simple {
            emit(13)
            emit(10)
        }
        pendingCRLF = 0
        flush()
        return hash.finish()
    }
}
