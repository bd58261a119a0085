#!/bin/sh
# run a command in the hostile test namespace (net + mount), held by the pid in /var/tmp/hostile-run/ns.pid
exec nsenter -t $(cat /var/tmp/hostile-run/ns.pid) -n -m "$@"
