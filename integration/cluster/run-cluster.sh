#!/usr/bin/env bash
# make cluster: a 3-primary Redis Cluster and three relays on it, on loopback, until
# Ctrl-C (everything started is stopped then). See cluster-lib.sh for the settings.
set -euo pipefail
cd "$(dirname "$0")/../.."
. integration/cluster/cluster-lib.sh
trap cluster_stop EXIT
cluster_start
cat <<TEXT

A relay cluster is running (files in $CLUSTER_DIR):
  Redis Cluster: 127.0.0.1:$REDIS_BASE_PORT-$((REDIS_BASE_PORT + 2)), 3 primaries, AOF appendfsync always
  relays:        ${RELAY_ADDRS[*]} (nodes relay-1..3, logs relay-N.log)
  TLS pin:       $PIN (one certificate for the three relays)

Point agents at it, each on any relay, or at all three (the agent moves to another
relay when one is unreachable):
  $BIN/e2ee-agent --name alice --state $CLUSTER_DIR/alice --relay ${RELAY_ADDRS[0]} --relay-pin $PIN
  $BIN/e2ee-agent --name bob   --state $CLUSTER_DIR/bob   --relay ${RELAY_ADDRS[1]} --relay-pin $PIN
  $BIN/e2ee-agent --name carol --state $CLUSTER_DIR/carol --relay $RELAYS --relay-pin $PIN

Press Ctrl-C to stop the relays and Redis.
TEXT
# Say so when a process stops (a relay killed to try failover, say); the rest go on.
names=(redis-1 redis-2 redis-3 relay-1 relay-2 relay-3)
alive=("${pids[@]}")
while [ "${#alive[@]}" -gt 0 ]; do
  sleep 1
  still=()
  for i in "${!pids[@]}"; do
    p=${pids[$i]}
    [[ " ${alive[*]} " == *" $p "* ]] || continue
    if kill -0 "$p" 2>/dev/null; then
      still+=("$p")
    else
      echo "$(date +%T) ${names[$i]:-process} (pid $p) stopped"
    fi
  done
  alive=("${still[@]}")
done
