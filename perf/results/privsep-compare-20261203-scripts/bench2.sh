#!/bin/bash
# Quiet same-run comparison (nothing else running): durable 1 KB split (8a8aa9a) vs single (8179f37), alternating;
# then relay 100 KB split vs pre-streaming (3d2cc66).
cd /work/main
for round in 1 2; do
  for b in split single; do
    case $b in split) D=/var/tmp/bin-split3;; single) D=/var/tmp/bin-new;; esac
    echo "=== durable $b quiet $round"; BINDIR=$D MSGS=10000 ROUNDS=3 perf/compare-durable.sh 2>&1 | grep -E "written to"
  done
done
for b in split old; do
  case $b in split) D=/var/tmp/bin-split3;; old) D=/var/tmp/bin-old;; esac
  echo "=== relay100k $b"; BINDIR=$D MSGS=3000 ROUNDS=3 SIZE=100000 DRAIN=500 OS_MSGS=50 OS_WAIT=5 perf/compare-relay.sh 2>&1 | grep -E "written to"
done
