#!/bin/bash
# Idle memory of BIN's ternd: every process's RSS and PSS, then smtp's (or the single process's)
# growth with N idle sessions after EHLO.
set -u
if [ -z "${IN_NS:-}" ]; then exec unshare -n env IN_NS=1 "$0" "$@"; fi
ip link set lo up
BIN=${BIN:-/var/tmp/bin-push}; N=${N:-10000}
W=$(mktemp -d /var/tmp/prof/idle.XXXX); chmod 755 $W; cd $W
mkdir -p mail
printf 'hostname mx.example.test\nspool spool\nlisten smtp 127.0.0.1:2525\ndomain example.test {\n}\ndeliver maildir %s/mail/%%{domain}/%%{user}\n' $W > tern.conf
ulimit -n 65536
$BIN/ternd --config $W/tern.conf 2>$W/log &
T=$!
for i in $(seq 200); do grep -q "ternd ready" $W/log && break; sleep 0.05; done
sleep 2
kids=$(ps -eo pid,ppid,args | awk -v p=$T '$2==p && $3=="ternd:" {print $1}')
total=0; pss=0
for p in $T $kids; do r=$(awk '/VmRSS/{print $2}' /proc/$p/status); s=$(awk '/^Pss:/{print $2}' /proc/$p/smaps_rollup); echo "$(tr '\0' ' ' </proc/$p/cmdline | cut -c1-14) rss=$r pss=$s"; total=$((total+r)); pss=$((pss+s)); done
echo "all: rss=$total KiB pss=$pss KiB"
S=$(ps -eo pid,ppid,args | awk -v p=$T '$2==p && $3=="ternd:" && $4=="smtp" {print $1}')
[ -z "$S" ] && S=$T
before=$(awk '/VmRSS/{print $2}' /proc/$S/status)
cd /work/main
coproc HOLD { python3 perf/idle_sessions.py 127.0.0.1 2525 "$N"; }
read -r ready <&"${HOLD[0]}"
sleep 1
after=$(awk '/VmRSS/{print $2}' /proc/$S/status)
echo "sessions $N ($ready): smtp rss $before -> $after KiB: $(( (after-before)*1024/N )) bytes per session"
echo >&"${HOLD[1]}"; wait "$HOLD_PID" 2>/dev/null
kill -TERM $T; wait $T
