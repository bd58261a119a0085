#!/bin/bash
# Same-run comparison, alternating: durable 1 KB, the split (BIN_SPLIT) against the last
# single-process build 8179f37 (BIN_SINGLE), two passes each.
cd "$(dirname "$0")/../../.."
for round in 1 2; do
  for b in split single; do
    case $b in split) D=${BIN_SPLIT:-/var/tmp/bin-push};; single) D=${BIN_SINGLE:-/var/tmp/bin-single};; esac
    echo "=== durable $b $round"; BINDIR=$D MSGS=10000 ROUNDS=3 perf/compare-durable.sh 2>&1 | grep -E "written to|ternd /|\| ternd"
  done
done
