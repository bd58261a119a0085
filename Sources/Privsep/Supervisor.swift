// The parent's children: started with `tern_spawn`, reaped, and restarted as `RestartPolicy`
// says. The parent calls `reap` when SIGCHLD arrives (its signalfd), so a child that dies is
// replaced within that turn; `stopAll` ends them all in order (SIGTERM, then SIGKILL after the
// grace). Parent thread only.

import CTernSystem
import Glibc
import IPC
import Reactor

public enum SpawnError: Error, Sendable, Equatable, CustomStringConvertible {
    case spawn(path: String, errno: Int32)

    public var description: String {
        switch self {
        case .spawn(let path, let e): return "cannot start \(path): \(String(cString: strerror(e)))"
        }
    }
}

public final class Supervisor {
    /// How to start a child of one role.
    public struct ChildSpec {
        public var role: IPCRole
        public var path: String
        public var arguments: [String]
        public var environment: [String]
        /// The descriptors the child gets as 0, 1, 2, 3, … (made fresh for each start: a
        /// restarted child needs new channels).
        public var descriptors: () -> [Int32]
        /// Called after the child started with the descriptors it was given (the parent closes
        /// its copies of the child's ends).
        public var started: (pid_t, [Int32]) -> Void
        /// Arguments decided at each start, after `arguments` (a replacement says so).
        public var moreArguments: () -> [String] = { [] }

        public init(role: IPCRole, path: String, arguments: [String], environment: [String] = [], descriptors: @escaping () -> [Int32] = { [0, 1, 2] }, started: @escaping (pid_t, [Int32]) -> Void = { _, _ in }) {
            self.role = role
            self.path = path
            self.arguments = arguments
            self.environment = environment
            self.descriptors = descriptors
            self.started = started
        }
    }

    let specs: [ChildSpec]
    public private(set) var policy: RestartPolicy
    /// Running children by pid.
    public private(set) var children: [pid_t: IPCRole] = [:]
    let log: (String) -> Void

    public init(_ specs: [ChildSpec], policy: RestartPolicy = RestartPolicy(), log: @escaping (String) -> Void) {
        self.specs = specs
        self.policy = policy
        self.log = log
    }

    /// The child of `role` started last and still running (not one being replaced).
    public func pid(of role: IPCRole) -> pid_t? {
        guard let p = current[role], children[p] != nil, !retiring.contains(p) else { return nil }
        return p
    }
    var current: [IPCRole: pid_t] = [:]

    /// Starts every child, in the order given (queue and lookup before the network-facing ones).
    public func startAll() throws(SpawnError) {
        for s in specs { try start(s) }
    }

    func start(_ s: ChildSpec) throws(SpawnError) {
        let fds = s.descriptors()
        let argv = ([s.path] + s.arguments + s.moreArguments()).map { strdup($0) } + [nil]
        let envp = s.environment.map { strdup($0) } + [nil]
        defer {
            for p in argv { free(p) }
            for p in envp { free(p) }
        }
        var pid: pid_t = 0
        let rc = fds.withUnsafeBufferPointer { tern_spawn(s.path, argv, envp, $0.baseAddress, Int32(fds.count), &pid) }
        guard rc == 0 else { throw .spawn(path: s.path, errno: rc) }
        children[pid] = s.role
        current[s.role] = pid
        s.started(pid, fds)
    }

    /// Reaps every child that ended and carries out the policy's answer. Returns the reason
    /// when the policy gives up (the parent then stops); nil otherwise.
    public func reap(now: Double) -> String? {
        // Only our children, by pid: waitpid(-1) would also take the status of a delivery
        // command another part of the parent is waiting for.
        for (pid, role) in children.sorted(by: { $0.key < $1.key }) {
            var status: Int32 = 0
            guard waitpid(pid, &status, WNOHANG) == pid else { continue }
            children[pid] = nil
            let how = ChildExit(status: status)
            if retiring.remove(pid) != nil {
                log("ternd: \(role) (pid \(pid)) replaced: \(how)")
                continue
            }
            switch policy.exited(role, how, now: now) {
            case .none:
                continue
            case .restart(let r):
                log("ternd: \(role) (pid \(pid)) \(how); restarting it")
                do throws(SpawnError) {
                    try startRole(r)
                } catch {
                    return "\(error)"
                }
            case .restartAll:
                // (The crash history is kept: five within a minute still stop ternd.)
                log("ternd: \(role) (pid \(pid)) \(how); restarting every process")
                stopAll(grace: 5)
                do throws(SpawnError) {
                    try startAll()
                } catch {
                    return "\(error)"
                }
                return nil
            case .giveUp(let why):
                return why
            }
        }
        return nil
    }

    /// Starts one more child of `role` (a reload starts a new smtp before the old one retires).
    public func startRole(_ role: IPCRole) throws(SpawnError) {
        guard let s = specs.first(where: { $0.role == role }) else { return }
        try start(s)
    }

    /// Pids whose exit is expected (a replaced child draining): not a crash, not restarted.
    var retiring: Set<pid_t> = []

    /// Tells `pid` it is replaced (`signal`: SIGTERM unless the role takes another); its exit
    /// is expected.
    public func retire(_ pid: pid_t, signal: Int32 = SIGTERM) {
        guard children[pid] != nil else { return }
        retiring.insert(pid)
        kill(pid, signal)
    }

    /// SIGTERM to every child of `role`, SIGKILL to any still running `grace` seconds later;
    /// waits for them. Their exits are expected.
    public func stop(_ role: IPCRole, grace: Double) {
        let pids = children.filter { $0.value == role }.map(\.key)
        for pid in pids {
            retiring.insert(pid)
            kill(pid, SIGTERM)
        }
        let deadline = ReactorSystem.now() + UInt64(grace * 1e9)
        var left = Set(pids)
        while !left.isEmpty {
            for pid in left {
                var status: Int32 = 0
                let r = waitpid(pid, &status, WNOHANG)
                if r == pid || (r < 0 && errno == ECHILD) {
                    left.remove(pid)
                    children[pid] = nil
                    retiring.remove(pid)
                }
            }
            if left.isEmpty { break }
            if ReactorSystem.now() >= deadline {
                for pid in left {
                    var status: Int32 = 0
                    log("ternd: \(role) (pid \(pid)) still running \(Int(grace)) s after SIGTERM: killed")
                    kill(pid, SIGKILL)
                    waitpid(pid, &status, 0)
                    children[pid] = nil
                    retiring.remove(pid)
                }
                break
            }
            usleep(10_000)
        }
    }

    /// SIGTERM to every child, SIGKILL to any still running `grace` seconds later; waits for
    /// all of them. Their exits are not crashes.
    public func stopAll(grace: Double) {
        for pid in children.keys { kill(pid, SIGTERM) }
        let deadline = ReactorSystem.now() + UInt64(grace * 1e9)
        while !children.isEmpty {
            for pid in Array(children.keys) {
                var status: Int32 = 0
                let r = waitpid(pid, &status, WNOHANG)
                if r == pid || (r < 0 && errno == ECHILD) { children[pid] = nil }
            }
            if children.isEmpty { break }
            if ReactorSystem.now() >= deadline {
                for pid in children.keys {
                    var status: Int32 = 0
                    kill(pid, SIGKILL)
                    waitpid(pid, &status, 0)
                }
                children.removeAll()
                break
            }
            usleep(10_000)
        }
    }

    /// ternd is stopping: from now on, exits are expected.
    public func stopping() { policy.stop() }
}
