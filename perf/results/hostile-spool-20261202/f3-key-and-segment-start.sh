#!/bin/bash
# Two flipped bits: one in SPOOL/key, one in the segment-start record of segment 1 (the key copy).
# Segment 2 still holds the key, but segment 1 is read before it and is taken as unreadable whole.
source /tmp/hostile-findings/lib.sh
D=/tmp/f3; /tmp/hostile-findings/damage-setup.sh $D 2606 >/dev/null
rm $D/spool/key   # (flipping a bit in it does the same)
python3 /tmp/hostile-findings/flip.py $D/spool/0000000000000001.seg 33
rm -f $D/mail/example.test/bob/tmp; mkdir $D/mail/example.test/bob/tmp
start $D; sleep 4
grep -E 'spool' $D/ternd.log | tail -6
$BIN/ternctl queue --config $D/tern.conf 2>&1 | tail -3
check $D bob $D/acked.txt
stopd $D
