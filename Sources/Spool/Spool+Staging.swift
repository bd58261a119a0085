// Bodies streamed into the spool as they arrive (privilege separation: a session holds at most a
// chunk of a message, whatever its size; docs/spool.md "Streamed bodies").
//
// A body is appended to an unnamed file in the spool's folder (O_TMPFILE: a crash or a client
// that goes away leaves nothing behind, so recovery has nothing to clean) and checksummed as it
// comes. At the end of the data, `accept(_:bodyParts:staged:)` hands the writer a record whose
// envelope and trace fields are in memory and whose body is that file: the writer copies it into
// the segment in the kernel (copy_file_range), never through user space, and the group commit's
// fdatasync covers it like any record. On disk it is the same record an in-memory body makes.
import Glibc

/// A message body being received. One owner appends to it; once handed to `accept` it is the
/// spool's (appending after that is a programming error).
public final class StagedBody: @unchecked Sendable {
    let fs: any SpoolFileSystem
    let file: SpoolFile
    /// Bytes appended so far.
    public private(set) var length = 0
    /// CRC-32C (seed 0) of the bytes appended: combined into the record's checksum.
    private(set) var checksum: UInt32 = 0
    var handedOver = false

    init(fs: any SpoolFileSystem, file: SpoolFile) {
        self.fs = fs
        self.file = file
    }

    deinit { fs.close(file) }

    /// Appends the next piece of the body. A failure (no space) leaves the body unusable: the
    /// message must be refused.
    public func append(_ bytes: UnsafeRawBufferPointer) throws(SpoolError) {
        precondition(!handedOver, "a staged body appended to after it was handed to the spool")
        guard bytes.count > 0 else { return }
        try fs.write(file, bytes, at: length)
        checksum = CRC32C.checksum(bytes, seed: checksum)
        length += bytes.count
    }

    public func append(_ bytes: [UInt8]) throws(SpoolError) {
        var failure: SpoolError? = nil
        bytes.withUnsafeBytes { b in
            do throws(SpoolError) { try append(b) } catch { failure = error }
        }
        if let failure { throw failure }
    }

    /// The bytes appended, read back (for tests and for checks that must see the body).
    public func read(at offset: Int, count: Int) throws(SpoolError) -> [UInt8] {
        try fs.read(file, count: min(count, max(0, length - offset)), at: offset)
    }
}

/// A record waiting for the writer: bytes in memory, or, for a streamed body, `head`, the staged
/// file's bytes, then `tail`.
struct PendingRecord {
    var head: [UInt8]
    var staged: StagedBody? = nil
    var tail: [UInt8] = []

    var count: Int { head.count + (staged?.length ?? 0) + tail.count }
}

extension Spool {
    /// A new body to stream a message into (an unnamed file in the spool's folder).
    public func stageBody() throws(SpoolError) -> StagedBody {
        StagedBody(fs: fs, file: try fs.createUnnamed(in: directory))
    }

    /// Stores a client's message whose body is `bodyParts` (the trace fields, in memory) followed
    /// by `staged`. As `accept(_:bodyParts:completion:)` otherwise; `message.body` is not used.
    public func accept(_ message: SpoolMessage, bodyParts: [[UInt8]], staged: StagedBody, completion: @escaping @Sendable (AcceptOutcome) -> Void) -> AcceptResult {
        precondition(!staged.handedOver, "a staged body handed to the spool twice")
        staged.handedOver = true
        let (head, tail) = SpoolRecord.encodeMessage(message, bodyParts: bodyParts, staged: (staged.length, staged.checksum), key: recordKey)
        return enqueueAccept(message, PendingRecord(head: head, staged: staged, tail: tail), completion: completion)
    }
}
