// Recovery: read every segment back, rebuild the index and the ledger, cut a torn tail, keep
// damaged segments aside, take over segments of record format 1, and begin a new segment.

import Glibc

extension Spool {
    /// Reads the spool back and starts the writer. Call once, before anything else.
    public func recover() throws(SpoolError) -> RecoveryReport {
        let start = monotonicSeconds()
        if lock.locked({ lockFile }) == nil {
            let f = try fs.lockExclusively(directory)
            lock.locked { lockFile = f }
        }
        var report = RecoveryReport()
        let all = segments()
        report.segments = all.count
        let storedKey = readKey()
        // What each segment begins with: a start record (with the key), format 1, or neither.
        let heads = all.map { segmentHead($0) }
        // Without SPOOL/key, every segment's start record holds a copy: learn it before decoding
        // anything, so an early segment whose start record is damaged is still read.
        var known = storedKey ?? heads.lazy.compactMap { $0.key }.first
        var v1Segments: [UInt64] = []
        var maxID: UInt64 = 0
        var maxVersion: UInt64 = 0
        var damagedIDs: Set<UInt64> = []
        var index = QueueIndex()
        var ledger = SegmentLedger()
        // The segment being written when ternd stopped is the last one that was begun: whose
        // start record is whole (written and synced before anything else goes in). A segment is
        // begun only once the one before it is closed with its end record and synced, so only
        // that last one, and partial starts after it, can have a torn tail.
        let stub = SpoolRecord.segmentStart(key: .unkeyed, segment: 0).encoded(key: .unkeyed).count
        let sizes = all.map { n -> Int in
            guard let f = try? fs.open(segmentPath(n), writable: false) else { return 0 }
            defer { fs.close(f) }
            return (try? fs.size(f)) ?? 0
        }
        let lastWritten = heads.lastIndex { $0.key != nil || $0.isVersion1 } ?? sizes.lastIndex { $0 > stub } ?? 0
        var lastOpen = false
        for (k, n) in all.enumerated() {
            let path = segmentPath(n)
            ledger.added(n)
            var decoded = try fs.withContents(of: path) { b throws(SpoolError) in
                SegmentDecoder.decode(b, segment: n, knownKey: known, tornTailPossible: k >= lastWritten) { r in
                    report.records += 1
                    if case .live(.message(let m), _) = r { maxID = max(maxID, m.id) }
                    if case .live(.status(let s), _) = r { maxVersion = max(maxVersion, s.version) }
                    index.replay(r)
                }
            }
            if known == nil, let key = decoded.key { known = key }
            if decoded.isVersion1 { v1Segments.append(n) }
            // Every segment but the last written ends with its end record: recovery gives it one
            // (below) before another segment is begun, as rotation does. Without it, an older
            // segment was cut short, and whatever followed is lost (this is the one place that
            // tells a cut-short segment from a crash's torn tail).
            if !decoded.closed && !decoded.isVersion1 {
                if k < lastWritten {
                    var d = SpoolDamage(segment: n, offset: decoded.size, length: 0, reason: "the segment ends without its end record: it was cut short, and what followed is lost", header: nil)
                    d.cutShort = true
                    decoded.damage.append(d)
                } else if k == lastWritten && decoded.key != nil {
                    lastOpen = true
                }
            }
            if let cut = decoded.tornTail {
                report.truncatedBytes = decoded.size - cut
                if let h = decoded.tornTailHeader, h.kind == .message { report.tornMessage = h.id }
                if decoded.tornTailHeader != nil {
                    // A whole record that fails its checksum at the end: most likely a torn write,
                    // but kept aside in case it is damage (best effort: the disk may be full).
                    do throws(SpoolError) {
                        report.savedCopies.append(try saveTail(of: n, from: cut))
                    } catch {
                        log("spool: cannot keep the torn tail of \(SegmentFiles.name(n)): \(error)")
                    }
                }
                try cutTail(of: n, at: cut)
            }
            if !decoded.damage.isEmpty {
                report.damage += decoded.damage
                // (A damaged state word is not kept aside: the record is read, and its dead mark,
                // when it comes, writes the word again.)
                if decoded.damage.contains(where: { !$0.stateOnly }) {
                    ledger.markDamaged(n)
                    report.savedCopies.append(keptPath(n))
                }
                for d in decoded.damage {
                    if let id = d.lostMessage { damagedIDs.insert(id) }
                    if let id = d.revivedMessage { report.revivedMessages.append(id) }
                    if d.header == nil { report.unidentifiedDamage += 1 }
                    if let h = d.header, h.kind == .status { report.lostStatuses.append(h.id) }
                }
            }
        }
        index.finishReplay()
        // A damaged record's message is lost unless another copy of it was read.
        report.lostMessages = damagedIDs.filter { index.entries[$0] == nil }.sorted()
        report.lostStatuses = Array(Set(report.lostStatuses.filter { index.entries[$0].map { !$0.message.isFinished } ?? false })).sorted()
        let key = known ?? SpoolKey.random()
        if storedKey != key {
            do throws(SpoolError) {
                try writeKey(key)
            } catch {
                // Every segment holds the key too: this copy is a spare.
                log("spool: cannot write \(keyPath): \(error)")
            }
        }
        lock.locked {
            self.key = key
            nextID = max(nextID, maxID)
            statusVersion = max(statusVersion, maxVersion)
        }
        if lastOpen { closeLastWritten(all[lastWritten], key: key) }
        // The segment to write: a new one after the last.
        try beginSegment((all.last ?? 0) + 1, ledger: &ledger, fallback: all.last)
        if !v1Segments.isEmpty { report.migratedMessages = try migrate(v1Segments, index: &index, ledger: &ledger) }
        // References: every copy and latest status of each message; finished ones get dead marks.
        var kills: [WriteItem] = []
        for (id, e) in index.entries {
            for c in e.copies { ledger.retain(c) }
            for s in e.statuses { if let s { ledger.retain(s.location) } }
            if e.message.isFinished {
                index.entries[id]!.killing = true
                kills.append(.kill(id: id, copies: e.copies, finishing: true))
            }
        }
        index.scheduleAll()
        report.pendingMessages = index.pendingCount
        let deletable = ledger.deletable()
        // Damaged segments that still hold records in force are emptied by compaction, so the
        // damage is met once (its copy stays in SPOOL/damaged/).
        let damagedSegments = Set(report.damage.map(\.segment)).filter { !deletable.contains($0) && $0 != ledger.current }
        lock.locked {
            self.index = index
            self.ledger = ledger
            for k in kills { enqueueLocked(k) }
            for s in damagedSegments.sorted() {
                compactionQueued.insert(s)
                enqueueLocked(.compact(s))
            }
        }
        report.deletedSegments = deleteUnreferencedSegments()
        setUpReserve()
        startWriter()
        report.seconds = monotonicSeconds() - start
        return report
    }

