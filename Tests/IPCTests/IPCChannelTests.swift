// An `IPCChannel` on a real loop and a real socketpair, with this test as the hostile smtp end:
// a good transaction flows both ways; each kind of bad input (random bytes, a frame cut short by
// EOF, an oversized length, a wrong version, a message out of order) closes that channel with its
// reason, delivers nothing after it, and leaves a second channel on the same loop working.

import CTernSystem
import Foundation
import Glibc
import IPC
import Reactor
import SMTP
import Synchronization
import TernTestSupport
import Testing

/// What a queue-side delegate saw.
final class Recorder: IPCChannelDelegate, @unchecked Sendable {
    let messages = Mutex<[IPCMessage]>([])
    let closed = Mutex<(Bool, IPCChannelError?)>((false, nil))
    /// Answers each messageEnd with messageStored (as the queue would once it is durable).
    func channel(_ channel: IPCChannel, received message: IPCMessage) {
        messages.withLock { $0.append(message) }
        if case .messageEnd(let t, _, _, _, _) = message { channel.send(.messageStored(transaction: t, queueID: 0xABC)) }
    }
    func channelClosed(_ channel: IPCChannel, error: IPCChannelError?) {
        closed.withLock { $0 = (true, error) }
    }
    var isClosed: Bool { closed.withLock { $0.0 } }
    var error: IPCChannelError? { closed.withLock { $0.1 } }
}

/// A loop on its own thread, stopped at the end.
final class RunningLoop: @unchecked Sendable {
    let loop: EventLoop
    let done = Mutex(false)
    init() throws {
        loop = try EventLoop()
        Foundation.Thread.detachNewThread { [self] in
            loop.run()
            done.withLock { $0 = true }
        }
    }
    func stop() {
        loop.stop()
        waitUntil(10) { done.withLock { $0 } }
    }

    /// Opens a queue-side channel on the loop; returns the smtp end's descriptor.
    func channel(_ recorder: Recorder, maxBody: Int = 1 << 20) throws -> Int32 {
        var fds: [Int32] = [0, 0]
        try #require(socketpair(AF_UNIX, Int32(SOCK_STREAM.rawValue), 0, &fds) == 0)
        let made = Mutex(false)
        let fd = fds[0]
        loop.execute { [self] in
            let c = try? IPCChannel(loop: loop, fd: fd, rules: ChannelGuard(local: .queue, peer: .smtp, maxBody: maxBody), delegate: recorder)
            made.withLock { $0 = c != nil }
        }
        try #require(waitUntil(10) { made.withLock { $0 } })
        // (The connection keeps the channel: it is its handler.)
        return fds[1]
    }
}

func writeAll(_ fd: Int32, _ bytes: [UInt8]) {
    var off = 0
    while off < bytes.count {
        // (MSG_NOSIGNAL: a channel that closed on us must not end the test with SIGPIPE.)
        let n = bytes[off...].withUnsafeBytes { Glibc.send(fd, $0.baseAddress, $0.count, Int32(MSG_NOSIGNAL)) }
        if n <= 0 { return }  // the channel closed on us: that is what some cases wait for
        off += n
    }
}

/// Reads messages from the smtp end until `count` came or the channel closed (EOF).
func readMessages(_ fd: Int32, count: Int) throws -> (messages: [IPCMessage], eof: Bool) {
    var d = FrameDecoder()
    var out: [IPCMessage] = []
    var buf = [UInt8](repeating: 0, count: 65536)
    var tv = timeval(tv_sec: 10, tv_usec: 0)
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, socklen_t(MemoryLayout<timeval>.size))
    while out.count < count {
        let n = buf.withUnsafeMutableBytes { Glibc.read(fd, $0.baseAddress, $0.count) }
        if n <= 0 { return (out, true) }
        d.feed(Array(buf[..<n]))
        while let m = try d.next() { out.append(m) }
    }
    return (out, false)
}

@Suite struct IPCChannelTests {
    @Test func goodTransaction() throws {
        let running = try RunningLoop()
        defer { running.stop() }
        let rec = Recorder()
        let fd = try running.channel(rec)
        defer { close(fd) }
        // The channel greets first.
        #expect(try readMessages(fd, count: 1).messages == [.hello(version: IPCMessage.version, role: .queue)])
        let body = (0..<200_000).map { UInt8(truncatingIfNeeded: $0 % 251) }
        var stream = IPCMessage.hello(version: IPCMessage.version, role: .smtp).encoded()
        stream += IPCMessage.messageBegin(transaction: 5, envelope).encoded()
        for piece in stride(from: 0, to: body.count, by: IPCLimits.chunk) {
            stream += IPCMessage.messageChunk(transaction: 5, bytes: Array(body[piece..<min(piece + IPCLimits.chunk, body.count)])).encoded()
        }
        stream += IPCMessage.messageEnd(transaction: 5, trace: Array("Received: x\r\n".utf8), received: [], sign: false).encoded()
        writeAll(fd, stream)
        #expect(try readMessages(fd, count: 1).messages == [.messageStored(transaction: 5, queueID: 0xABC)])
        let got = rec.messages.withLock { $0 }
        let chunks = got.compactMap { m -> [UInt8]? in if case .messageChunk(_, let b) = m { return b } else { return nil } }
        #expect(Array(chunks.joined()) == body)
        #expect(got.first == .hello(version: IPCMessage.version, role: .smtp))
        #expect(!rec.isClosed)
        // An orderly close between frames is not an error.
        shutdown(fd, Int32(SHUT_WR))
        #expect(waitUntil(10) { rec.isClosed })
        #expect(rec.error == nil)
    }

