// Recovery: read every segment back, rebuild the index and the ledger, cut a torn tail, keep
// damaged segments aside, take over segments of record format 1, and begin a new segment.

import Glibc

extension Spool {
    /// Reads the spool back and starts the writer. Call once, before anything else.
    public func recover() throws(SpoolError) -> RecoveryReport {
        let start = monotonicSeconds()
        var report = RecoveryReport()
        let all = segments()
        report.segments = all.count
        let storedKey = readKey()
        var known = storedKey
        var v1Segments: [UInt64] = []
        var maxID: UInt64 = 0
        var damagedIDs: Set<UInt64> = []
        var index = QueueIndex()
        var ledger = SegmentLedger()
        for (k, n) in all.enumerated() {
            let path = segmentPath(n)
            ledger.added(n)
            let decoded = try fs.withContents(of: path) { b throws(SpoolError) in
                SegmentDecoder.decode(b, segment: n, knownKey: known, tornTailPossible: k == all.count - 1) { r in
                    report.records += 1
                    if case .live(.message(let m), _) = r { maxID = max(maxID, m.id) }
                    index.replay(r)
                }
            }
            if known == nil, let key = decoded.key { known = key }
            if decoded.isVersion1 { v1Segments.append(n) }
            if let cut = decoded.tornTail {
                report.truncatedBytes = decoded.size - cut
                if let h = decoded.tornTailHeader, h.kind == .message { report.tornMessage = h.id }
                if decoded.tornTailHeader != nil {
                    // A whole record that fails its checksum at the end: most likely a torn write,
                    // but kept aside in case it is damage.
                    report.savedCopies.append(try saveTail(of: n, from: cut))
                }
                try cutTail(of: n, at: cut)
            }
            if !decoded.damage.isEmpty {
                report.damage += decoded.damage
                report.savedCopies.append(try saveDamaged(n))
                for d in decoded.damage {
                    if let id = d.lostMessage { damagedIDs.insert(id) }
                    if let id = d.revivedMessage { report.revivedMessages.append(id) }
                    if d.header == nil { report.unidentifiedDamage += 1 }
                    if let h = d.header, h.kind == .status { report.lostStatuses.append(h.id) }
                }
            }
        }
        // A damaged record's message is lost unless another copy of it was read.
        report.lostMessages = damagedIDs.filter { index.entries[$0] == nil }.sorted()
        report.lostStatuses = Array(Set(report.lostStatuses.filter { index.entries[$0].map { !$0.message.isFinished } ?? false })).sorted()
        let key = known ?? SpoolKey.random()
        if storedKey != key { try writeKey(key) }
        lock.locked {
            self.key = key
            nextID = max(nextID, maxID)
        }
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
        lock.locked {
            self.index = index
            self.ledger = ledger
            for k in kills { enqueueLocked(k) }
        }
        for s in deletable { try? fs.unlink(segmentPath(s)) }
        if !deletable.isEmpty {
            try fs.syncDirectory(directory)
            lock.locked { for s in deletable { self.ledger.removed(s) } }
            report.deletedSegments = deletable.count
        }
        setUpReserve()
        lastFree = fs.freeBytes(directory)
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
                fs.close(f)
                try? fs.unlink(path)
                throw error
            }
            file = f
            segment = n
            offset = bytes.count
            ledger.setCurrent(n)
        } catch {
            guard let last = fallback, let head = try? fs.readAll(segmentPath(last)), !head.withUnsafeBytes({ SpoolRecord.isVersion1($0) }) else { throw error }
            log("spool: cannot begin segment \(SegmentFiles.name(n)): \(error); writing on at the end of \(SegmentFiles.name(last))")
            let f = try fs.open(segmentPath(last), writable: true)
            file = f
            segment = last
            offset = (try fs.size(f) + 7) & ~7
            ledger.setCurrent(last)
        }
    }

    /// Cuts a torn tail and makes the cut durable.
    func cutTail(of n: UInt64, at position: Int) throws(SpoolError) {
        let f = try fs.open(segmentPath(n), writable: true)
        defer { fs.close(f) }
        try fs.truncate(f, to: position)
        try fs.sync(f)
    }

    /// Copies a damaged segment into SPOOL/damaged/ (once: a copy of that name is kept).
    func saveDamaged(_ n: UInt64) throws(SpoolError) -> String {
        try fs.makeDirectories(damagedDirectory)
        let to = "\(damagedDirectory)/\(SegmentFiles.name(n))"
        if !fs.exists(to) {
            try fs.copy(segmentPath(n), to)
            try fs.syncDirectory(damagedDirectory)
        }
        return to
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
        let held = lock.locked { reserveHeld }
        if !held {
            lock.locked { reserveWanted = false }
            log("spool: no room for the \(options.reserveBytes / 1024) KiB reserve in \(directory); running without it")
        }
    }

    // MARK: Record format 1

    /// Takes over segments written by an earlier ternd (format 1 records cannot be marked dead):
    /// each message still owed is written again in the current format with its latest statuses,
    /// durably, and the old segments are deleted.
    func migrate(_ old: [UInt64], index: inout QueueIndex, ledger: inout SegmentLedger) throws(SpoolError) -> Int {
        let oldSet = Set(old)
        let k = lock.locked { key }
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
                    guard let s else { continue }
                    let record = try read(s.location)
                    let bytes = record.encoded(key: k)
                    try fs.write(f, bytes, at: offset)
                    entry.statuses[d] = StatusReference(location: RecordLocation(segment: segment, offset: offset, length: bytes.count), isFinal: s.isFinal)
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
