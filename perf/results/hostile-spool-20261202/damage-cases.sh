#!/bin/bash
# damage-cases.sh : each case on a fresh copy of the same stopped spool (10 bob messages pending in
# segments 1 and 2), then start, mend bob's Maildir, wait for the queue to empty, count.
source /tmp/hostile-findings/lib.sh
BASE=/tmp/dbase; [ -d $BASE ] || /tmp/hostile-findings/damage-setup.sh $BASE 2608 >/dev/null
S1=spool/0000000000000001.seg; S2=spool/0000000000000002.seg
run() { # name, command (run in DIR)
  local name=$1; shift
  local D=/tmp/dc-$name; rm -rf $D; cp -a $BASE $D
  sed -i "s/127.0.0.1:2608/127.0.0.1:2609/" $D/tern.conf
  (cd $D && eval "$@")
  rm -f $D/mail/example.test/bob/tmp; mkdir -p $D/mail/example.test/bob/tmp
  : > $D/ternd.log
  start $D || { echo "=== $name: START FAILED"; tail -3 $D/ternd.log; return; }
  waitempty $D 30 >/dev/null
  stopd $D
  echo "=== $name:"; grep -E 'damage|torn|spool:' $D/ternd.log | grep -v 'listening' | sed 's/^ternd\[[0-9]*\]: //' | head -8
  check $D bob $D/acked.txt | tr '\n' ' '; echo
  ls $D/spool $D/spool/damaged 2>/dev/null | tr '\n' ' '; echo
}
case "${1:-all}" in all|1) run body-flip "python3 /tmp/hostile-findings/flip.py $S1 1092 >/dev/null";; esac
case "${1:-all}" in all|2) run status-flip "python3 /tmp/hostile-findings/flip.py $S1 700 >/dev/null";; esac
case "${1:-all}" in all|3) run hdrcrc-flip "python3 /tmp/hostile-findings/flip.py $S1 1572 >/dev/null";; esac
case "${1:-all}" in all|4) run truncate-s1 "truncate -s 2000 $S1";; esac
case "${1:-all}" in all|5) run append-garbage-s1 "head -c 5000 /dev/urandom >> $S1";; esac
case "${1:-all}" in all|6) run append-garbage-s2 "head -c 5000 /dev/urandom >> $S2";; esac
case "${1:-all}" in all|7) run zero-s2-head "dd if=/dev/zero of=$S2 bs=1 count=4096 conv=notrunc status=none";; esac
case "${1:-all}" in all|8) run zero-s1-mid "dd if=/dev/zero of=$S1 bs=1 seek=1000 count=1500 conv=notrunc status=none";; esac
case "${1:-all}" in all|9) run junk-seg "head -c 100000 /dev/urandom > spool/0000000000000005.seg";; esac
case "${1:-all}" in all|10) run junk-small-seg "head -c 100 /dev/urandom > spool/0000000000000005.seg";; esac
case "${1:-all}" in all|11) run dir-seg "mkdir spool/0000000000000005.seg";; esac
case "${1:-all}" in all|12) run empty-seg "touch spool/0000000000000000.seg";; esac
case "${1:-all}" in all|13) run copy-s1-as-s9 "cp $S1 spool/0000000000000009.seg";; esac
case "${1:-all}" in all|14) run s1-start-flip "python3 /tmp/hostile-findings/flip.py $S1 33 >/dev/null";; esac
case "${1:-all}" in all|15) run truncate-s2-0 "truncate -s 0 $S2";; esac
case "${1:-all}" in all|16) run truncate-s1-0 "truncate -s 0 $S1";; esac
case "${1:-all}" in all|17) run truncate-s1-40 "truncate -s 40 $S1";; esac
case "${1:-all}" in all|18) run truncate-s2-mid "truncate -s 3000 $S2";; esac
case "${1:-all}" in all|19) run zero-s1-all "dd if=/dev/zero of=$S1 bs=8760 count=1 conv=notrunc status=none";; esac
