// One smtp loop's channels to the lookup and queue processes (privilege separation): requests
// numbered per channel and their answers routed back to whoever asked, transactions numbered
// per loop, and the body's chunks sent as they come with backpressure: once too much waits for
// the queue, the sessions that wrote stop reading their clients until the channel drains.
// A channel that closes (the other process died) answers everything still waiting with a
// temporary failure and refuses what comes later with the same, until the parent restarts
// the set. Loop thread only.
import Glibc
import IPC
import Policy
import Reactor
import SMTP

final class SMTPLinks: IPCChannelDelegate {
    let lookup: IPCChannel
    let queue: IPCChannel
    var nextRequest: UInt32 = 1
    var nextTransaction: UInt32 = 1
    /// Answers waited for, by request id (ids are shared by both channels: never the same twice
    /// in flight).
    var waiting: [UInt32: (IPCMessage?) -> Void] = [:]
    /// Transactions waiting for messageStored or messageRefused.
    var transactions: [UInt32: (IPCMessage?) -> Void] = [:]
    /// Transactions whose end went to the queue: from then on smtp never aborts them (an abort
    /// could cross the queue's answer on the way and break the channel); an answer nobody waits
    /// for any more is dropped.
    var ended: Set<UInt32> = []
    /// The process is stopping: channels closing now are expected.
    var closing = false
    /// Sessions whose input is held until the queue channel drains.
    var held: [() -> Void] = []
    /// Either process is gone: everything is refused with a temporary failure.
    private(set) var broken: String? = nil
    /// The spool's state as the queue last sent it (`spoolState`); nil before the first.
    private(set) var spool: (refusal: Reply?, reason: String, room: UInt64)? = nil
    let log: (String) -> Void
    /// Bytes waiting for the queue past which sessions stop reading.
    static let highWater = 256 * 1024
    /// The body piece a session fills before it goes to the queue (frames may be up to
    /// `IPCLimits.chunk`): with a thousand uploads held at once, each session's piece and its
    /// copy waiting on the channel are what smtp holds (perf/memory-uploads.sh).
    static let chunkTarget = 16 * 1024

    let loop: EventLoop

    init(loop: EventLoop, lookup lookupFD: Int32, queue queueFD: Int32, log: @escaping (String) -> Void) throws(ReactorError) {
        self.log = log
        self.loop = loop
        lookup = try IPCChannel(loop: loop, fd: lookupFD, rules: ChannelGuard(local: .smtp, peer: .lookup), delegate: nil)
        queue = try IPCChannel(loop: loop, fd: queueFD, rules: ChannelGuard(local: .smtp, peer: .queue, maxBody: Int.max), delegate: nil)
        // Answers are read however much body waits to go out (the sessions hold, not the channel).
        lookup.connection?.outputHighWater = Int.max
        queue.connection?.outputHighWater = Int.max
        lookup.delegate = self
        queue.delegate = self
    }

    /// A question unanswered this long is answered nil (a temporary failure) and its late
    /// answer dropped: a process that stopped reading (its disk frozen) never hangs a session.
    static let answerTimeout: UInt64 = 60_000_000_000

    /// Asks lookup or queue; `answer` gets the reply (nil when the channel is gone, or after
    /// `answerTimeout`).
    func ask(_ channel: IPCChannel, _ make: (UInt32) -> IPCMessage, answer: @escaping (IPCMessage?) -> Void) {
        // (Never answered within the call: the asker is in the middle of a session's turn, and a
        // decision said to come later must come later.)
        guard broken == nil else { return later { answer(nil) } }
        let r = nextRequest
        nextRequest = nextRequest == UInt32.max ? 1 : nextRequest + 1
        let timer = loop.schedule(after: Self.answerTimeout) { [weak self] in
            guard let self, let f = self.waiting.removeValue(forKey: r) else { return }
            self.log("smtp: no answer to request \(r) in \(Self.answerTimeout / 1_000_000_000) s: answered with a temporary failure")
            f(nil)
        }
        waiting[r] = { [loop] m in
            loop.cancel(timer)
            answer(m)
        }
        channel.send(make(r))
    }

