// The spool's writer thread: the only code that writes, syncs, creates or deletes spool files.
// One turn: take what is queued, write it (rotating segments as they fill, carrying out dead marks
// and compaction), fdatasync once, then — under the lock — bring the index and the ledger up to
// date and collect the answers, answer outside the lock, and delete what the ledger allows.

import CTernSystem
import Glibc

extension Spool {
    /// What happened to one queued item in a turn.
    enum Outcome {
        /// Written at this location; durable once its fdatasync succeeded (see `settle`).
        case written(RecordLocation)
        /// Written, but the fdatasync meant to cover it failed: it may or may not be on disk.
        case uncertain(RecordLocation, SpoolError)
        case durable(RecordLocation)
        /// Not written (what part of it reached the file was cut back or covered, see `cutBack`).
        case failed(SpoolError)
        /// Left for a later turn, behind something owed that could not be written.
        case notAttempted
        /// Dead marks written in these segments (durable when they were synced).
        case marked(Set<UInt64>)
        case markedDurable
        case done
    }

    func startWriter() {
        let box = Unmanaged.passRetained(self)
        var tid = pthread_t()
        pthread_create(&tid, nil, { arg in
            let spool = Unmanaged<Spool>.fromOpaque(arg!).takeRetainedValue()
            spool.setThreadName()
            spool.writerLoop()
            return nil
        }, box.toOpaque())
        writer = tid
    }

    func setThreadName() {
        _ = tern_set_thread_name("tern-spool")
    }

    func writerLoop() {
        while true {
            lock.lock()
            // Wait for work; while something owed is refused by the disk, or the reserve is to be
            // made again, come back every retry interval.
            while true {
                let retrying = blocked != nil || (reserveWanted && !reserveHeld)
                if stopping {
                    // The deadline ends retrying a disk that refuses (`blocked`); a disk that
                    // answers again gets what is owed written, however late (`close` gives up
                    // waiting for the writer 5 s after the deadline).
                    if queue.isEmpty || (blocked != nil && monotonicSeconds() >= closeDeadline) { break }
                    if blocked == nil || monotonicSeconds() - lastAttempt >= options.retryInterval { break }
                    lock.wait(seconds: min(options.retryInterval, max(0.001, closeDeadline - monotonicSeconds())))
                    continue
                }
                if retrying {
                    if monotonicSeconds() - lastAttempt >= options.retryInterval { break }
                    lock.wait(seconds: options.retryInterval - (monotonicSeconds() - lastAttempt))
                    continue
                }
                if !queue.isEmpty { break }
                lock.wait()
            }
            if stopping && (queue.isEmpty || (blocked != nil && monotonicSeconds() >= closeDeadline)) {
                lock.unlock()
                finishWriting()
                return
            }
            var batch: [WriteItem] = []
            var bytes = 0
            var memory = 0
            var taken = 0
            for item in queue {
                if !batch.isEmpty && bytes + item.size > options.batchBytes { break }
                batch.append(item)
                bytes += item.size
                memory += item.memory
                taken += 1
                if case .accept(let id, _, _, _, _) = item, tickets[id] == .queued { tickets[id] = .writing }
            }
            queue.removeFirst(taken)
            queuedBytes -= memory
            busySince = monotonicSeconds()
            lock.unlock()
            lock.locked { lastAttempt = monotonicSeconds() }
            if reserveWanted && !reserveHeld { makeReserve() }
            var items = batch
            let outcomes = writeTurn(&items)
            let answers = settle(items, outcomes)
            for a in answers { a() }
            // Deleting and punching holes touch the disk too: a freeze there must show as a
            // stall (MAIL refused) like one in a write.
            lock.locked { busySince = monotonicSeconds() }
            deleteUnreferencedSegments()
            lock.locked { busySince = nil }
        }
    }

    // MARK: Writing

