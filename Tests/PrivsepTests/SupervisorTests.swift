// The supervisor with real child processes (/bin/sleep and /bin/sh standing in for ternd's
// roles): a killed network-facing child is back within a second and alone; a killed queue brings
// the whole set back; five crashes within a minute stop it; descriptors reach the child as 3, 4…;
// stopping leaves no child behind.

import CTernSystem
import Foundation
import Glibc
import IPC
import Privsep
import Synchronization
import Testing

final class Lines: @unchecked Sendable {
    let lines = Mutex<[String]>([])
    func add(_ s: String) { lines.withLock { $0.append(s) } }
    var all: [String] { lines.withLock { $0 } }
}

func now() -> Double {
    var ts = timespec()
    clock_gettime(CLOCK_MONOTONIC, &ts)
    return Double(ts.tv_sec) + Double(ts.tv_nsec) / 1e9
}

/// Calls `reap` until `done` holds or `seconds` pass (as the parent would on each SIGCHLD).
func reapUntil(_ s: Supervisor, _ seconds: Double = 5, _ done: () -> Bool) -> (held: Bool, gaveUp: String?) {
    let end = now() + seconds
    while now() < end {
        if let why = s.reap(now: now()) { return (done(), why) }
        if done() { return (true, nil) }
        usleep(2000)
    }
    return (done(), nil)
}

func alive(_ pid: pid_t) -> Bool { kill(pid, 0) == 0 }

@Suite(.serialized) struct SupervisorTests {
    func sleepers(_ log: Lines) -> Supervisor {
        Supervisor([
            .init(role: .queue, path: "/bin/sleep", arguments: ["1000"]),
            .init(role: .lookup, path: "/bin/sleep", arguments: ["1000"]),
            .init(role: .smtp, path: "/bin/sleep", arguments: ["1000"]),
        ], log: log.add)
    }

    @Test func networkFacingChildBackWithinASecondAlone() throws {
        let log = Lines()
        let s = sleepers(log)
        try s.startAll()
        defer { s.stopAll(grace: 1) }
        let smtp = try #require(s.pid(of: .smtp))
        let queue = try #require(s.pid(of: .queue))
        let t0 = now()
        kill(smtp, SIGKILL)
        let r = reapUntil(s) { s.pid(of: .smtp).map { $0 != smtp } ?? false }
        #expect(r.held && r.gaveUp == nil)
        #expect(now() - t0 < 1, "restarted after \(now() - t0) s")
        #expect(s.pid(of: .queue) == queue && alive(queue), "the queue was left alone")
        #expect(log.all.contains("ternd: smtp (pid \(smtp)) killed by signal 9 (SIGKILL); restarting it"), "\(log.all)")
    }

    @Test func queueDeathRestartsTheSet() throws {
        let log = Lines()
        let s = sleepers(log)
        try s.startAll()
        defer { s.stopAll(grace: 1) }
        let before = [s.pid(of: .queue), s.pid(of: .lookup), s.pid(of: .smtp)].compactMap { $0 }
        #expect(before.count == 3)
        kill(before[0], SIGSEGV)
        let r = reapUntil(s) { s.children.count == 3 && Set(s.children.keys).isDisjoint(with: before) }
        #expect(r.held && r.gaveUp == nil, "\(s.children) \(before)")
        #expect(before.allSatisfy { !alive($0) }, "the old set is gone")
        #expect(log.all.contains { $0.hasPrefix("ternd: queue (pid \(before[0])) killed by signal 11 (SIGSEGV); restarting every process") }, "\(log.all)")
    }

    @Test func fiveCrashesInAMinuteStop() throws {
        let log = Lines()
        let s = sleepers(log)
        try s.startAll()
        defer { s.stopAll(grace: 1) }
        var why: String? = nil
        for _ in 0..<5 {
            guard let pid = s.pid(of: .smtp) else { break }
            kill(pid, SIGKILL)
            let r = reapUntil(s) { s.pid(of: .smtp).map { $0 != pid } ?? false }
            if let w = r.gaveUp {
                why = w
                break
            }
        }
        #expect(why?.contains("5 child processes ended within 60 s (the last: ternd: smtp, killed by signal 9 (SIGKILL))") == true, "\(String(describing: why))")
    }

    @Test func descriptorsReachTheChildInOrder() throws {
        var p: [Int32] = [0, 0]
        try #require(tern_pipe_cloexec(&p) == 0)
        defer { close(p[0]) }
        let devnull = open("/dev/null", O_RDWR | O_CLOEXEC)
        defer { close(devnull) }
        let s = Supervisor([
            .init(role: .smtp, path: "/bin/sh", arguments: ["-c", "echo channel-on-3 >&3; exec /bin/sleep 1000"],
                  descriptors: { [devnull, devnull, devnull, p[1]] }, started: { _, fds in close(fds[3]) })
        ], log: { _ in })
        try s.startAll()
        defer { s.stopAll(grace: 1) }
        var buf = [UInt8](repeating: 0, count: 64)
        let n = buf.withUnsafeMutableBytes { read(p[0], $0.baseAddress, 64) }
        #expect(n > 0 && String(decoding: buf[..<max(n, 0)], as: UTF8.self) == "channel-on-3\n")
    }

    @Test func stoppingLeavesNoChildAndRestartsNothing() throws {
        let s = sleepers(Lines())
        try s.startAll()
        let pids = Array(s.children.keys)
        s.stopping()
        kill(pids[0], SIGKILL)
        #expect(s.reap(now: now()) == nil)
        s.stopAll(grace: 1)
        #expect(s.children.isEmpty)
        #expect(pids.allSatisfy { !alive($0) })
    }

    @Test func aMissingProgramIsAnError() {
        let s = Supervisor([.init(role: .smtp, path: "/nonexistent/ternd", arguments: [])], log: { _ in })
        #expect(throws: SpawnError.spawn(path: "/nonexistent/ternd", errno: ENOENT)) { try s.startAll() }
    }
}