    /// A new transaction to the queue: its id, and `answer` for the queue's verdict.
    func begin(_ envelope: IPCEnvelope, answer: @escaping (IPCMessage?) -> Void) -> UInt32? {
        guard broken == nil else { return nil }
        let t = nextTransaction
        nextTransaction = nextTransaction == UInt32.max ? 1 : nextTransaction + 1
        transactions[t] = answer
        queue.send(.messageBegin(transaction: t, envelope))
        return t
    }

    func chunk(_ t: UInt32, _ bytes: [UInt8]) {
        guard broken == nil, transactions[t] != nil else { return }
        queue.send(.messageChunk(transaction: t, bytes: bytes))
    }

    func end(_ t: UInt32, trace: [UInt8], received: [UInt8], sign: Bool, deadline: UInt64) {
        guard broken == nil, transactions[t] != nil else { return }
        ended.insert(t)
        queue.send(.messageEnd(transaction: t, trace: trace, received: received, sign: sign, deadline: deadline))
    }

    /// The session is done with this transaction without the queue's verdict (refused here,
    /// or the client went away). Before its end the queue is told to drop it; after, the queue's
    /// answer is awaited and dropped (the message may be stored: the client got no 250 and may
    /// send it again, as with any SMTP server whose client leaves after the dot).
    func abort(_ t: UInt32) {
        guard transactions[t] != nil, broken == nil else {
            transactions[t] = nil
            return
        }
        if ended.contains(t) {
            transactions[t] = { _ in }
            return
        }
        transactions[t] = nil
        queue.send(.messageAbort(transaction: t))
    }

    /// Too much waits for the queue: the caller should hold its input until `release` runs.
    var mustHold: Bool { (queue.connection?.bufferedOutput ?? 0) > Self.highWater }

    func whenDrained(_ release: @escaping () -> Void) {
        if mustHold { held.append(release) } else { release() }
    }

    /// Runs `f` on this loop after the current turn's work.
    func later(_ f: @escaping () -> Void) {
        let box = Transfer(f)
        loop.execute { box.value() }
    }

    func channel(_ channel: IPCChannel, received message: IPCMessage) {
        switch message {
        case .authAnswer(let r, _, _), .resolved(let r, _), .senderAnswer(let r, _), .mailAnswer(let r, _):
            // (Taken out first: the answer may ask again, which touches `waiting`.)
            let answer = waiting.removeValue(forKey: r)
            answer?(message)
        case .messageStored(let t, _), .messageRefused(let t, _):
            ended.remove(t)
            let answer = transactions.removeValue(forKey: t)
            answer?(message)
        case .spoolState(let refusal, let reason, let room):
            spool = (refusal, reason, room)
        default:
            break
        }
    }

    /// The queue's part of MAIL as its last `spoolState` says: `.some(nil)` go on, `.some(…)`
    /// refuse with that reply and why (the spool in trouble, or a declared size its disk has no
    /// room for); nil when nothing was said yet (then it is asked).
    func spoolVerdict(size: Int?) -> (reply: Reply, why: String)?? {
        guard broken == nil, let s = spool else { return nil }
        if let refusal = s.refusal { return .some((refusal, s.reason)) }
        if let size, UInt64(max(size, 0)) > s.room { return .some((Policy.storageError, "SIZE=\(size) does not fit on the spool's disk")) }
        return .some(nil)
    }

    func channelWritable(_ channel: IPCChannel) {
        guard channel === queue, !mustHold, !held.isEmpty else { return }
        let go = held
        held = []
        for f in go { f() }
    }

    func channelClosed(_ channel: IPCChannel, error: IPCChannelError?) {
        guard broken == nil else { return }
        let who = channel === queue ? "queue" : "lookup"
        broken = who
        if !closing {
            log("smtp: the channel to \(who) closed\(error.map { " (\($0))" } ?? ""): mail is refused with 451 until ternd restarts the processes")
            // When the other process died the parent restarts the set and stops this one first.
            // When it did not (the channel broke on its own), nobody would: this process stops,
            // and the parent starts a new smtp with new channels.
            loop.schedule(after: 2_000_000_000) { [log] in
                log("smtp: stopping: the channel to \(who) is gone and the process set was not restarted; the parent starts a new smtp")
                _exit(3)
            }
        }
        let w = waiting, t = transactions, h = held
        waiting = [:]
        transactions = [:]
        held = []
        later {
            for f in w.values { f(nil) }
            for f in t.values { f(nil) }
            for f in h { f() }
        }
        // (The other channel stays open: the parent restarts the set.)
    }
}
