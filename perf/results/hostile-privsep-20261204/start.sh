#!/bin/sh
# start ternd in the namespace, log to /var/tmp/hostile-run/ternd.log
cd /var/tmp/hostile-run
/work/main/perf/results/hostile-privsep-20261204/ns.sh /var/tmp/hostile-wt/.build/debug/ternd --config /var/tmp/hostile-run/${1:-tern.conf} >> ternd.log 2>&1 &
sleep 3; grep "ternd ready" ternd.log | tail -1
