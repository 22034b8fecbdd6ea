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
  $BIN/e2ee-agent --name alice --state /tmp/alice --relay ${RELAY_ADDRS[0]} --relay-pin $PIN
  $BIN/e2ee-agent --name bob   --state /tmp/bob   --relay ${RELAY_ADDRS[1]} --relay-pin $PIN
  $BIN/e2ee-agent --name carol --state /tmp/carol --relay $RELAYS --relay-pin $PIN

Press Ctrl-C to stop the relays and Redis.
TEXT
wait
