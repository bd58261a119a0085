#!/usr/bin/env bash
# Load-testing with ternbench: a sink, and three shapes of load against it.
set -euo pipefail
BIN=${BIN:-$(swift build -c release --static-swift-stdlib --scratch-path .build-release --show-bin-path)/ternbench}
ADDR=127.0.0.1:2526

"$BIN" sink --listen "$ADDR" --report-every 1 &
SINK=$!
trap 'kill -INT $SINK; wait $SINK' EXIT
sleep 0.5

# Persistent, pipelined sessions: the fastest shape.
"$BIN" send --server "$ADDR" --sessions 100 --messages 100000 --size 1000

# A connection per message, no pipelining: what smtp-source does without -d.
"$BIN" send --server "$ADDR" --sessions 20 --messages 2000 --per-connection 1 --no-pipelining

# BDAT, several recipients, larger messages, JSON for scripts.
"$BIN" send --server "$ADDR" --sessions 10 --messages 1000 --chunking --rcpts 5 --size 100000 --json
