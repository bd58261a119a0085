#!/bin/bash
# After the hostile fixes (16 KiB smtp pieces, spool-wide backlog): relay 100 KB and the quick
# durable check, the final split (BIN_FINAL) against the same peers, alternating, one pass each.
cd "$(dirname "$0")/../../.."
S=perf/results/privsep-compare-20261204-scripts
for b in final old; do
  case $b in final) D=${BIN_FINAL:-/var/tmp/bin-final};; old) D=${BIN_OLD:-/var/tmp/bin-old};; esac
  echo "=== relay100k $b"; BINDIR=$D MSGS=3000 ROUNDS=3 SIZE=100000 DRAIN=500 OS_MSGS=50 OS_WAIT=5 perf/compare-relay.sh 2>&1 | grep -E "written to|^\| ternd"
done
for b in final single final single; do
  case $b in final) D=${BIN_FINAL:-/var/tmp/bin-final};; single) D=${BIN_SINGLE:-/var/tmp/bin-single};; esac
  echo "=== quick durable $b"; BIN=$D MSGS=20000 $S/quick-durable.sh 2>&1 | grep msg/s
done
