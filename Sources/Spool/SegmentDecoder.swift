// Reading a segment back: every record in order, and where the bytes are not records, what kind of
// trouble that is. Sans-IO (bytes in, records and findings out); recovery and the read-only scan
// (`ternctl queue`) both use it.
//
// Two kinds of bad bytes are told apart:
// - A **torn tail**: a record cut short or garbled at the very end of the segment that was being
//   written when ternd stopped, with nothing valid after it. Only possible in the last segment, and
//   only when it was not closed in good order (no segment-end record). Nothing in it was
//   acknowledged (a 250 is sent only after an fdatasync covering the record, and a crash leaves no
//   garbage before synced data), so it is cut.
// - **Damage**: anything else — bytes that fail their checksums with valid records after them, or in
//   a segment closed in good order. Decoding resynchronises at the next valid header (records start
//   at multiples of 8 and their headers carry their own keyed checksum) and goes on; what was in the
//   damaged bytes is named when its header survived.

/// Damage found in a segment.
public struct SpoolDamage: Sendable, Equatable, CustomStringConvertible {
    public var segment: UInt64
    public var offset: Int
    public var length: Int
    public var reason: String
    /// The damaged record's header was intact: what it was (its payload is lost).
    public var header: SpoolRecord.Header?

    /// Only the record's state word was damaged (neither live nor dead): the record was read and
    /// taken as live, so a finished message may be delivered again.
    public var stateOnly = false

    /// The segment ends early (no end record, though it is not the last): what was cut is unknown.
    public var cutShort = false

    /// A message lost to this damage, when its header says so (a record whose state word was
    /// damaged too may have been a finished one's).
    public var lostMessage: UInt64? {
        guard let h = header, h.kind == .message, !h.isDead, !stateOnly else { return nil }
        return h.id
    }

    /// A message whose record's state word was damaged past telling and read as still owed: it
    /// may have been finished, and may be delivered again.
    public var revivedMessage: UInt64? {
        guard let h = header, stateOnly, h.stateAmbiguous, !h.isDead else { return nil }
        return h.id
    }

    public var description: String {
        var s = "segment \(SegmentFiles.name(segment)) at byte \(offset): \(reason)" + (stateOnly || cutShort ? "" : ", \(length) bytes unreadable")
        if let h = header {
            switch h.kind {
            case .message:
                if stateOnly {
                    s += " (message \(QueueID.text(h.id))" + (revivedMessage != nil ? ", which may be delivered again)" : ")")
                } else {
                    s += h.isDead ? " (a finished message's record)" : " (the record of message \(QueueID.text(h.id)))"
                }
            case .status: s += " (a delivery status of message \(QueueID.text(h.id)))"
            case .segmentEnd, .segmentStart, .padding: s += " (a segment marker)"
            }
        }
        return s
    }
}

/// One record read back from a segment.
public enum DecodedRecord {
    /// A message (body not loaded) or status record still in force.
    case live(SpoolRecord, RecordLocation)
    /// A finished message's record.
    case dead(id: UInt64, RecordLocation)
}

/// What decoding a segment found.
public struct SegmentDecoding: Sendable {
    /// The spool key from the segment's first record, when it was readable.
    public var key: SpoolKey? = nil
    /// The segment was written by an earlier ternd (record format 1).
    public var isVersion1 = false
    /// The segment ends with a segment-end record (closed in good order).
    public var closed = false
    /// Where a torn tail begins (nil: none), and whether its first record's header was intact.
    public var tornTail: Int? = nil
    public var tornTailHeader: SpoolRecord.Header? = nil
    public var damage: [SpoolDamage] = []
    /// Bytes of the segment.
    public var size = 0
}

public enum SegmentDecoder {
    /// Decodes a segment. `knownKey` is the spool's key learnt from other segments, used when this
    /// segment's first record is damaged. `tornTailPossible`: this is the last segment (the one
    /// being written when ternd stopped); a segment closed with a segment-end record never has one.
    public static func decode(
        _ b: UnsafeRawBufferPointer, segment n: UInt64, knownKey: SpoolKey?, tornTailPossible: Bool,
        skipBodies: Bool = true, _ visit: (DecodedRecord) -> Void
    ) -> SegmentDecoding {
        var out = SegmentDecoding()
        out.size = b.count
        guard b.count > 0 else { return out }
        if SpoolRecord.isVersion1(b) {
            out.isVersion1 = true
            decodeVersion1(b, segment: n, tornTailPossible: tornTailPossible, into: &out, visit)
            return out
        }
        var pos = 0
        var key = knownKey
        // The first record: the segment's key.
        if case .record(.segmentStart(let k, _), let length) = SpoolRecord.decode(b, key: .unkeyed) {
            key = k
            out.key = k
            pos = length
        } else if key == nil {
            // No key anywhere: nothing in this segment can be trusted.
            let reason = b.count < SpoolRecord.headerSize ? "incomplete record" : "unreadable segment start and no key known"
            if tornTailPossible && b.count < 4096 {
                out.tornTail = 0
            } else {
                out.damage.append(SpoolDamage(segment: n, offset: 0, length: b.count, reason: reason, header: nil))
            }
            return out
        }
        let k = key!
        while pos < b.count {
            let rest = UnsafeRawBufferPointer(rebasing: b[pos...])
            let result = SpoolRecord.decode(rest, key: k, skipBody: skipBodies)
            switch result {
            case .record(.segmentEnd, let length):
                pos += length
                if pos == b.count { out.closed = true }
                continue
            case .record(.segmentStart, _):
                // Only ever the first record: here it is bytes that merely look like one.
                break
            case .record(let r, let length):
                if case .message = r { noteDamagedState(rest, segment: n, at: pos, key: k, into: &out) }
                visit(.live(r, RecordLocation(segment: n, offset: pos, length: length)))
                pos += length
                continue
            case .dead(let id, let length):
                noteDamagedState(rest, segment: n, at: pos, key: k, into: &out)
                visit(.dead(id: id, RecordLocation(segment: n, offset: pos, length: length)))
                pos += length
                continue
            case .padding(let length):
                pos += length
                continue
            case .incomplete, .corrupt:
                break
            }
            // Bad bytes at `pos`: skip the damaged record when its header says how long it is,
            // otherwise look for the next valid header.
            var header: SpoolRecord.Header? = nil
            var reason = "incomplete record"
            if case .corrupt(let why, let h) = result {
                reason = why
                header = h
            } else if case .record(.segmentStart, _) = result {
                reason = "a segment start inside a segment"
            } else if case .header(let h) = SpoolRecord.header(rest, key: k) {
                header = h  // valid header, record runs past the end of the segment
            }
            let searchFrom: Int
            if let h = header, h.kind != .segmentStart, pos + h.length <= b.count {
                searchFrom = pos + h.length
            } else {
                searchFrom = pos + 8
            }
            if let next = nextHeader(b, from: searchFrom, key: k) {
                out.damage.append(SpoolDamage(segment: n, offset: pos, length: next - pos, reason: reason, header: header))
                pos = next
                continue
            }
            // A record wholly present (its header intact, all of its length on disk) that fails its
            // checksum was written and then damaged: a crash leaves an append cut short, never a
            // whole record with other bytes in it (the page cache keeps what was written; ext4
            // writes data before it extends the file). So it is damage even at the tail.
            let whole = header.map { $0.kind != .segmentStart && pos + $0.length <= b.count } ?? false
            if tornTailPossible && !whole {
                out.tornTail = pos
                out.tornTailHeader = header
            } else {
                out.damage.append(SpoolDamage(segment: n, offset: pos, length: b.count - pos, reason: reason, header: header))
            }
            return out
        }
        return out
    }

