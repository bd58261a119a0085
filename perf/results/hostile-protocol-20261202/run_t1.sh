#!/bin/bash
# Starts a ternd with short time limits (command/data/write 5 s, session 30 s, STARTTLS) on 2601
# and runs every case of t1_timeouts.py, t1b_auth.py, t1c_noread.py against it.
. /tmp/h3-report/lib.sh
D=/tmp/h3t/base; mkenv $D 2601 'certificates certs' 'limits {' '  command-timeout 5s' '  data-timeout 5s' '  min-data-rate 500' '  write-timeout 5s' '  session-timeout 30s' '}' 'listen submissions 127.0.0.1:2634'
start $D || exit 1
cd /tmp/h3-report
timeout 120 python3 t1_timeouts.py 2601 cmd data session starttls starttls_trickle bdat bdatslow tlstrickle
timeout 60 python3 t1_timeouts.py 2634 implicit_stall
timeout 60 python3 t1c_noread.py 2601 $(cat $D/pid) 20
grep -a "closed" $D/log
stop $D
