#!/bin/bash
cd /work/main
while pgrep -f "/tmp/bench2.sh" >/dev/null; do sleep 5; done
for b in split old; do
  case $b in split) D=/var/tmp/bin-split3;; old) D=/var/tmp/bin-old;; esac
  echo "=== relay1k $b quiet"; BINDIR=$D MSGS=10000 ROUNDS=3 DRAIN=1000 OS_MSGS=50 OS_WAIT=5 perf/compare-relay.sh 2>&1 | grep -E "written to"
done