    /// Creates segment `n` with its start record, durably; when that fails, goes on writing at the
    /// end of `fallback` (a full disk must not keep ternd from starting and delivering).
    func beginSegment(_ n: UInt64, ledger: inout SegmentLedger, fallback: UInt64?) throws(SpoolError) {
        let k = lock.locked { key }
        let path = segmentPath(n)
        do throws(SpoolError) {
            let f = try fs.create(path)
            let bytes = SpoolRecord.segmentStart(key: k, segment: n).encoded(key: k)
            do throws(SpoolError) {
                try fs.write(f, bytes, at: 0)
                try fs.sync(f)
                try fs.syncDirectory(directory)
            } catch {
                abandonSegment(f, path)
                throw error
            }
            file = f
            segment = n
            offset = bytes.count
            ledger.setCurrent(n)
            lock.locked { durableEnd = (n, bytes.count) }
        } catch {
            guard let last = fallback, let head = try? fs.readAll(segmentPath(last)), !head.withUnsafeBytes({ SpoolRecord.isVersion1($0) }) else { throw error }
            log("spool: cannot begin segment \(SegmentFiles.name(n)): \(error); writing on at the end of \(SegmentFiles.name(last))")
            let f = try fs.open(segmentPath(last), writable: true)
            file = f
            segment = last
            offset = (try fs.size(f) + 7) & ~7
            ledger.setCurrent(last)
            let o = offset
            lock.locked { durableEnd = (last, o) }
        }
    }

