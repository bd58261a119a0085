#!/usr/bin/env bash
# What a TLS key process would cost the new-STARTTLS-sessions rate (issue 17): full TLS 1.3
# handshakes with the server's private key in the process (as ternd's smtp holds it) against the
# same handshakes whose every signature is a blocking round trip to a key process (OpenSMTPD's
# `ca`), RSA-2048 and P-256, alternating, ROUNDS rounds of SECONDS each; medians and ratios.
# The server-side rate counts only the time spent in the server's handshake calls (the client
# runs in the same thread: its work is not the server's).
#
#   perf/compare-keyproc.sh [ROUNDS] [SECONDS]
set -euo pipefail
cd "$(dirname "$0")/.."
. perf/lib.sh
rounds=${1:-7}
seconds=${2:-3}
work=$(mktemp -d /tmp/tern-keyproc.XXXXXX)
trap 'rm -rf "$work"' EXIT
cc -O2 -Wall -Wno-deprecated-declarations perf/tools/keyproc-handshakes.c -o "$work/keyproc" -lssl -lcrypto
openssl req -x509 -newkey rsa:2048 -nodes -keyout "$work/rsa.key" -out "$work/rsa.pem" -days 2 -subj /CN=mx.example.test 2>/dev/null
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout "$work/ec.key" -out "$work/ec.pem" -days 2 -subj /CN=mx.example.test 2>/dev/null
echo "# keyproc: $rounds rounds of $seconds s, $(date -u +%Y-%m-%dT%H:%M:%SZ), $(nproc) cores, $(openssl version)"
for k in rsa ec; do
    for r in $(seq "$rounds"); do
        for m in local remote; do
            line=$("$work/keyproc" "$work/$k.pem" "$work/$k.key" "$seconds" "$m")
            echo "$k round $r: $line"
            echo "$line" | awk '{print $2}' >>"$work/$k.$m.pair"
            echo "$line" | awk '{print $6}' | tr -d '/s' >>"$work/$k.$m.server"
        done
    done
done
for k in rsa ec; do
    for what in pair server; do
        l=$(median <"$work/$k.local.$what"); rm=$(median <"$work/$k.remote.$what")
        echo "$k $what: local $l/s, remote $rm/s, remote/local $(awk -v a="$rm" -v b="$l" 'BEGIN {printf "%.3f", a/b}')"
    done
done