    /// A message record whose state word was damaged: read by majority, and said so (when too
    /// damaged to tell and read as live, the message may be delivered again).
    static func noteDamagedState(_ b: UnsafeRawBufferPointer, segment n: UInt64, at pos: Int, key: SpoolKey, into out: inout SegmentDecoding) {
        guard case .header(let h) = SpoolRecord.header(b, key: key), h.stateDamaged else { return }
        var d = SpoolDamage(segment: n, offset: pos, length: 0, reason: "damaged state word, read as \(h.isDead ? "finished" : "still owed")", header: h)
        d.stateOnly = true
        out.damage.append(d)
    }

    /// The first offset at or after `from` (a multiple of 8) where a valid header starts whose
    /// record fits in the segment.
    static func nextHeader(_ b: UnsafeRawBufferPointer, from: Int, key: SpoolKey) -> Int? {
        var q = (from + 7) & ~7
        while q + SpoolRecord.headerSize <= b.count {
            if b[q] == 0x54, b[q + 1] == 0x52, b[q + 2] == 0x4E, b[q + 3] == 0x32,
                case .header(let h) = SpoolRecord.header(UnsafeRawBufferPointer(rebasing: b[q...]), key: key),
                h.kind != .segmentStart, q + h.length <= b.count
            {
                return q
            }
            q += 8
        }
        return nil
    }

    /// Format 1: unaligned records with one checksum each; after damage, resynchronise at the next
    /// offset where a whole record decodes.
    static func decodeVersion1(
        _ b: UnsafeRawBufferPointer, segment n: UInt64, tornTailPossible: Bool, into out: inout SegmentDecoding,
        _ visit: (DecodedRecord) -> Void
    ) {
        var pos = 0
        while pos < b.count {
            let result = SpoolRecord.decodeV1(UnsafeRawBufferPointer(rebasing: b[pos...]), skipBody: true)
            if case .record(let r, let length) = result {
                visit(.live(r, RecordLocation(segment: n, offset: pos, length: length)))
                pos += length
                continue
            }
            var next: Int? = nil
            var q = pos + 1
            while q + SpoolRecord.headerSizeV1 <= b.count {
                if b[q] == 0x54, b[q + 1] == 0x52, b[q + 2] == 0x4E, b[q + 3] == 0x31,
                    case .record = SpoolRecord.decodeV1(UnsafeRawBufferPointer(rebasing: b[q...]), skipBody: true)
                {
                    next = q
                    break
                }
                q += 1
            }
            let reason: String
            if case .corrupt(let why, _) = result { reason = why } else { reason = "incomplete record" }
            if let next {
                out.damage.append(SpoolDamage(segment: n, offset: pos, length: next - pos, reason: reason, header: nil))
                pos = next
            } else if tornTailPossible {
                out.tornTail = pos
                return
            } else {
                out.damage.append(SpoolDamage(segment: n, offset: pos, length: b.count - pos, reason: reason, header: nil))
                return
            }
        }
    }
}

/// Segment file names: 16 hexadecimal digits and ".seg", in order.
public enum SegmentFiles {
    public static func name(_ n: UInt64) -> String {
        let hex = String(n, radix: 16)
        return String(repeating: "0", count: max(0, 16 - hex.count)) + hex + ".seg"
    }

    public static func path(_ directory: String, _ n: UInt64) -> String { "\(directory)/\(name(n))" }

    /// The segment number a file name stands for.
    public static func number(_ name: String) -> UInt64? {
        guard name.hasSuffix(".seg"), name.count == 20, let n = UInt64(name.dropLast(4), radix: 16) else { return nil }
        // Numbers Tern could never reach (one segment a second for millions of years) are not
        // segments: a stray `ffffffffffffffff.seg` must not make the next number overflow.
        guard n > 0, n < 1 << 48 else { return nil }
        return n
    }
}
