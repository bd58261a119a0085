#!/bin/bash
# A stray file named like the last possible segment makes ternd trap at start-up (n + 1 overflows).
source /tmp/hostile-findings/lib.sh
D=/tmp/f4; /tmp/hostile-findings/damage-setup.sh $D 2607 >/dev/null
echo junk > $D/spool/ffffffffffffffff.seg
start $D; sleep 1
tail -5 $D/ternd.log
kill -0 $(cat $D/pid) 2>/dev/null && { echo "ternd still running"; stopd $D; }
echo "--- ternctl queue:"; $BIN/ternctl queue --config $D/tern.conf 2>&1 | tail -3; echo "rc=$?"