    /// How a segment begins: its start record's key when that is whole, or format 1.
    func segmentHead(_ n: UInt64) -> (key: SpoolKey?, isVersion1: Bool) {
        guard let f = try? fs.open(segmentPath(n), writable: false) else { return (nil, false) }
        defer { fs.close(f) }
        guard let head = try? fs.read(f, count: 256, at: 0) else { return (nil, false) }
        return head.withUnsafeBytes { b -> (SpoolKey?, Bool) in
            if SpoolRecord.isVersion1(b) { return (nil, true) }
            if case .record(.segmentStart(let k, _), _) = SpoolRecord.decode(b, key: .unkeyed) { return (k, false) }
            return (nil, false)
        }
    }

    /// Gives the segment being written when ternd stopped (its torn tail cut) its end record,
    /// durably, before a new segment is begun: from then on only the last segment may lack one.
    /// Best effort: on failure that segment would later be reported as cut short (its records
    /// are all read either way).
    func closeLastWritten(_ n: UInt64, key: SpoolKey) {
        do throws(SpoolError) {
            let f = try fs.open(segmentPath(n), writable: true)
            defer { fs.close(f) }
            let size = try fs.size(f)
            let at = (size + 7) & ~7
            do throws(SpoolError) {
                try fs.write(f, SpoolRecord.segmentEnd.encoded(key: key), at: at)
                try fs.sync(f)
            } catch {
                // A part of it must not stay to look like a torn record.
                try? fs.truncate(f, to: size)
                try? fs.sync(f)
                throw error
            }
        } catch {
            log("spool: cannot close \(SegmentFiles.name(n)) with its end record: \(error)")
        }
    }

    /// Cuts a torn tail and makes the cut durable.
    func cutTail(of n: UInt64, at position: Int) throws(SpoolError) {
        let f = try fs.open(segmentPath(n), writable: true)
        defer { fs.close(f) }
        try fs.truncate(f, to: position)
        try fs.sync(f)
    }

    /// Where a damaged segment is kept once nothing in it is owed (SPOOL/damaged/NAME, or
    /// NAME.N when an earlier one of that name is kept already).
    func keptPath(_ n: UInt64) -> String {
        let base = "\(damagedDirectory)/\(SegmentFiles.name(n))"
        var path = base
        var k = 1
        while fs.exists(path) {
            path = "\(base).\(k)"
            k += 1
        }
        return path
    }

    /// Writes the bytes of a cut tail into SPOOL/damaged/.
    func saveTail(of n: UInt64, from position: Int) throws(SpoolError) -> String {
        try fs.makeDirectories(damagedDirectory)
        let to = "\(damagedDirectory)/\(SegmentFiles.name(n)).tail-\(position)"
        let bytes = try fs.readAll(segmentPath(n))
        try? fs.unlink(to)
        let f = try fs.create(to)
        defer { fs.close(f) }
        try fs.write(f, Array(bytes[min(position, bytes.count)...]), at: 0)
        try fs.sync(f)
        try fs.syncDirectory(damagedDirectory)
        return to
    }

    // MARK: The key

    /// The key kept in SPOOL/key (a copy of what every segment's first record holds).
    func readKey() -> SpoolKey? { Self.storedKey(directory: directory, fs: fs) }