    /// Writes a turn's items in order; returns each one's outcome. Compaction items add the
    /// copies they make to `items` right after themselves.
    func writeTurn(_ items: inout [WriteItem]) -> [Outcome] {
        var outcomes: [Outcome] = []
        outcomes.reserveCapacity(items.count)
        /// The first item whose write no fdatasync has covered yet.
        var unsynced = 0
        var stopAt: Int? = nil
        var markedSegments: Set<UInt64> = []
        var i = 0
        while i < items.count {
            // Behind something owed that could not be written, only dead marks go on: they take no
            // space, and the segments they free may be what makes room (they never depend on what
            // is waiting: a message is marked dead only once its statuses are on disk).
            if stopAt != nil, !items[i].isMark {
                outcomes.append(.notAttempted)
                i += 1
                continue
            }
            switch items[i] {
            case .accept(_, let r, _, _, _):
                let (outcome, _) = append(r, unsynced: &unsynced, outcomes: &outcomes)
                outcomes.append(outcome)
            case .report(_, let b, _, _), .status(_, let b, _), .copy(_, let b, _, _):
                let (outcome, _) = append(PendingRecord(head: b), unsynced: &unsynced, outcomes: &outcomes)
                outcomes.append(outcome)
                if case .failed = outcome, items[i].isOwed { stopAt = i }
            case .kill(let id, let copies, _):
                var touched: Set<UInt64> = []
                var failure: SpoolError? = nil
                // Only copies still counted: one already marked (and perhaps its segment deleted
                // since) needs nothing more.
                let counted = lock.locked { index.entries[id].map { Set($0.copies + $0.uncertainCopies) } ?? [] }
                for c in copies where counted.contains(c) {
                    do throws(SpoolError) {
                        try markDead(c, id: id)
                        touched.insert(c.segment)
                    } catch {
                        failure = error
                        break
                    }
                }
                if let failure {
                    outcomes.append(.failed(failure))
                    stopAt = stopAt ?? i
                } else {
                    markedSegments.formUnion(touched)
                    outcomes.append(.marked(touched))
                }
            case .compact(let s):
                let copies = compactionCopies(of: s)
                items.insert(contentsOf: copies, at: i + 1)
                outcomes.append(.done)
            }
            i += 1
        }
        // One fdatasync for everything appended to the current segment, and one for each other
        // segment that got dead marks.
        let syncError = syncCurrent()
        var markFailures: [UInt64: SpoolError] = [:]
        for s in markedSegments where s != segment {
            do throws(SpoolError) {
                try syncSegment(s)
            } catch {
                markFailures[s] = error
            }
        }
        closeMarkHandles()
        for k in unsynced..<outcomes.count {
            if case .written(let at) = outcomes[k] {
                outcomes[k] = syncError.map { .uncertain(at, $0) } ?? .durable(at)
            }
        }
        for k in 0..<outcomes.count {
            if case .marked(let segments) = outcomes[k] {
                if segments.contains(segment), let e = syncError {
                    outcomes[k] = .failed(e)
                } else if let e = segments.compactMap({ markFailures[$0] }).first {
                    outcomes[k] = .failed(e)
                } else {
                    outcomes[k] = .markedDurable
                }
            }
        }
        return outcomes
    }

    /// Appends one record to the current segment (beginning the next one first when it would not
    /// fit). Items written before a rotation are made durable by it: their outcomes are settled
    /// there.
    func append(_ record: PendingRecord, unsynced: inout Int, outcomes: inout [Outcome]) -> (Outcome, Bool) {
        var rotated = false
        let length = record.count
        if offset > SpoolRecord.headerSize + 8, offset + length > options.segmentSize {
            // Rotation syncs the old segment: what was written into it is settled now.
            let err = rotate()
            rotated = err.rotated
            // The old segment was synced either way: what was written into it is settled now.
            for k in unsynced..<outcomes.count {
                if case .written(let at) = outcomes[k] { outcomes[k] = err.syncError.map { .uncertain(at, $0) } ?? .durable(at) }
            }
            unsynced = outcomes.count
        }
        guard let f = file else { return (.failed(SpoolError(operation: "write", path: directory, errno: EBADF)), rotated) }
        let at = RecordLocation(segment: segment, offset: offset, length: length)
        do throws(SpoolError) {
            try fs.write(f, record.head, at: offset)
            // A streamed body: copied from its staged file in the kernel (Spool+Staging.swift).
            if let staged = record.staged {
                try fs.copyRange(from: staged.file, at: 0, to: f, at: offset + record.head.count, count: staged.length)
                if !record.tail.isEmpty { try fs.write(f, record.tail, at: offset + record.head.count + staged.length) }
            }
        } catch {
            cutBack(from: at)
            return (.failed(SpoolError(operation: "write", path: segmentPath(segment), errno: error.errno)), rotated)
        }
        offset += length
        dirty = true
        return (.written(at), rotated)
    }

