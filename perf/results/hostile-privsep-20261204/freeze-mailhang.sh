#!/bin/sh
# frozen spool under load: after the stall is seen, MAIL on the same smtp gets no answer until the thaw
D=/work/main/perf/results/hostile-privsep-20261204; R=/var/tmp/hostile-run; PORT=${1:-2526}
: > $R/acked4.txt
(ACKED=$R/acked4.txt timeout 400 $D/ns.sh python3 $D/par.py $PORT 20 3 1000000 > $R/freeze4.out 2>&1 &)
sleep 1.5; $D/ns.sh fsfreeze -f $R/spool2; echo "frozen $(date +%T)"; sleep 40
$D/ns.sh python3 $D/mailprobe.py $PORT 90
$D/ns.sh fsfreeze -u $R/spool2; echo "thawed $(date +%T)"
