#!/bin/bash
# usage: load.sh PORT SECONDS TAG
end=$(( $(date +%s) + $2 )); i=0
while [ $(date +%s) -lt $end ]; do
  i=$((i+1)); sz=$(( (i % 3 == 0) ? 200000 : 1500 ))
  /var/tmp/tern-bin-hostile/ternbench send --server 127.0.0.1:$1 --sessions 8 --duration 4 --size $sz --to bob@example.org --message-ids /var/tmp/h1/ids/$3.$i --timeout 20 > /var/tmp/h1/ids/$3.$i.out 2>&1
done