    func writeKey(_ k: SpoolKey) throws(SpoolError) {
        var b: [UInt8] = []
        put32(&b, k.header)
        put32(&b, k.payload)
        put32(&b, b.withUnsafeBytes { CRC32C.checksum($0) })
        let tmp = keyPath + ".new"
        try? fs.unlink(tmp)
        let f = try fs.create(tmp)
        do throws(SpoolError) {
            try fs.write(f, b, at: 0)
            try fs.sync(f)
        } catch {
            fs.close(f)
            throw error
        }
        fs.close(f)
        try fs.rename(tmp, keyPath)
        try fs.syncDirectory(directory)
    }

    // MARK: The reserve

    func setUpReserve() {
        guard options.reserveBytes > 0 else {
            lock.locked { reserveWanted = false }
            return
        }
        if let f = try? fs.open(reservePath, writable: false) {
            let n = (try? fs.size(f)) ?? 0
            fs.close(f)
            if n >= options.reserveBytes {
                lock.locked { reserveHeld = true }
                return
            }
        }
        makeReserve()
        guard !lock.locked({ reserveHeld }) else { return }
        // A file system too small for it runs without; on one merely full, mail is refused until
        // the reserve can be made (what the spool owes then still has room).
        if let total = fs.totalBytes(directory), total >= 64 * options.reserveBytes {
            lock.locked { reserveMissed = true }
            log("spool: no room for the \(options.reserveBytes / 1024) KiB reserve in \(directory): the disk is full; new mail is refused until it can be made")
        } else {
            lock.locked { reserveWanted = false }
            log("spool: the file system of \(directory) is too small for a \(options.reserveBytes / 1024) KiB reserve; running without it")
        }
    }

    // MARK: Record format 1

    /// Takes over segments written by an earlier ternd (format 1 records cannot be marked dead):
    /// each message still owed is written again in the current format with its latest statuses,
    /// durably, and the old segments are deleted.
    func migrate(_ old: [UInt64], index: inout QueueIndex, ledger: inout SegmentLedger) throws(SpoolError) -> Int {
        let oldSet = Set(old)
        let k = lock.locked { key }
        var version = lock.locked { statusVersion }
        defer { lock.locked { statusVersion = max(statusVersion, version) } }
        var moved = 0
        guard let f = file else { return 0 }
        for (id, e) in index.entries {
            let onOld = e.copies.contains { oldSet.contains($0.segment) } || e.statuses.contains { $0.map { oldSet.contains($0.location.segment) } ?? false }
            guard onOld else { continue }
            var entry = e
            if !e.message.isFinished {
                if let at = e.copies.first(where: { oldSet.contains($0.segment) }) {
                    let record = try read(at)
                    let bytes = record.encoded(key: k)
                    try fs.write(f, bytes, at: offset)
                    entry.copies = [RecordLocation(segment: segment, offset: offset, length: bytes.count)]
                    offset += bytes.count
                    moved += 1
                }
                for (d, s) in e.statuses.enumerated() {
                    guard let s, case .status(var st) = try read(s.location) else { continue }
                    // Format 1 had no versions: the one it takes over gets the next.
                    version += 1
                    st.version = version
                    let bytes = SpoolRecord.status(st).encoded(key: k)
                    try fs.write(f, bytes, at: offset)
                    entry.statuses[d] = StatusReference(location: RecordLocation(segment: segment, offset: offset, length: bytes.count), isFinal: s.isFinal, version: version)
                    entry.message.deliveries[d].version = version
                    offset += bytes.count
                }
                index.entries[id] = entry
            } else {
                // Finished: nothing of it is needed once the old segments are gone.
                _ = index.remove(id)
            }
        }
        try fs.sync(f)
        for s in old {
            try fs.unlink(segmentPath(s))
            ledger.removed(s)
        }
        try fs.syncDirectory(directory)
        log("spool: took over \(old.count) segment(s) of record format 1 (\(moved) messages still owed)")
        return moved
    }
}
