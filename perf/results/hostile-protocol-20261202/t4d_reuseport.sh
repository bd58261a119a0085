#!/bin/bash
# A second ternd (its own spool) on the same listen address starts without complaint: the port is
# shared (SO_REUSEPORT) and connections are split between the two instances at random.
. /tmp/h3-report/lib.sh
A=/tmp/h3t/rpA; B=/tmp/h3t/rpB; PORT=2641
mkenv $A $PORT; mkenv $B $PORT; sed -i 's/^hostname .*/hostname second.example.test/' $B/tern.conf
start $A || exit 1
start $B && echo "second instance started: $(grep -a listening $B/log)"
for i in $(seq 1 10); do python3 -c "
import sys; sys.path.insert(0,'/tmp/h3-report'); from smtp import *
s=conn($PORT); print(rd(s).decode().strip())"; done | sort | uniq -c
ss -ltnp | grep ":$PORT " 
stop $A; stop $B
