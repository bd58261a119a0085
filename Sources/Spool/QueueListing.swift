import Glibc

// What the queue holds, for people: every message that still owes a delivery, with each
// delivery's state and the last reason it was deferred. Built from the records of a read-only
// scan (`Spool.scan`), so `ternctl queue` can show it while ternd runs.

public struct QueueListing: Sendable, Equatable {
    public struct Delivery: Sendable, Equatable {
        public var delivery: SpoolDelivery
        /// Nil: not tried yet.
        public var state: SpoolStatus.State?
        public var attempts: UInt32 = 0
        /// Seconds since the epoch; 0 when due at once.
        public var nextAttempt: Int64 = 0
        /// Why the last attempt did not deliver.
        public var reason = ""
        var version: UInt64 = 0

        public var isPending: Bool { state?.isDeferred ?? true }
    }

    public struct Message: Sendable, Equatable {
        public var id: UInt64
        public var arrival: Int64
        public var sender: String
        /// The message's record in the spool, in bytes (its body and envelope).
        public var spooledBytes: Int
        /// The deliveries still owed, in the order of the message's record.
        public var pending: [Delivery]
    }

    /// Messages owing deliveries, oldest first.
    public private(set) var messages: [Message] = []
    /// Damage the scan met (see `Spool.scan`).
    public private(set) var damage: [String] = []

    public init() {}

    /// Builds the listing from records in log order.
    public init(records: [(SpoolRecord, RecordLocation)], damage: [String] = []) {
        var byID: [UInt64: (message: Message, all: [Delivery])] = [:]
        var order: [UInt64] = []
        for (record, at) in records {
            switch record {
            case .message(let m):
                guard byID[m.id] == nil else { continue }
                byID[m.id] = (Message(id: m.id, arrival: m.arrival, sender: m.sender, spooledBytes: at.length, pending: []), m.deliveries.map { Delivery(delivery: $0) })
                order.append(m.id)
            case .status(let s):
                guard var entry = byID[s.id], Int(s.delivery) < entry.all.count else { continue }
                var d = entry.all[Int(s.delivery)]
                // The newer version is in force (see SpoolStatus.version).
                if d.version > s.version { continue }
                d.version = s.version
                d.state = s.state
                d.attempts = s.attempts
                d.nextAttempt = s.state.isDeferred ? s.nextAttempt : 0
                d.reason = s.reason
                entry.all[Int(s.delivery)] = d
                byID[s.id] = entry
            case .segmentStart, .segmentEnd:
                break
            }
        }
        for id in order {
            guard var entry = byID[id] else { continue }
            entry.message.pending = entry.all.filter(\.isPending)
            if !entry.message.pending.isEmpty { messages.append(entry.message) }
        }
        messages.sort { ($0.arrival, $0.id) < ($1.arrival, $1.id) }
        self.damage = damage
    }

    /// Reads the spool in `directory` (see `Spool.scan`).
    public static func read(directory: String, fileSystem: any SpoolFileSystem = PosixFileSystem.shared) throws(SpoolError) -> QueueListing {
        var records: [(SpoolRecord, RecordLocation)] = []
        let damage = try Spool.scan(directory: directory, fileSystem: fileSystem) { r, at in records.append((r, at)) }
        return QueueListing(records: records, damage: damage)
    }

    public var pendingDeliveries: Int { messages.reduce(0) { $0 + $1.pending.count } }
}

/// A message's queue ID as people see it: 16 upper-case hex digits ("01A22B521EB00000").
public enum QueueID {
    public static func text(_ id: UInt64) -> String {
        let s = String(id, radix: 16, uppercase: true)
        return String(repeating: "0", count: max(0, 16 - s.count)) + s
    }
}

extension Spool {
    /// Reads the spool in `directory` without changing anything, while ternd may be writing to it
    /// (`ternctl queue`): every record in force in log order, as recovery would see them (records
    /// of finished messages are left out). A record being written at the end is not seen yet; a
    /// segment removed meanwhile held nothing owed. Returns the damage found (a torn tail is not
    /// damage here: it may be a write in flight).
    public static func scan(directory: String, fileSystem fs: any SpoolFileSystem = PosixFileSystem.shared, _ visit: (SpoolRecord, RecordLocation) -> Void) throws(SpoolError) -> [String] {
        var notes: [String] = []
        let all = segments(in: directory, fs: fs)
        var key = Self.storedKey(directory: directory, fs: fs)
        for (k, n) in all.enumerated() {
            let bytes: [UInt8]
            do throws(SpoolError) {
                bytes = try fs.readAll(SegmentFiles.path(directory, n))
            } catch {
                if error.errno == ENOENT { continue }
                throw error
            }
            let decoded = bytes.withUnsafeBytes { b in
                SegmentDecoder.decode(b, segment: n, knownKey: key, tornTailPossible: k == all.count - 1) { r in
                    if case .live(let record, let at) = r { visit(record, at) }
                }
            }
            if key == nil { key = decoded.key }
            notes += decoded.damage.map(\.description)
        }
        return notes
    }

    static func storedKey(directory: String, fs: any SpoolFileSystem) -> SpoolKey? {
        guard let b = try? fs.readAll("\(directory)/key"), b.count == 12 else { return nil }
        return b.withUnsafeBytes { p -> SpoolKey? in
            guard CRC32C.checksum(UnsafeRawBufferPointer(rebasing: p[0..<8])) == get32(p, 8) else { return nil }
            return SpoolKey(header: get32(p, 0), payload: get32(p, 4))
        }
    }
}
