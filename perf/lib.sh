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

# A Postfix of our own in folder PF (config, queue, data, Maildirs), smtpd on 127.0.0.1:PORT, no
# chroot, with the settings every comparison shares in main.cf; the caller appends its own
# (cat >>"$PF/conf/main.cf") and starts it: postfix -c "$PF/conf" start-fg.
postfix_folder() { # PF PORT
    local pf=$1 port=$2
    mkdir -p "$pf/conf" "$pf/queue" "$pf/data" "$pf/mail"
    chown postfix:postfix "$pf/data" "$pf/mail"
    cp /usr/share/postfix/master.cf.dist "$pf/conf/master.cf"
    sed -i "s/^smtp      inet/$port      inet/" "$pf/conf/master.cf"
    sed -i -E 's/^([a-z0-9]+ +(unix|inet|unix-dgram|fifo|pass) +[-ny] +[-ny] +)y/\1n/' "$pf/conf/master.cf"  # no chroot
    cat >"$pf/conf/main.cf" <<CF
compatibility_level = 3.6
queue_directory = $pf/queue
data_directory = $pf/data
mail_owner = postfix
myhostname = pf.example.test
mydestination =
inet_interfaces = 127.0.0.1
inet_protocols = ipv4
mynetworks = 127.0.0.0/8
smtpd_recipient_restrictions = permit_mynetworks, reject_unauth_destination
maillog_file = $pf/maillog
default_process_limit = 200
smtpd_client_connection_count_limit = 0
smtpd_client_connection_rate_limit = 0
CF
}

# OpenSMTPD's Debian package (it conflicts with postfix, so it is fetched and unpacked, never
# installed), cached here. Call opensmtpd_fetch before tern_enter_netns (the namespace has no
# network); it returns non-zero when the package cannot be had.
OS_PKG=/var/tmp/tern-opensmtpd-pkg
opensmtpd_fetch() {
    [ -n "${TERN_IN_NETNS:-}" ] && return 0
    ls "$OS_PKG"/opensmtpd_*.deb >/dev/null 2>&1 && return 0
    mkdir -p "$OS_PKG" && chmod 777 "$OS_PKG"
    (cd "$OS_PKG" && apt-get download opensmtpd >/dev/null 2>&1)
}

# Unpacks OpenSMTPD into DIR/root and writes DIR/smtpd.conf: listen on 127.0.0.1:2527, relay
# relay.example to the receiver at 127.0.0.1:PORT. Makes its users (Debian's build runs as
# opensmtpd/opensmtpq, chrooted to /var/lib/opensmtpd/empty). Non-zero when it cannot.
opensmtpd_unpack() {  # DIR PORT
    ls "$OS_PKG"/opensmtpd_*.deb >/dev/null 2>&1 || return 1
    mkdir -p "$1/root" /var/lib/opensmtpd/empty
    dpkg -x "$(ls "$OS_PKG"/opensmtpd_*.deb | head -1)" "$1/root" 2>/dev/null || return 1
    for u in opensmtpd opensmtpq; do
        id "$u" >/dev/null 2>&1 || useradd -r -M -d /var/lib/opensmtpd/empty -s /usr/sbin/nologin "$u"
        usermod -d /var/lib/opensmtpd/empty "$u" >/dev/null 2>&1 || true
    done
    cat >"$1/smtpd.conf" <<CF
listen on 127.0.0.1 port 2527
action "out" relay host smtp://127.0.0.1:$2
match from any for domain "relay.example" action "out"
CF
    chmod 644 "$1/smtpd.conf"
}

# OpenSMTPD's queue is compiled in (/var/spool/smtpd): a fresh one for each start, unless a real
# OpenSMTPD is installed here.
opensmtpd_fresh_queue() {
    dpkg-query -W opensmtpd >/dev/null 2>&1 || rm -rf /var/spool/smtpd /var/run/smtpd.sock
}
