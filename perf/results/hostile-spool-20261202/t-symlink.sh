#!/bin/bash
# The spool path is a symbolic link: load, restart, deliver.
source /tmp/hostile-findings/lib.sh
D=/tmp/tsym; rm -rf $D /tmp/tsym-real; mkdir -p /tmp/tsym-real; mkenv $D 2621; ln -s /tmp/tsym-real $D/spool; mkbox $D rcpt
start $D
$BIN/ternbench send --server 127.0.0.1:2621 --sessions 5 --size 500000 --duration 5 --to rcpt@example.test --message-ids $D/a1.txt 2>&1 | grep accepted
stopd $D; start $D >/dev/null
$BIN/ternbench send --server 127.0.0.1:2621 --sessions 5 --size 500000 --duration 5 --to rcpt@example.test --message-ids $D/a2.txt 2>&1 | grep accepted
waitempty $D 60; grep recovered $D/ternd.log | sed 's/^ternd\[[0-9]*\]: //'
check $D rcpt $D/a1.txt $D/a2.txt; ls -la $D/spool; ls /tmp/tsym-real
stopd $D
