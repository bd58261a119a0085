#!/usr/bin/env bash
# perf/compare-dns.sh — resolver throughput: cached lookups and SPF checks on one thread, cold lookups against a
# local unbound with 100 in flight, and a soak (allocation growth) — in a private network
# namespace, so no query can leave the machine. Writes a markdown table to perf/results/.
#
#   perf/compare-dns.sh                      # 3 rounds, 10-minute soak
#   SOAK=60 ROUNDS=1 perf/compare-dns.sh
set -euo pipefail
cd "$(dirname "$0")/.."

. perf/lib.sh
tern_enter_netns "$@"

ROUNDS=${ROUNDS:-3}
NAMES=${NAMES:-20000}
COLD=${COLD:-200000}
SOAK=${SOAK:-600}
BINDIR=$(tern_bindir)
WORK=$(mktemp -d /var/tmp/tern-dns.XXXXXX)
OUT=perf/results/compare-dns-$(date -u +%Y%m%d-%H%M%S).md
trap 'kill $(jobs -p) 2>/dev/null || true; rm -rf "$WORK"' EXIT
[ -x "$BINDIR/dnsload" ] || { echo "build first: make build-release"; exit 1; }

python3 - "$WORK" "$NAMES" <<'PY'
import sys
work, n = sys.argv[1], int(sys.argv[2])
data = "\n".join(f'  local-data: "n{i}.load.test. 3600 IN A 10.{i>>16&255}.{i>>8&255}.{i&255}"' for i in range(n))
open(f"{work}/unbound.conf", "w").write(f"""server:
  interface: 127.0.0.1
  port: 5399
  do-daemonize: no
  chroot: ""
  username: ""
  directory: "{work}"
  pidfile: ""
  use-syslog: no
  logfile: ""
  do-ip6: no
  access-control: 127.0.0.0/8 allow
  num-threads: 1
  local-zone: "." static
  local-zone: "load.test." static
{data}
remote-control:
  control-enable: no
""")
PY
unbound -d -c "$WORK/unbound.conf" >"$WORK/unbound.log" 2>&1 &
UNBOUND=$!
for _ in $(seq 100); do dig @127.0.0.1 -p 5399 +short +time=1 +tries=1 n0.load.test >/dev/null 2>&1 && break; sleep 0.1; done

cpu() { awk '{print $14 + $15}' "/proc/$1/stat"; }
for round in $(seq "$ROUNDS"); do
    echo "round $round/$ROUNDS"
    "$BINDIR/dnsload" cached --names "$NAMES" | tee -a "$WORK/cached.txt"
    "$BINDIR/dnsload" spf | tee -a "$WORK/spf.txt"
    u0=$(cpu $UNBOUND)
    "$BINDIR/dnsload" cold --server 127.0.0.1:5399 --names "$NAMES" --lookups "$COLD" --in-flight 100 | tee -a "$WORK/cold.txt"
    u1=$(cpu $UNBOUND)
    echo "$(( (u1 - u0) * 10 ))" >>"$WORK/unbound-ms.txt"
done
echo "soak: $SOAK s"
"$BINDIR/dnsload" soak --server 127.0.0.1:5399 --names "$NAMES" --seconds "$SOAK" | tee "$WORK/soak.txt"

rate() { grep -Eo '[0-9]+ (lookups|checks)/s' "$1" | awk '{print $1}' | median; }
{
    echo "# Resolver throughput — $(date -u '+%Y-%m-%d %H:%M UTC')"
    echo
    echo "Command: \`ROUNDS=$ROUNDS NAMES=$NAMES COLD=$COLD SOAK=$SOAK perf/compare-dns.sh\` in a private network namespace."
    echo "Machine: $(nproc) cores, $(uname -r); unbound $(unbound -V | awk 'NR==1 {print $2}') with one thread answering $NAMES names from local data. Medians of $ROUNDS rounds."
    echo
    echo "| figure | measured | target |"
    echo "|---|---:|---|"
    echo "| cached lookups, one thread (\`CachingResolver\` hits) | $(rate "$WORK/cached.txt") /s | ≥ 1,000,000 /s |"
    echo "| cold lookups, stub resolver → unbound, 100 in flight | $(rate "$WORK/cold.txt") /s | ≥ 20,000 /s |"
    echo "| SPF checks with cached DNS, one thread (ip4, mx and an include) | $(rate "$WORK/spf.txt") /s | ≥ 200,000 /s |"
    echo "| unbound CPU per cold round of $COLD lookups | $(median <"$WORK/unbound-ms.txt") ms | — |"
    echo
    echo "Soak: $(tail -1 "$WORK/soak.txt")"
    echo
    echo "There is no peer resolver library to run the same load against on this machine; unbound's own"
    echo "CPU time is given so the share of the client can be judged (both share the two cores)."
    echo
    echo '```'
    cat "$WORK/cached.txt" "$WORK/spf.txt" "$WORK/cold.txt"
    grep -E "^t=" "$WORK/soak.txt" | awk 'NR % 6 == 1'
    echo '```'
} | tee "$OUT"
echo "written to $OUT"
