# Shared by the perf scripts (source it after `cd` to the repository).

# Re-runs the calling script in a private network namespace with only loopback up, so no traffic
# can leave the machine; TRACE=1 traces the script. Call as: tern_enter_netns "$@"
tern_enter_netns() {
    if [ -z "${TERN_IN_NETNS:-}" ]; then
        exec unshare -n env TERN_IN_NETNS=1 "$0" "$@"
    fi
    ip link set lo up
    [ -z "${TRACE:-}" ] || set -x
}

# The folder of the release binaries (make build-release), unless BINDIR is set.
tern_bindir() {
    echo "${BINDIR:-$(swift build -c release --static-swift-stdlib --scratch-path .build-release --show-bin-path)}"
}

# The median of the numbers on stdin, one a line.
median() {
    sort -g | awk '{a[NR]=$1} END {if (NR==0) print "n/a"; else if (NR%2) print a[(NR+1)/2]; else print (a[NR/2]+a[NR/2+1])/2}'
}

# Waits (up to 10 s) until something listens on 127.0.0.1:PORT.
wait_port() {
    for _ in $(seq 200); do (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0; sleep 0.05; done
    return 1
}

# Resident memory of a process, KiB.
rss_kib() { awk '/VmRSS/ {print $2}' "/proc/$1/status"; }

# The server PID's RSS when idle, then while perf/idle_sessions.py holds N sessions after EHLO on
# 127.0.0.1:PORT; prints "IDLE_KIB HELD_KIB". Extra arguments go to idle_sessions.py (starttls).
idle_session_rss() { # pid port n [starttls]
    local pid=$1 port=$2 n=$3; shift 3
    sleep 0.5
    local idle held ready
    idle=$(rss_kib "$pid")
    coproc HOLD { python3 perf/idle_sessions.py 127.0.0.1 "$port" "$n" "$@"; }
    read -r ready <&"${HOLD[0]}"
    sleep 1
    held=$(rss_kib "$pid")
    echo >&"${HOLD[1]}"
    wait "$HOLD_PID" 2>/dev/null || true
    [ "$ready" = ready ] || echo "idle sessions: $ready" >&2
    echo "$idle $held"
}