    /// After a failed write: whatever part of the record reached the file must not be read as a
    /// record, and nothing may later be taken for a copy of it. Cut back; or, when that fails, cover
    /// what was written with a padding record (recovery skips it) and write on after it; or, when
    /// even that fails, write the next record over it.
    func cutBack(from at: RecordLocation) {
        guard let f = file else { return }
        let end = (try? fs.size(f)) ?? (at.offset + at.length)
        guard end > at.offset else { return }
        dirty = true
        if (try? fs.truncate(f, to: at.offset)) != nil { return }
        let skip = (max(end - at.offset, SpoolRecord.headerSize) + 7) & ~7
        if (try? fs.write(f, SpoolRecord.paddingHeader(length: skip, key: recordKey), at: at.offset)) != nil {
            offset = at.offset + skip
        }
    }

    /// Closes the current segment in good order and begins the next. On failure to begin it,
    /// writing goes on in the current one (segments may exceed their size).
    ///
    /// Order matters for recovery: the old segment gets its end record and is synced *before* the
    /// next one exists on disk, so only the last segment can ever have a torn tail.
    func rotate() -> (rotated: Bool, syncError: SpoolError?) {
        let next = segment + 1
        let path = segmentPath(next)
        let k = recordKey
        if let f = file {
            let end = SpoolRecord.segmentEnd.encoded(key: k)
            do throws(SpoolError) {
                try fs.write(f, end, at: offset)
                offset += end.count
            } catch {
                // Without its end record this segment must stay the last (recovery would take
                // it for one cut short): writing goes on here, and rotation is tried again.
                try? fs.truncate(f, to: offset)
                dirty = true
                return (false, syncCurrent())
            }
            dirty = true
        }
        let syncError = syncCurrent()
        // Not synced: the next segment must wait, or a crash could tear a segment that is not the
        // last. Writing goes on here and the sync is tried again.
        if syncError != nil { return (false, syncError) }
        let newFile: SpoolFile
        let start = SpoolRecord.segmentStart(key: k, segment: next).encoded(key: k)
        do throws(SpoolError) {
            // The next segment is created by path: only in the folder this spool locked (checked
            // before and after, so a move between the two cannot leave it elsewhere).
            try ensureFolderIsOurs()
            newFile = try fs.create(path)
            do throws(SpoolError) {
                try fs.write(newFile, start, at: 0)
                try fs.sync(newFile)
                try fs.syncDirectory(directory)
                try ensureFolderIsOurs()
            } catch {
                abandonSegment(newFile, path)
                throw error
            }
        } catch {
            // Records may follow the end record: it only says no torn write can be before it.
            log("spool: cannot begin segment \(SegmentFiles.name(next)): \(error); writing on in \(SegmentFiles.name(segment))")
            return (false, syncError)
        }
        if let f = file { fs.close(f) }
        file = newFile
        segment = next
        offset = start.count
        lock.locked {
            ledger.setCurrent(next)
            durableEnd = (next, start.count)
        }
        return (true, syncError)
    }

    /// Throws when the spool's path no longer names the folder it locked (moved or replaced while
    /// ternd runs): files created, renamed or deleted by path would land in another folder. The
    /// spool's condition says so at once (MAIL refused, delivery paused; see `folderMoved`).
    func ensureFolderIsOurs() throws(SpoolError) {
        guard let f = lock.locked({ lockFile }), !fs.stillNames(directory, f) else { return }
        lock.locked { noteFolder(moved: true) }
        throw SpoolError(operation: "check", path: directory, errno: ESTALE)
    }

    /// A segment that could not be begun goes again; when even that fails it is left empty (an
    /// empty segment is nothing to recovery, a partial start record would look like a torn one).
    func abandonSegment(_ f: SpoolFile, _ path: String) {
        if (try? fs.unlink(path)) == nil || (try? fs.syncDirectory(directory)) == nil {
            _ = try? fs.truncate(f, to: 0)
            _ = try? fs.sync(f)
        }
        fs.close(f)
    }

