// Delivery to a command: the MDA (`deliver mda "..."`) and pipe aliases. An argument vector,
// no shell; the message on stdin; exit 0 = delivered, 75 (EX_TEMPFAIL) = try again later, any
// other status = permanent failure; past the timeout the command is killed and it is temporary.

import CTernSystem
import Glibc

public enum CommandDelivery {
    /// Replaces %{user}, %{domain}, %{rcpt}, %{sender} in each argument (after splitting, so a
    /// value can never become two arguments).
    public static func expand(_ argv: [String], user: String, domain: String, rcpt: String, sender: String) -> [String] {
        argv.map { Template($0).expand(user: user, domain: domain, rcpt: rcpt, sender: sender) }
    }

    /// Runs `argv` with `input` on stdin and `environment` added to a minimal PATH.
    public static func run(_ argv: [String], input: [UInt8], environment: [String: String] = [:], timeout: Double) -> Result<String, DeliveryError> {
        guard let program = argv.first, program.hasPrefix("/") else { return .failure(.permanent("the command must be an absolute path")) }
        var inPipe: [Int32] = [0, 0]
        var outPipe: [Int32] = [0, 0]
        guard tern_pipe_cloexec(&inPipe) == 0 else { return .failure(.temporary("pipe: \(String(cString: strerror(errno)))")) }
        guard tern_pipe_cloexec(&outPipe) == 0 else {
            close(inPipe[0]); close(inPipe[1])
            return .failure(.temporary("pipe: \(String(cString: strerror(errno)))"))
        }
        var env = ["PATH=/usr/local/bin:/usr/bin:/bin"]
        for (k, v) in environment.sorted(by: { $0.key < $1.key }) { env.append("\(k)=\(v)") }
        let cArgs = argv.map { strdup($0) } + [nil]
        let cEnv = env.map { strdup($0) } + [nil]
        defer {
            for p in cArgs { free(p) }
            for p in cEnv { free(p) }
        }
        var pid: pid_t = 0
        // (tern_spawn: the signal mask and dispositions reset, stdin, stdout and stderr set.)
        let rc = [inPipe[0], outPipe[1], outPipe[1]].withUnsafeBufferPointer { tern_spawn(program, cArgs, cEnv, $0.baseAddress, 3, &pid) }
        close(inPipe[0])
        close(outPipe[1])
        guard rc == 0 else {
            close(inPipe[1]); close(outPipe[0])
            let why = "\(program): \(String(cString: strerror(rc)))"
            return .failure(rc == ENOENT || rc == EACCES ? .permanent(why) : .temporary(why))
        }
        let deadline = monotonic() + timeout
        // Feed stdin and collect at most 4 KiB of output, without blocking past the deadline.
        _ = fcntl(inPipe[1], F_SETFL, O_NONBLOCK)
        _ = fcntl(outPipe[0], F_SETFL, O_NONBLOCK)
        var written = 0
        var inOpen = true
        var output: [UInt8] = []
        var buf = [UInt8](repeating: 0, count: 4096)
        var outOpen = true
        if input.isEmpty { close(inPipe[1]); inOpen = false }
        var status: Int32 = 0
        var exited = false
        while !exited {
            let left = deadline - monotonic()
            if left <= 0 {
                kill(pid, SIGKILL)
                waitpid(pid, &status, 0)
                if inOpen { close(inPipe[1]) }
                close(outPipe[0])
                return .failure(.temporary("\(program) timed out after \(Int(timeout)) s"))
            }
            var fds: [pollfd] = []
            if inOpen { fds.append(pollfd(fd: inPipe[1], events: Int16(POLLOUT), revents: 0)) }
            if outOpen { fds.append(pollfd(fd: outPipe[0], events: Int16(POLLIN), revents: 0)) }
            if !fds.isEmpty { _ = poll(&fds, nfds_t(fds.count), Int32(min(left, 0.05) * 1000) + 1) } else { usleep(5000) }
            if inOpen {
                let n = input.withUnsafeBytes { write(inPipe[1], $0.baseAddress! + written, input.count - written) }
                if n > 0 { written += n }
                if written == input.count || (n < 0 && errno != EAGAIN && errno != EINTR) {
                    close(inPipe[1])
                    inOpen = false
                }
            }
            if outOpen {
                let n = buf.withUnsafeMutableBytes { read(outPipe[0], $0.baseAddress, $0.count) }
                if n > 0 { if output.count < 4096 { output += buf[..<min(n, 4096 - output.count)] } }
                if n == 0 { outOpen = false }
            }
            let w = waitpid(pid, &status, WNOHANG)
            if w == pid { exited = true }
        }
        if inOpen { close(inPipe[1]) }
        close(outPipe[0])
        let text = String(decoding: output, as: UTF8.self).split(whereSeparator: \.isNewline).joined(separator: " ")
        let detail = text.isEmpty ? "" : ": \(text.prefix(200))"
        // WIFEXITED / WEXITSTATUS / WTERMSIG are macros: decode by hand.
        if status & 0x7F == 0 {
            let code = (status >> 8) & 0xFF
            switch code {
            case 0: return .success("\(program) exit 0")
            case 75: return .failure(.temporary("\(program) exit 75 (try again later)\(detail)"))
            default: return .failure(.permanent("\(program) exit \(code)\(detail)"))
            }
        }
        return .failure(.temporary("\(program) killed by signal \(status & 0x7F)\(detail)"))
    }

    static func monotonic() -> Double {
        var ts = timespec()
        clock_gettime(CLOCK_MONOTONIC, &ts)
        return Double(ts.tv_sec) + Double(ts.tv_nsec) / 1e9
    }
}
