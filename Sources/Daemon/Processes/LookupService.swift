// The lookup process's work (privilege separation, docs/security.md): it holds the users files
// (scrypt hashes), the aliases and the recipient tables, and answers smtp's questions over IPC —
// does this user/password pair hold, what does this recipient resolve to, may this user send as
// this address. smtp never sees a hash or an aliases file. Every channel is hostile: its
// `ChannelGuard` refuses anything malformed or out of order, and the channel is then closed and
// logged; the other channels go on.
import Config
import Glibc
import IPC
import Policy
import Reactor
import SMTP

final class LookupService: IPCChannelDelegate {
    let authenticator: Authenticator
    let resolver: SharedResolver
    /// The key of the tokens it issues to users it accepts (`UserToken`).
    let tokenKey: [UInt8]
    let log: (String) -> Void
    /// The open channels (an IPCChannel's delegate is weak; the service keeps them). Loop thread.
    var channels: [ObjectIdentifier: IPCChannel] = [:]
    /// Channels closed for breaking the protocol (for tests and the status output).
    private(set) var refusedChannels = 0

    init(authenticator: Authenticator, resolver: SharedResolver, tokenKey: [UInt8], log: @escaping (String) -> Void) {
        self.authenticator = authenticator
        self.resolver = resolver
        self.tokenKey = tokenKey
        self.log = log
    }

    /// Serves an smtp channel on `loop` (its thread only).
    func adopt(fd: Int32, loop: EventLoop) throws(ReactorError) {
        let c = try RoleProcess.adoptChannel(fd: fd, loop: loop, rules: ChannelGuard(local: .lookup, peer: .smtp), delegate: self)
        channels[ObjectIdentifier(c)] = c
    }

    static func party(_ channel: IPCChannel) -> UInt64 { UInt64(UInt(bitPattern: ObjectIdentifier(channel).hashValue)) }

    /// A client address as a party of the password-check pool within its channel's group
    /// (FNV-1a of its text): a flood from one address waits its turn behind the channel's other
    /// clients, and a channel's flood behind the other channels.
    static func party(client: String) -> UInt64 {
        var h: UInt64 = 0xcbf2_9ce4_8422_2325
        for b in client.utf8 { h = (h ^ UInt64(b)) &* 0x100_0000_01b3 }
        return h
    }

    func channel(_ channel: IPCChannel, received message: IPCMessage) {
        switch message {
        case .authCheck(let request, let user, let password, let client):
            guard let loop = channel.connection?.loop else { return }
            let box = Transfer(channel)
            let key = tokenKey
            // The channel is the party: an smtp that floods checks waits its turn behind the others.
            authenticator.check(user: user, password: password, client: client, group: Self.party(channel), party: Self.party(client: client), loop: loop) { outcome in
                switch outcome {
                case .authenticated:
                    box.value.send(.authAnswer(request: request, .accepted, token: UserToken.make(key: key, user: user, now: Int64(time(nil)))))
                case .refused(let r):
                    box.value.send(.authAnswer(request: request, r.code == 454 ? .tryLater : .refused))
                }
            }
        case .resolveRecipient(let request, let recipient):
            channel.send(.resolved(request: request, resolver.current.resolve(recipient)))
        case .senderCheck(let request, let user, let sender):
            channel.send(.senderAnswer(request: request, allowed: Policy.senderRefusal(user: user, sender: sender, tables: resolver.current) == nil))
        default:
            // (ChannelGuard lets nothing else through from smtp.)
            break
        }
    }

    func channelClosed(_ channel: IPCChannel, error: IPCChannelError?) {
        channels[ObjectIdentifier(channel)] = nil
        // Checks it still had waiting are dropped: nobody is left to answer.
        let dropped = authenticator.cancel(group: Self.party(channel))
        if dropped > 0 { log("lookup: a channel from smtp closed: \(dropped) AUTH check(s) still waiting dropped") }
        if let error {
            if case .protocolError = error { refusedChannels += 1 }
            log("lookup: closed a channel from smtp: \(error)")
        }
    }
}
