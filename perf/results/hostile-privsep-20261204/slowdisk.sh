#!/bin/sh
# a "slow" spool disk: frozen and thawed every 0.5 s while 20 sessions send 5 MB messages
D=/work/main/perf/results/hostile-privsep-20261204; R=/var/tmp/hostile-run; PORT=${1:-2526}
rm -f $R/acked8.txt*; : > $R/acked8.txt
(ACKED=$R/acked8.txt timeout 600 $D/ns.sh python3 $D/par.py $PORT ${SESS:-20} ${MSGS:-3} ${SIZE:-5000000} > $R/slow8.out 2>&1; echo "par done $(date +%T)" >> $R/slow8.out) &
i=0; while [ $i -lt 120 ]; do $D/ns.sh fsfreeze -f $R/spool2; sleep 0.5; $D/ns.sh fsfreeze -u $R/spool2; sleep 0.5; i=$((i+1)); grep -q "par done" $R/slow8.out 2>/dev/null && break; done
echo "pulses $i, $(date +%T)"
