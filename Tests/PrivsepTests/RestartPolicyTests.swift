// The parent's answer to a child's exit, with the clock's reading passed in: network-facing
// children alone, the queue or lookup with the whole set, nothing while stopping, and a stop
// rather than a loop after five unexpected exits within a minute.

import IPC
import Privsep
import Testing

@Suite struct RestartPolicyTests {
    @Test func whoIsRestarted() {
        var p = RestartPolicy()
        #expect(p.exited(.smtp, .signalled(9), now: 0) == .restart(.smtp))
        #expect(p.exited(.courier, .exited(1), now: 100) == .restart(.courier))
        #expect(p.exited(.queue, .signalled(11), now: 200) == .restartAll)
        #expect(p.exited(.lookup, .exited(70), now: 300) == .restartAll)
    }

    @Test func fiveWithinAMinuteStops() {
        var p = RestartPolicy(maxCrashes: 5, window: 60)
        for t in 0..<4 { #expect(p.exited(.smtp, .signalled(31), now: Double(t) * 10) == .restart(.smtp)) }
        guard case .giveUp(let why) = p.exited(.smtp, .signalled(31), now: 40) else {
            Issue.record("the fifth crash within a minute restarted again")
            return
        }
        #expect(why.contains("5 child processes ended within 60 s") && why.contains("SIGSYS"), "\(why)")
    }

    @Test func crashesOutsideTheWindowAreForgotten() {
        var p = RestartPolicy(maxCrashes: 5, window: 60)
        // One every 15.1 s: never five within any 60 s.
        for t in 0..<50 { #expect(p.exited(.courier, .signalled(9), now: Double(t) * 15.1) == .restart(.courier), "crash \(t)") }
        // Four early; at 60.5 the first has left the window (four in it): restarted.
        var q = RestartPolicy(maxCrashes: 5, window: 60)
        for t in [0.0, 1, 2, 3] { _ = q.exited(.smtp, .exited(1), now: t) }
        #expect(q.exited(.smtp, .exited(1), now: 60.5) == .restart(.smtp))
        // (1, 2, 3, 60.5 and 60.9: five within 60 s.)
        if case .giveUp = q.exited(.smtp, .exited(1), now: 60.9) {} else { Issue.record("five within 60 s did not stop") }
    }

    @Test func stoppingExpectsExits() {
        var p = RestartPolicy()
        p.stop()
        for role in [IPCRole.smtp, .courier, .queue, .lookup] { #expect(p.exited(role, .exited(0), now: 1) == .none) }
        for t in 0..<10 { #expect(p.exited(.smtp, .signalled(9), now: Double(t)) == .none) }
    }

    @Test func waitStatusesDecoded() {
        #expect(ChildExit(status: 0) == .exited(0))
        #expect(ChildExit(status: 75 << 8) == .exited(75))
        #expect(ChildExit(status: 9) == .signalled(9))
        #expect(ChildExit(status: 31 | 0x80) == .signalled(31))  // (core dumped)
        #expect("\(ChildExit.signalled(31))" == "killed by signal 31 (SIGSYS: a system call off its seccomp allowlist)")
        #expect("\(ChildExit.exited(3))" == "exited with status 3")
    }
}
