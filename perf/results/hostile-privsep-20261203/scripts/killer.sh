#!/bin/bash
# usage: killer.sh SECONDS LOG PARENTLOGFILE  -- only kills children of OUR parent (from our log)
end=$(( $(date +%s) + $1 ))
roles=(queue queue smtp lookup)
while [ $(date +%s) -lt $end ]; do
  sleep $(python3 -c 'import random;print(round(random.uniform(16,20),2))')
  P=$(grep -o 'ternd ready.*parent [0-9]*' $3 | tail -1 | awk '{print $NF}')
  r=${roles[$((RANDOM % 4))]}
  p=$(for c in $(pgrep -P $P); do [ "$(tr "\0" " " </proc/$c/cmdline 2>/dev/null | awk "{print \$1,\$2}")" = "ternd: $r" ] && echo $c; done | head -1)
  [ -n "$p" ] && kill -9 $p && echo "$(date +%T.%N) kill -9 $r $p (parent $P) parentfds=$(ls /proc/$P/fd | wc -l)" >> $2
done