    func syncCurrent() -> SpoolError? {
        guard let f = file, dirty else { return nil }
        do throws(SpoolError) {
            try fs.sync(f)
            dirty = false
            let end = (segment, offset)
            lock.locked {
                syncCount += 1
                durableEnd = end
            }
            return nil
        } catch {
            return SpoolError(operation: "fdatasync", path: segmentPath(segment), errno: error.errno)
        }
    }

    // MARK: Dead marks

    /// Writes the dead state word into the header of message `id`'s record at `at` — after
    /// checking that the header there is that record's: a mark is never written over anything else
    /// (a copy whose write was never confirmed may not be there at all).
    func markDead(_ at: RecordLocation, id: UInt64) throws(SpoolError) {
        let f = try markHandle(at.segment)
        let head = try fs.read(f, count: SpoolRecord.headerSize, at: at.offset)
        let k = recordKey
        guard case .header(let h) = head.withUnsafeBytes({ SpoolRecord.header($0, key: k) }), h.kind == .message, h.id == id, h.length == at.length else {
            log("spool: no dead mark at \(SegmentFiles.name(at.segment)):\(at.offset): the record there is not message \(QueueID.text(id))'s")
            return
        }
        if h.isDead { return }
        let d = SpoolRecord.deadState
        let word: [UInt8] = [UInt8(truncatingIfNeeded: d), UInt8(truncatingIfNeeded: d >> 8), UInt8(truncatingIfNeeded: d >> 16), UInt8(truncatingIfNeeded: d >> 24)]
        try fs.write(f, word, at: at.offset + SpoolRecord.stateOffset)
        if at.segment == segment { dirty = true }
    }

    func markHandle(_ s: UInt64) throws(SpoolError) -> SpoolFile {
        if s == segment, let f = file { return f }
        if let f = markHandles[s] { return f }
        let f = try fs.open(segmentPath(s), writable: true)
        markHandles[s] = f
        return f
    }

    func syncSegment(_ s: UInt64) throws(SpoolError) {
        guard let f = markHandles[s] else { return }
        try fs.sync(f)
        lock.locked { syncCount += 1 }
    }

    func closeMarkHandles() {
        for f in markHandles.values { fs.close(f) }
        markHandles.removeAll()
    }

    // MARK: Compaction

    /// What compaction of segment `s` writes: each message with a record there copied forward,
    /// followed by a snapshot of every delivery's state, and for other messages a snapshot of each
    /// delivery whose latest status lies there. Snapshots are made from the index (always the
    /// newest state, even what is not on disk yet) and carry that state's version, so no older
    /// status can ever win over one (see `SpoolStatus.version`), wherever it lies. Messages
    /// finished or being marked dead are left alone: their dead marks free the segment.
    func compactionCopies(of s: UInt64) -> [WriteItem] {
        struct Plan {
            var id: UInt64
            /// A sure copy of the record lying there (nil: only statuses lie there).
            var message: RecordLocation?
            /// The deliveries to snapshot, with the status record on disk whose reason they keep.
            var snapshots: [(delivery: UInt32, state: DeliveryState, reasonAt: RecordLocation?)]
            /// Copies of uncertain fate lying there: marked dead (the message has a sure copy).
            var uncertain: [RecordLocation]
        }
        let plans: [Plan] = lock.locked {
            compactionQueued.remove(s)
            guard s != ledger.current, ledger.onDisk.contains(s) else { return [] }
            var plans: [Plan] = []
            for (id, e) in index.entries where !e.killing && !e.message.isFinished {
                // A sure copy here is copied forward even when there is another elsewhere: that
                // one may be an old copy on its way to being marked dead.
                let here = e.copies.first { $0.segment == s }
                let uncertain = e.uncertainCopies.filter { $0.segment == s }
                var snapshots: [(UInt32, DeliveryState, RecordLocation?)] = []
                for (d, state) in e.message.deliveries.enumerated() where state.version > 0 {
                    let ref = e.statuses[d]
                    // A moved message needs every delivery's state after its copy; otherwise only
                    // those whose latest status lies in this segment.
                    guard here != nil || ref?.location.segment == s else { continue }
                    snapshots.append((UInt32(d), state, ref?.version == state.version ? ref?.location : nil))
                }
                if here != nil || !snapshots.isEmpty || !uncertain.isEmpty {
                    plans.append(Plan(id: id, message: here, snapshots: snapshots, uncertain: uncertain))
                }
            }
            return plans
        }
        var items: [WriteItem] = []
        let k = recordKey
        for p in plans {
            if let at = p.message {
                // A copy that cannot be read now stays where it is, for a later try.
                guard var bytes = try? readRaw(at) else { continue }
                if bytes.withUnsafeBytes({ SpoolRecord.isVersion1($0) }) {
                    guard case .record(let r, _) = bytes.withUnsafeBytes({ SpoolRecord.decodeV1($0) }) else { continue }
                    bytes = r.encoded(key: k)
                } else {
                    // A live copy: its state word says so (whatever the old one's says).
                    for b in 0..<4 { bytes[SpoolRecord.stateOffset + b] = 0 }
                }
                items.append(.copy(id: p.id, bytes: bytes, status: nil, from: at))
            }
            for snap in p.snapshots {
                // The reason of the status the snapshot repeats, when it can be read (it is for
                // people only: `ternctl queue`).
                var reason = ""
                if let at = snap.reasonAt, case .status(let old)? = try? read(at) { reason = old.reason }
                let st = snap.state
                let state: SpoolStatus.State
                switch st.phase {
                case .pending: state = st.warned ? .deferredWarned : .deferred
                case .delivered: state = .delivered
                case .failed: state = .failed
                case .removed: state = .removed
                }
                let status = SpoolStatus(id: p.id, delivery: snap.delivery, state: state, attempts: st.attempts, nextAttempt: st.nextAttempt, reason: reason, version: st.version)
                items.append(.copy(id: p.id, bytes: SpoolRecord.status(status).encoded(key: k), status: status, from: snap.reasonAt ?? RecordLocation(segment: 0, offset: 0, length: 0)))
            }
            if !p.uncertain.isEmpty { items.append(.kill(id: p.id, copies: p.uncertain, finishing: false)) }
        }
        return items
    }

