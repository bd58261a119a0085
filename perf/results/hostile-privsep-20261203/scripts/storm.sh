#!/bin/bash
# storm.sh PARENT SECONDS INTERVAL LOG
end=$(( $(date +%s) + $2 )); n=0
while [ $(date +%s) -lt $end ]; do
  kill -HUP $1 || break; n=$((n+1))
  sleep $3
  if [ $((n % 10)) -eq 0 ]; then echo "$(date +%T) hups=$n parentfds=$(ls /proc/$1/fd | wc -l) smtp=$(for c in $(pgrep -P $1); do tr '\0' ' ' </proc/$c/cmdline | awk '{print $2}'; done | grep -c smtp)" >> $4; fi
done
