#!/bin/bash
# Same-run comparison: split (dd3408b), single process (8179f37), pre-streaming (3d2cc66); 1 KB, alternating.
cd /work/main
for round in 1 2; do
  for b in split single old; do
    case $b in split) D=/var/tmp/bin-split;; single) D=/var/tmp/bin-new;; old) D=/var/tmp/bin-old;; esac
    echo "=== durable $b round $round"; BINDIR=$D MSGS=10000 ROUNDS=3 perf/compare-durable.sh 2>&1 | grep -iE "msg/s|ratio|median|→|Wrote|results" | head -12
    echo "=== relay $b round $round"; BINDIR=$D MSGS=10000 ROUNDS=3 DRAIN=1000 OS_MSGS=100 OS_WAIT=5 perf/compare-relay.sh 2>&1 | grep -iE "msg/s|ratio|median|→|Wrote|results" | head -12
  done
done