    func readRaw(_ at: RecordLocation) throws(SpoolError) -> [UInt8] {
        let f = try fs.open(segmentPath(at.segment), writable: false)
        defer { fs.close(f) }
        let b = try fs.read(f, count: at.length, at: at.offset)
        guard b.count == at.length else { throw SpoolError(operation: "read", path: segmentPath(at.segment), errno: EIO) }
        return b
    }

    // MARK: Settling a turn

    /// Brings the index and the ledger up to date with a turn's outcomes (under the lock) and
    /// returns the answers to give (outside it).
    func settle(_ items: [WriteItem], _ outcomes: [Outcome]) -> [() -> Void] {
        var answers: [() -> Void] = []
        /// Said after the lock is let go (the log may be slow; the lock must not wait for it).
        var notes: [String] = []
        var requeue: [WriteItem] = []
        var ownFailure: SpoolError? = nil
        var newWork = false
        var releaseReserve = false
        lock.lock()
        busySince = nil
        /// Message copies made durable by compaction, and whether all their statuses followed.
        var moved: [UInt64: (from: RecordLocation, complete: Bool)] = [:]
        for (item, outcome) in zip(items, outcomes) {
            switch item {
            case .accept(let id, _, let deliveries, let arrival, let completion):
                let abandoned = tickets.removeValue(forKey: id) == .abandoned
                switch outcome {
                case .uncertain(_, let e), .failed(let e):
                    notes.append("spool: message \(QueueID.text(id)) not stored: \(e)")
                default:
                    break
                }
                let hadNoSpace = noSpaceFor != nil
                switch outcome {
                case .uncertain(_, let e), .failed(let e):
                    if e.isNoSpace { noSpaceFor = (item.size, monotonicSeconds()) }
                case .durable:
                    noSpaceFor = nil
                default:
                    break
                }
                if hadNoSpace != (noSpaceFor != nil) { conditionHook?() }
                switch outcome {
                case .durable(let at):
                    ledger.retain(at)
                    if abandoned {
                        index.insert(id: id, arrival: arrival, deliveries: deliveries, at: at, visible: false, schedule: false)
                        withdrawLocked(id, deliveries: deliveries)
                    } else {
                        index.insert(id: id, arrival: arrival, deliveries: deliveries, at: at, visible: true, schedule: true)
                        newWork = true
                        answers.append { completion(.stored) }
                    }
                case .uncertain(let at, let e):
                    // Possibly on disk, never acknowledged: withdrawn so it is never delivered.
                    ledger.retain(at)
                    index.insert(id: id, arrival: arrival, deliveries: deliveries, at: at, visible: false, schedule: false)
                    withdrawLocked(id, deliveries: deliveries)
                    if !abandoned { answers.append { completion(.failed(e.isNoSpace ? .full : .failing(e.description))) } }
                case .failed(let e):
                    if !abandoned { answers.append { completion(.failed(e.isNoSpace ? .full : .failing(e.description))) } }
                case .notAttempted:
                    let why = blockedCondition(ownFailure)
                    if !abandoned { answers.append { completion(.failed(why)) } }
                default:
                    break
                }
            case .report(let id, _, let deliveries, let arrival):
                switch outcome {
                case .durable(let at):
                    ledger.retain(at)
                    index.insert(id: id, arrival: arrival, deliveries: deliveries, at: at, visible: true, schedule: true)
                    for c in uncertainCopies.removeValue(forKey: id) ?? [] {
                        ledger.retain(c)
                        index.entries[id]?.uncertainCopies.append(c)
                    }
                    newWork = true
                case .uncertain(let at, let e):
                    uncertainCopies[id, default: []].append(at)
                    requeue.append(item)
                    ownFailure = ownFailure ?? e
                case .failed(let e):
                    requeue.append(item)
                    ownFailure = ownFailure ?? e
                default:
                    requeue.append(item)
                }
            case .status(let s, _, let durable):
                switch outcome {
                case .durable(let at):
                    statusDurableLocked(s, at: at)
                    if let durable { answers.append(durable) }
                case .uncertain(_, let e), .failed(let e):
                    requeue.append(item)
                    ownFailure = ownFailure ?? e
                default:
                    requeue.append(item)
                }
            case .kill(let id, let copies, let finishing):
                switch outcome {
                case .markedDurable:
                    killedLocked(id, copies: copies, finishing: finishing)
                case .failed(let e):
                    requeue.append(item)
                    ownFailure = ownFailure ?? e
                default:
                    requeue.append(item)
                }
            case .copy(let id, _, let status, let from):
                guard case .durable(let at) = outcome else {
                    if status == nil, case .uncertain(let at, _) = outcome, index.entries[id] != nil {
                        // A copy that may be there: marked dead with the message's others.
                        ledger.retain(at)
                        index.entries[id]!.uncertainCopies.append(at)
                    }
                    if moved[id] != nil { moved[id]!.complete = false }
                    continue
                }
                if let status {
                    statusDurableLocked(status, at: at)
                } else if index.entries[id] != nil {
                    ledger.retain(at)
                    index.entries[id]!.copies.append(at)
                    if index.entries[id]!.killing {
                        enqueueFrontLocked(.kill(id: id, copies: [at], finishing: true))
                    } else {
                        moved[id] = (from, true)
                    }
                }
            case .compact(let s):
                // Not reached this turn (behind something owed that failed): later.
                if case .notAttempted = outcome { requeue.append(.compact(s)) }
            }
        }
        // The old copies of messages moved forward with all their statuses are marked dead next.
        for (id, m) in moved where m.complete { enqueueLocked(.kill(id: id, copies: [m.from], finishing: false)) }
        if !requeue.isEmpty {
            queue.insert(contentsOf: requeue, at: 0)
            queuedBytes += requeue.reduce(0) { $0 + $1.memory }
        }
        if let e = ownFailure {
            if blocked == nil { notes.append("spool: cannot write what the spool owes (\(e)); delivery paused and new mail refused until it is written") }
            if blocked == nil { conditionHook?() }
            blocked = e
            if e.isNoSpace && reserveHeld { releaseReserve = true }
        } else if blocked != nil {
            notes.append("spool: the statuses owed are written; delivery goes on" + (reserveWanted && !reserveHeld ? " (new mail waits for the reserve)" : " and mail is accepted again"))
            blocked = nil
            conditionHook?()
        }
        // Compaction needs room before it frees any: not while the disk is full.
        let roomy = blocked == nil && !(reserveWanted && !reserveHeld)
        // A segment is tried again only once what it holds changed (what is left may be messages
        // on their way to being marked dead, which compaction leaves alone).
        for s in ledger.compactable(segmentSize: options.segmentSize) where roomy && !compactionQueued.contains(s) && compactionTried[s] != ledger.liveBytes[s] {
            compactionQueued.insert(s)
            compactionTried[s] = ledger.liveBytes[s]
            enqueueLocked(.compact(s))
        }
        lock.broadcast()
        lock.unlock()
        for n in notes { log(n) }
        if releaseReserve { giveUpReserve() }
        if newWork, let w = onWork { answers.append(w) }
        return answers
    }

