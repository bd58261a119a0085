#!/bin/bash
# Same-run comparison, alternating: relay-through, the split (BIN_SPLIT) against the build
# before this issue's body work, 3d2cc66 (BIN_OLD); 100 KB twice each, then 1 KB once each.
cd "$(dirname "$0")/../../.."
for round in 1 2; do
  for b in split old; do
    case $b in split) D=${BIN_SPLIT:-/var/tmp/bin-push};; old) D=${BIN_OLD:-/var/tmp/bin-old};; esac
    echo "=== relay100k $b $round"; BINDIR=$D MSGS=3000 ROUNDS=3 SIZE=100000 DRAIN=500 OS_MSGS=50 OS_WAIT=5 perf/compare-relay.sh 2>&1 | grep -E "written to|^\| ternd"
  done
done
for b in split old; do
  case $b in split) D=${BIN_SPLIT:-/var/tmp/bin-push};; old) D=${BIN_OLD:-/var/tmp/bin-old};; esac
  echo "=== relay1k $b"; BINDIR=$D MSGS=10000 ROUNDS=3 DRAIN=1000 OS_MSGS=50 OS_WAIT=5 perf/compare-relay.sh 2>&1 | grep -E "written to|^\| ternd"
done
