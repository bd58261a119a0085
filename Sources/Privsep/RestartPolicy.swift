// What the parent does when one of its children exits (privilege separation, docs/security.md):
// a sans-IO state machine, the clock's reading passed in. The supervisor (which reaps children
// and spawns them) feeds it exits and carries out what it answers.
//
//   a network-facing child (smtp, courier) that dies is restarted at once, alone: sessions on
//   other smtp processes go on; what got its 250 is in the queue's spool
//   the queue or lookup dying: the network-facing children are stopped and the whole set
//   started again (they hold channels to the one that died)
//   more than `maxCrashes` unexpected exits within `window` seconds: give up — stop ternd with a
//   clear message rather than loop
//   an exit while stopping (SIGTERM) is expected: nothing is restarted

import IPC

/// How a child ended, as waitpid(2) says.
public enum ChildExit: Sendable, Equatable, CustomStringConvertible {
    case exited(Int32)
    case signalled(Int32)

    /// Decodes a wait status.
    public init(status: Int32) {
        let sig = status & 0x7f
        self = sig == 0 ? .exited((status >> 8) & 0xff) : .signalled(sig)
    }

    public var description: String {
        switch self {
        case .exited(let code): return "exited with status \(code)"
        case .signalled(let sig): return "killed by signal \(sig)\(Self.signalName(sig).map { " (\($0))" } ?? "")"
        }
    }

    static func signalName(_ sig: Int32) -> String? {
        switch sig {
        case 6: return "SIGABRT"
        case 9: return "SIGKILL"
        case 11: return "SIGSEGV"
        case 15: return "SIGTERM"
        case 31: return "SIGSYS: a system call off its seccomp allowlist"
        case 4: return "SIGILL"
        case 7: return "SIGBUS"
        default: return nil
        }
    }
}

public struct RestartPolicy: Sendable {
    public enum Action: Sendable, Equatable {
        /// Start this role again (and only it).
        case restart(IPCRole)
        /// Stop the network-facing children, then start every child again.
        case restartAll
        /// Stop ternd: `reason` says why (logged, and the exit status is 1).
        case giveUp(reason: String)
        /// Expected (ternd is stopping): nothing to do.
        case none
    }

    public let maxCrashes: Int
    public let window: Double
    var crashes: [Double] = []
    public private(set) var stopping = false

    public init(maxCrashes: Int = 5, window: Double = 60) {
        self.maxCrashes = maxCrashes
        self.window = window
    }

    /// ternd is stopping (SIGTERM): the children's exits are expected from now on.
    public mutating func stop() { stopping = true }

    /// A child of `role` ended `how` at time `now` (seconds, monotonic).
    public mutating func exited(_ role: IPCRole, _ how: ChildExit, now: Double) -> Action {
        if stopping { return .none }
        crashes.append(now)
        crashes.removeAll { $0 <= now - window }
        if crashes.count >= maxCrashes {
            return .giveUp(reason: "\(crashes.count) child processes ended within \(Int(window)) s (the last: ternd: \(role), \(how)); stopping rather than restarting in a loop")
        }
        switch role {
        case .smtp, .courier: return .restart(role)
        case .queue, .lookup: return .restartAll
        case .parent: return .giveUp(reason: "the parent cannot be its own child")
        }
    }
}