    func blockedCondition(_ e: SpoolError?) -> SpoolCondition {
        guard let e = e ?? blocked else { return .full }
        return e.isNoSpace ? .full : .failing(e.description)
    }

    /// A status is durable: it becomes its delivery's latest (the one it replaces stops mattering),
    /// and a message whose every delivery is durably final gets its dead marks.
    func statusDurableLocked(_ s: SpoolStatus, at: RecordLocation) {
        let (inForce, superseded) = index.statusDurable(s, at: at)
        guard inForce else { return }
        ledger.retain(at)
        if let old = superseded { ledger.release(old) }
        if let e = index.entries[s.id], !e.killing, e.isDurablyFinished, e.message.isFinished {
            index.entries[s.id]!.killing = true
            enqueueLocked(.kill(id: s.id, copies: e.copies + e.uncertainCopies, finishing: true))
        }
    }

    /// Dead marks are durable: those copies stop mattering; when the message is done and no copy
    /// is left, its statuses stop mattering too and its entry goes.
    func killedLocked(_ id: UInt64, copies: [RecordLocation], finishing: Bool) {
        guard var e = index.entries[id] else { return }
        for c in copies {
            if let k = e.copies.firstIndex(of: c) {
                e.copies.remove(at: k)
                ledger.release(c)
            } else if let k = e.uncertainCopies.firstIndex(of: c) {
                e.uncertainCopies.remove(at: k)
                ledger.release(c)
            }
        }
        index.entries[id] = e
        if finishing || e.killing, e.copies.isEmpty, e.uncertainCopies.isEmpty {
            for s in e.statuses { if let s { ledger.release(s.location) } }
            _ = index.remove(id)
        }
        punchHoles(copies)
    }

