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
