#!/bin/sh
# frozen spool under load: a transaction answered 451 is delivered after the thaw
D=/work/main/perf/results/hostile-privsep-20261204; R=/var/tmp/hostile-run; PORT=${1:-2526}; TAG=${2:-frozen-load}
: > $R/acked3.txt
(ACKED=$R/acked3.txt timeout 400 $D/ns.sh python3 $D/par.py $PORT 20 3 1000000 > $R/freeze3.out 2>&1 &)
sleep 1.5; $D/ns.sh fsfreeze -f $R/spool2; echo "frozen $(date +%T)"
$D/ns.sh python3 $D/frozen-txn.py $PORT $TAG
sleep 5; $D/ns.sh fsfreeze -u $R/spool2; echo "thawed $(date +%T)"; sleep 6
echo "copies of <$TAG@h> delivered: $(grep -rl "$TAG@h" $R/mail2 | wc -l)"