    /// A message that must never be delivered (its client was not told it was accepted).
    func withdrawLocked(_ id: UInt64, deliveries: Int) {
        for d in 0..<deliveries {
            statusVersion += 1
            let s = SpoolStatus(id: id, delivery: UInt32(d), state: .removed, attempts: 0, reason: "withdrawn: the sender was not told it was accepted", version: statusVersion)
            index.apply(s, schedule: false)
            enqueueLocked(.status(s, bytes: SpoolRecord.status(s).encoded(key: key), durable: nil))
        }
    }

    func enqueueFrontLocked(_ item: WriteItem) {
        queue.insert(item, at: 0)
        queuedBytes += item.memory
        lock.broadcast()
    }

    /// Frees the blocks of large dead records whose segments stay (best effort).
    func punchHoles(_ copies: [RecordLocation]) {
        for c in copies where c.length >= 64 * 1024 {
            let from = (c.offset + SpoolRecord.headerSize + 4095) & ~4095
            let to = (c.offset + c.length) & ~4095
            guard to > from else { continue }
            holesToPunch.append((c.segment, from, to - from))
        }
    }

    // MARK: Deleting

    /// Deletes every segment the ledger says holds nothing that matters (the only place segments
    /// are deleted; a damaged one is moved into SPOOL/damaged/ instead), then syncs the folder so
    /// the deletions are durable before anything relies on them.
    @discardableResult
    func deleteUnreferencedSegments() -> Int {
        let (doomed, holes, damaged) = lock.locked { () -> ([UInt64], [(UInt64, Int, Int)], Set<UInt64>) in
            let h = holesToPunch
            holesToPunch = []
            return (ledger.deletable(), h, ledger.damaged)
        }
        for (s, offset, length) in holes where !doomed.contains(s) {
            guard let f = try? fs.open(segmentPath(s), writable: true) else { continue }
            try? fs.punchHole(f, offset: offset, length: length)
            fs.close(f)
        }
        guard !doomed.isEmpty else { return 0 }
        // Deleted and moved by path: not while the path names another folder (they wait).
        guard (try? ensureFolderIsOurs()) != nil else { return 0 }
        var gone: [UInt64] = []
        for s in doomed {
            do throws(SpoolError) {
                if damaged.contains(s) {
                    let to = keptPath(s)
                    try fs.makeDirectories(damagedDirectory)
                    try fs.rename(segmentPath(s), to)
                    log("spool: damaged segment \(SegmentFiles.name(s)) holds nothing owed any more; kept as \(to)")
                } else {
                    try fs.unlink(segmentPath(s))
                }
                gone.append(s)
            } catch {
                if error.errno == ENOENT && !fs.exists(segmentPath(s)) {
                    gone.append(s)
                } else {
                    log("spool: cannot delete \(segmentPath(s)): \(error)")
                }
            }
        }
        do throws(SpoolError) {
            try fs.syncDirectory(directory)
        } catch {
            log("spool: \(error)")
        }
        lock.locked {
            for s in gone {
                ledger.removed(s)
                compactionTried[s] = nil
            }
        }
        return gone.count
    }

