// Splits a byte stream from a peer into messages (sans-IO: the reactor feeds what it read).
// A length over `IPCLimits.frame` is refused before anything is buffered for it, so a peer that
// claims a 4 GiB frame costs nothing. After the first error the decoder stays failed: the
// channel is to be closed, and nothing more from that peer is believed.

public struct FrameDecoder {
    var buffer: [UInt8] = []
    /// Where the next frame starts in `buffer` (consumed bytes are dropped in batches).
    var start = 0
    public private(set) var failure: IPCError? = nil

    public init() {}

    /// Bytes buffered that do not make a whole frame yet.
    public var pending: Int { buffer.count - start }

    public mutating func feed(_ bytes: UnsafeRawBufferPointer) {
        guard failure == nil else { return }
        if start > 0 && start >= buffer.count / 2 {
            buffer.removeFirst(start)
            start = 0
        }
        buffer.append(contentsOf: bytes)
    }

    public mutating func feed(_ bytes: [UInt8]) {
        bytes.withUnsafeBytes { feed($0) }
    }

    /// The next whole message, or nil until more bytes come.
    public mutating func next() throws(IPCError) -> IPCMessage? {
        if let failure { throw failure }
        guard pending >= 4 else { return nil }
        let n = Int(buffer[start]) << 24 | Int(buffer[start + 1]) << 16 | Int(buffer[start + 2]) << 8 | Int(buffer[start + 3])
        guard n >= 1, n <= IPCLimits.frame else { return try fail(.badLength(n)) }
        guard pending >= 4 + n else { return nil }
        let type = buffer[start + 4]
        let from = start + 5
        let to = start + 4 + n
        start = to
        let decoded: Result<IPCMessage, IPCError> = buffer.withUnsafeBytes { all in
            do throws(IPCError) {
                return .success(try IPCMessage.decode(type: type, payload: UnsafeRawBufferPointer(rebasing: all[from..<to])))
            } catch {
                return .failure(error)
            }
        }
        switch decoded {
        case .success(let m): return m
        case .failure(let e): return try fail(e)
        }
    }

    /// The peer closed the stream: an error if it stopped inside a frame.
    public mutating func finish() throws(IPCError) {
        if let failure { throw failure }
        if pending > 0 { _ = try fail(.endedInFrame(pending)) }
    }

    mutating func fail(_ e: IPCError) throws(IPCError) -> IPCMessage? {
        failure = e
        buffer = []
        start = 0
        throw e
    }
}
