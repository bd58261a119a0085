// Which segments hold records that still matter, and so which may be deleted.
//
// THE INVARIANT, enforced here and only here (every segment deletion asks `deletable()`):
//
//   A segment file may be deleted only when no record in it can still matter: no copy of a
//   message record whose message is not yet durably finished and marked dead (pending, waiting to
//   be indexed, or finished with its final statuses or its dead marks not yet on disk), and no
//   status record that recovery would need (the latest durable status of each delivery of such a
//   message). The segment being written is never deleted.
//
// The spool counts one reference per such record: it retains a segment when a record is written
// into it and releases it when the record stops mattering (a newer status of the same delivery is
// durable, the message's dead marks are durable, or compaction copied the record forward and
// marked the old copy dead). A message's statuses never outlive the marks that make its record
// dead, so recovery never finds a live message whose statuses were deleted (the failure this
// replaced: a segment holding only status records of messages living in older segments was
// deleted, and after a restart those messages were delivered again).

struct SegmentLedger: Sendable {
    /// References per segment on disk (segments without an entry have none).
    private(set) var references: [UInt64: Int] = [:]
    /// Bytes of the records referenced, per segment (what compaction would have to copy).
    private(set) var liveBytes: [UInt64: Int] = [:]
    /// Every segment file known to exist.
    private(set) var onDisk: Set<UInt64> = []
    /// The segment being written.
    private(set) var current: UInt64 = 0
    /// Segments recovery found damaged: when they may go, they are moved into SPOOL/damaged/
    /// instead of deleted (the damaged bytes are kept for whoever wants to look).
    private(set) var damaged: Set<UInt64> = []

    mutating func markDamaged(_ segment: UInt64) { damaged.insert(segment) }

    mutating func added(_ segment: UInt64) { onDisk.insert(segment) }

    mutating func setCurrent(_ segment: UInt64) {
        onDisk.insert(segment)
        current = segment
    }

    mutating func retain(_ at: RecordLocation) {
        precondition(onDisk.contains(at.segment), "a record in a segment that is not on disk")
        references[at.segment, default: 0] += 1
        liveBytes[at.segment, default: 0] += at.length
    }

    mutating func release(_ at: RecordLocation) {
        guard let n = references[at.segment] else {
            assertionFailure("released a record of segment \(at.segment) that holds no reference")
            return
        }
        if n <= 1 {
            references[at.segment] = nil
            liveBytes[at.segment] = nil
        } else {
            references[at.segment] = n - 1
            liveBytes[at.segment, default: 0] -= at.length
        }
    }

    /// Segments that may be deleted now (see the invariant above), oldest first.
    func deletable() -> [UInt64] {
        onDisk.filter { $0 != current && references[$0] == nil }.sorted()
    }

    /// A segment was deleted.
    mutating func removed(_ segment: UInt64) {
        precondition(segment != current && references[segment] == nil, "deleted a segment that still matters")
        onDisk.remove(segment)
        damaged.remove(segment)
    }

    /// Segments at least two behind the current one whose records in force are at most
    /// `fraction` of `segmentSize`: copying those forward frees the rest. (Segments just behind
    /// the current one still hold mail being delivered in the next seconds.)
    func compactable(segmentSize: Int, fraction: Double = 0.25) -> [UInt64] {
        onDisk.filter { s in
            s + 2 <= current && references[s] != nil && Double(liveBytes[s] ?? 0) <= Double(segmentSize) * fraction
        }.sorted()
    }
}