    // MARK: The reserve

    /// Makes SPOOL/reserve again when the disk has room for it twice over.
    func makeReserve() {
        guard (try? ensureFolderIsOurs()) != nil else { return }
        let n = options.reserveBytes
        if let free = fs.freeBytes(directory), free < 2 * n { return }
        let tmp = reservePath + ".new"
        try? fs.unlink(tmp)
        do throws(SpoolError) {
            let f = try fs.create(tmp)
            defer { fs.close(f) }
            let zeros = [UInt8](repeating: 0, count: min(n, 64 * 1024))
            var done = 0
            while done < n {
                let k = min(zeros.count, n - done)
                try fs.write(f, k == zeros.count ? zeros : Array(zeros[0..<k]), at: done)
                done += k
            }
            try fs.sync(f)
            try fs.rename(tmp, reservePath)
            try fs.syncDirectory(directory)
        } catch {
            try? fs.unlink(tmp)
            return
        }
        // Said only when it comes back after it was given up (or missing at start-up).
        let back = lock.locked { () -> Bool in
            defer {
                reserveHeld = true
                reserveMissed = false
                conditionHook?()
            }
            return reserveMissed
        }
        if back { log("spool: the \(n / 1024) KiB reserve is in place again; accepting mail") }
    }

    func giveUpReserve() {
        do throws(SpoolError) {
            try ensureFolderIsOurs()
            try fs.unlink(reservePath)
            try fs.syncDirectory(directory)
        } catch {
            log("spool: cannot give up the reserve: \(error)")
        }
        lock.locked {
            reserveHeld = false
            reserveMissed = true
            conditionHook?()
            lock.broadcast()
        }
        log("spool: disk full: gave up the \(options.reserveBytes / 1024) KiB reserve so delivery statuses can be written; new mail is refused until it can be made again")
        lock.locked { lastAttempt = 0 }
    }

    // MARK: Stopping

    /// The last turn: the current segment gets its end record and is synced.
    func finishWriting() {
        guard let f = file else { return }
        if lock.locked({ halting }) {
            fs.close(f)
            file = nil
            return
        }
        let pendingOwed = lock.locked { queue.contains { $0.isOwed } }
        if !pendingOwed {
            let k = recordKey
            let end = SpoolRecord.segmentEnd.encoded(key: k)
            if (try? fs.write(f, end, at: offset)) == nil {
                try? fs.truncate(f, to: offset)
            } else {
                offset += end.count
            }
            dirty = true
        }
        _ = syncCurrent()
        fs.close(f)
        file = nil
        // Clients still waiting are told no (their messages were not written).
        let waiting: [(@Sendable (AcceptOutcome) -> Void)] = lock.locked {
            var out: [(@Sendable (AcceptOutcome) -> Void)] = []
            queue.removeAll { item in
                if case .accept(let id, _, _, _, let completion) = item {
                    if tickets.removeValue(forKey: id) != .abandoned { out.append(completion) }
                    return true
                }
                return false
            }
            return out
        }
        for c in waiting { c(.failed(.closed)) }
    }
}