    @Test(arguments: HostileInput.allCases)
    func hostileInputClosesOnlyThatChannel(_ input: HostileInput) throws {
        let running = try RunningLoop()
        defer { running.stop() }
        // A good channel alongside, before and after.
        let goodRec = Recorder()
        let goodFD = try running.channel(goodRec)
        defer { close(goodFD) }
        writeAll(goodFD, IPCMessage.hello(version: IPCMessage.version, role: .smtp).encoded() + IPCMessage.messageBegin(transaction: 1, envelope).encoded())

        let rec = Recorder()
        let fd = try running.channel(rec)
        defer { close(fd) }
        writeAll(fd, input.bytes)
        if input.endsWithEOF { shutdown(fd, Int32(SHUT_WR)) }
        #expect(waitUntil(10) { rec.isClosed }, "\(input)")
        guard case .protocolError(let e)? = rec.error else {
            Issue.record("\(input): closed without a protocol error: \(String(describing: rec.error))")
            return
        }
        #expect(input.matches(e), "\(input): \(e)")
        // Nothing after the bad part reached the delegate.
        let seen = rec.messages.withLock { $0 }
        #expect(!seen.contains(.messageAbort(transaction: 99)), "\(input)")
        // The peer sees the channel closed: after the greeting, EOF.
        let (after, eof) = try readMessages(fd, count: 2)
        #expect(eof && after.count <= 1, "\(input)")

        // The other channel still works end to end.
        writeAll(goodFD, IPCMessage.messageEnd(transaction: 1, trace: [], received: [], sign: false).encoded())
        let answers = try readMessages(goodFD, count: 2).messages
        #expect(answers == [.hello(version: IPCMessage.version, role: .queue), .messageStored(transaction: 1, queueID: 0xABC)], "\(input)")
        #expect(!goodRec.isClosed)
    }
}

enum HostileInput: CaseIterable, Sendable {
    case randomBytes, cutShortByEOF, oversizedLength, zeroLength, wrongVersion, wrongRole, noHello, chunkBeforeBegin, storedFromSmtp, overBodyLimit, badUTF8, trailingBytes

    var hello: [UInt8] { IPCMessage.hello(version: IPCMessage.version, role: .smtp).encoded() }
    /// What follows the bad part: must never reach the delegate.
    var tail: [UInt8] { IPCMessage.messageAbort(transaction: 99).encoded() }

    var bytes: [UInt8] {
        switch self {
        case .randomBytes:
            var rng = SplitMix(seed: 42)
            return hello + (0..<4096).map { _ in UInt8.random(in: 0...255, using: &rng) } + tail
        case .cutShortByEOF:
            return hello + Array(IPCMessage.messageBegin(transaction: 1, envelope).encoded().dropLast(3))
        case .oversizedLength:
            return hello + [0xff, 0xff, 0xff, 0xf0, 21] + tail
        case .zeroLength:
            return hello + [0, 0, 0, 0] + tail
        case .wrongVersion:
            return IPCMessage.hello(version: IPCMessage.version + 1, role: .smtp).encoded() + tail
        case .wrongRole:
            return IPCMessage.hello(version: IPCMessage.version, role: .parent).encoded() + tail
        case .noHello:
            return IPCMessage.messageBegin(transaction: 1, envelope).encoded() + tail
        case .chunkBeforeBegin:
            return hello + IPCMessage.messageChunk(transaction: 3, bytes: [1, 2, 3]).encoded() + tail
        case .storedFromSmtp:
            return hello + IPCMessage.messageBegin(transaction: 3, envelope).encoded() + IPCMessage.messageStored(transaction: 3, queueID: 1).encoded() + tail
        case .overBodyLimit:
            var s = hello + IPCMessage.messageBegin(transaction: 3, envelope).encoded()
            for _ in 0..<17 { s += IPCMessage.messageChunk(transaction: 3, bytes: Array(repeating: 0x41, count: IPCLimits.chunk)).encoded() }
            return s + tail
        case .badUTF8:
            var w = FrameWriter(type: 12)
            w.u32(1)
            w.data([0x61, 0xff, 0x62])
            return hello + w.finish() + tail
        case .trailingBytes:
            var f = IPCMessage.messageAbort(transaction: 3).encoded()
            f[3] += 2
            return hello + IPCMessage.messageBegin(transaction: 3, envelope).encoded() + f + [0, 0] + tail
        }
    }

    var endsWithEOF: Bool { self == .cutShortByEOF }

    func matches(_ e: IPCError) -> Bool {
        switch (self, e) {
        case (.randomBytes, _): return true
        case (.cutShortByEOF, .endedInFrame): return true
        case (.oversizedLength, .badLength), (.zeroLength, .badLength(0)): return true
        case (.wrongVersion, .versionMismatch): return true
        case (.wrongRole, .outOfOrder), (.noHello, .outOfOrder), (.chunkBeforeBegin, .outOfOrder), (.storedFromSmtp, .outOfOrder), (.overBodyLimit, .outOfOrder): return true
        case (.badUTF8, .badText), (.trailingBytes, .trailingBytes(2)): return true
        default: return false
        }
    }
}
