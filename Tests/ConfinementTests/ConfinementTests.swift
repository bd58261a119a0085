// The confinement privilege separation gives each child (confine.c), checked in forked children:
// the user change sticks and leaves no capability, no_new_privs is set, a system call off the
// allowlist kills with SIGSYS, a chroot hides the file system, and an unprivileged user cannot
// read a root-only file. Needs root (make test runs as root; the suite says so otherwise).

import CTernSystem
import Foundation
import Glibc
import Testing

func exitCode(_ status: Int32) -> Int32? { status & 0x7f == 0 ? (status >> 8) & 0xff : nil }
func signalNumber(_ status: Int32) -> Int32? {
    let s = status & 0x7f
    return s != 0 && s != 0x7f ? s : nil
}

/// What the probes need once confined: nothing else is allowed.
let probeCalls: [Int32] = [Int32(SYS_getuid), Int32(SYS_geteuid), Int32(SYS_getgid), Int32(SYS_getgroups), Int32(SYS_prctl), Int32(SYS_capget), Int32(SYS_exit), Int32(SYS_exit_group)]

@Suite(.enabled(if: getuid() == 0, "confinement needs root: run make test as root"))
struct ConfinementTests {
    let nobody = (uid: UInt32(65534), gid: UInt32(65534))

    func child(root: String? = nil, calls: [Int32]?, probe: Int32, path: String = "") -> Int32 {
        let list = calls ?? []
        return list.withUnsafeBufferPointer { b in
            tern_test_confined_child(nobody.uid, nobody.gid, root, b.baseAddress, calls == nil ? -1 : Int32(list.count), probe, path)
        }
    }

    @Test func userChangeSticksWithoutCapabilities() {
        let s = child(calls: probeCalls, probe: 0)
        #expect(exitCode(s) == 0, "status \(s): 10 uid, 11 no_new_privs, 12 capabilities, 13 groups, 20/21 confinement failed")
    }

    @Test func callOffTheListKillsWithSIGSYS() {
        let s = child(calls: probeCalls, probe: 1)
        #expect(signalNumber(s) == SIGSYS, "status \(s)")
        // The same child without the filter lives (socket is allowed): the probe can tell.
        let free = child(calls: nil, probe: 1)
        #expect(exitCode(free) == 30, "status \(free)")
    }

    @Test func chrootHidesTheFileSystem() throws {
        let empty = NSTemporaryDirectory() + "confine-\(UUID().uuidString)"
        try FileManager.default.createDirectory(atPath: empty, withIntermediateDirectories: false)
        defer { try? FileManager.default.removeItem(atPath: empty) }
        #expect(exitCode(child(root: empty, calls: nil, probe: 2, path: "/etc/passwd")) == 0)
        // Without the chroot the same file is there to open.
        #expect(exitCode(child(calls: nil, probe: 2, path: "/etc/passwd")) == 31)
    }

    @Test func unprivilegedUserCannotReadRootOnlyFiles() throws {
        let dir = NSTemporaryDirectory() + "confine-\(UUID().uuidString)"
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: false)
        defer { try? FileManager.default.removeItem(atPath: dir) }
        chmod(dir, 0o755)
        let secret = "\(dir)/key.pem"
        FileManager.default.createFile(atPath: secret, contents: Data("secret".utf8))
        chmod(secret, 0o600)
        #expect(exitCode(child(calls: nil, probe: 2, path: secret)) == 0)
        chmod(secret, 0o644)
        #expect(exitCode(child(calls: nil, probe: 2, path: secret)) == 31)
    }

    @Test func oversizedAllowlistRefusedBeforeAnythingIsInstalled() {
        let many = [Int32](repeating: Int32(SYS_getpid), count: 600)
        #expect(many.withUnsafeBufferPointer { tern_seccomp_allow($0.baseAddress, 600) } == -EINVAL)
        // (This process is not confined: it can still make a socket.)
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        #expect(fd >= 0)
        close(fd)
    }
}

@Suite struct ProcessTitleTests {
    /// `ps` shows the role: /proc/PID/cmdline is the title, /proc/PID/comm its first 15 bytes.
    @Test func titleShownByPs() throws {
        let pid = tern_test_titled_child(CommandLine.argc, CommandLine.unsafeArgv, "ternd: smtp")
        try #require(pid > 0)
        defer {
            var status: Int32 = 0
            kill(pid, SIGKILL)
            waitpid(pid, &status, 0)
        }
        func read(_ what: String) -> String {
            (try? String(contentsOfFile: "/proc/\(pid)/\(what)", encoding: .utf8)) ?? ""
        }
        var cmdline = ""
        for _ in 0..<5000 {
            cmdline = read("cmdline").trimmingCharacters(in: CharacterSet(charactersIn: "\0"))
            if cmdline == "ternd: smtp" { break }
            usleep(1000)
        }
        #expect(cmdline == "ternd: smtp")
        #expect(read("comm") == "ternd: smtp\n")
    }
}
