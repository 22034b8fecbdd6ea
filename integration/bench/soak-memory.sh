#!/usr/bin/env bash
# Relay memory under sustained load with a given deduplication window: starts a relay
# (memory store, the load generator's relaxed rate limits) on loopback, runs
# `e2ee-load run` against it at RATE for DURATION seconds and prints the relay's RSS
# every 5 seconds. Build first with `make release`.
#   usage: integration/bench/soak-memory.sh [WINDOW_SECS] [RATE] [DURATION_SECS]
set -euo pipefail
cd "$(dirname "$0")/../.."
window=${1:-86400}
rate=${2:-100000}
duration=${3:-40}
port=${PORT:-7399}
dir=$(mktemp -d)
trap 'kill "$relay" 2>/dev/null || true; rm -rf "$dir"' EXIT

E2EE_RELAY_LIMITS__RATE_CAPACITY=1000000000 E2EE_RELAY_LIMITS__RATE_REFILL_PER_SEC=1000000000 \
E2EE_RELAY_LIMITS__REQUEST_RATE_CAPACITY=1000000000 E2EE_RELAY_LIMITS__REQUEST_RATE_REFILL_PER_SEC=1000000000 \
E2EE_RELAY_LIMITS__MAX_PENDING_OUTPUT_BYTES=67108864 E2EE_RELAY_LIMITS__QUEUE_QUOTA=100000000 \
E2EE_RELAY_LIMITS__MAX_UNACKED=4096 E2EE_RELAY_SUMMARY_INTERVAL_SECS=0 E2EE_RELAY_LOG_LEVEL=warn \
E2EE_RELAY_LIMITS__DEDUP_WINDOW_SECS="$window" \
    ./target/release/e2ee-relay --store memory --listen "127.0.0.1:$port" --data-dir "$dir" \
    > "$dir/relay.log" 2>&1 &
relay=$!
sleep 0.5
./target/release/e2ee-load run --target "relay://127.0.0.1:$port" --server-pid "$relay" \
    --no-progress --rate "$rate" --duration "${duration}s" > "$dir/load.txt" 2>&1 &
load=$!
samples=""
for _ in $(seq 1 $((duration / 5))); do
    sleep 5
    samples="$samples $(($(awk '/VmRSS/{print $2}' "/proc/$relay/status") / 1024))"
done
wait "$load"
echo "dedup window ${window}s, ${rate}/s for ${duration}s: relay RSS MiB every 5 s:$samples"
grep -E "^rate|^latency" "$dir/load.txt"
