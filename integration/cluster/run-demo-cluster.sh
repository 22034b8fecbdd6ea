#!/usr/bin/env bash
# make demo-cluster: the relay cluster of `make cluster` (three relays on a 3-primary
# Redis Cluster) and three scripted agents, Alice on relay 1, Bob on relay 2 and Carol
# on relay 3, each message crossing from one relay to another.
set -euo pipefail
cd "$(dirname "$0")/../.."
DIR=integration/cluster
. "$DIR/cluster-lib.sh"
. integration/demo/conversation.sh
own_dir=""
[ -n "${CLUSTER_DIR:-}" ] || own_dir=yes
cleanup() {
  cluster_stop
  [ -z "$own_dir" ] || [ -n "${KEEP_DEMO:-}" ] || rm -rf "$CLUSTER_DIR"
}
trap cleanup EXIT
say() { printf '\n\033[1m== %s\033[0m\n' "$*"; }

say "starting a 3-primary Redis Cluster and three relays on it"
cluster_start
echo "relays ${RELAY_ADDRS[*]}, one TLS pin $PIN"

agent() { # name relay-number
  "$BIN/e2ee-agent" --name "$1" --relay "${RELAY_ADDRS[$(($2 - 1))]}" --relay-pin "$PIN" \
    --state "$CLUSTER_DIR/$1" --script "$DIR/$1.script" --log-level warn | stamp "$1"
}

say "Alice on relay 1, Bob on relay 2, Carol on relay 3"
agent bob 2 > "$CLUSTER_DIR/bob.out" &
bob=$!
agent carol 3 > "$CLUSTER_DIR/carol.out" &
carol=$!
status=0
agent alice 1 > "$CLUSTER_DIR/alice.out" || status=$?
wait $bob || status=$?
wait $carol || status=$?
conversation "$CLUSTER_DIR/alice.out" "$CLUSTER_DIR/bob.out" "$CLUSTER_DIR/carol.out"
[ "$status" = 0 ] || { echo "AN AGENT FAILED (exit $status)"; exit 1; }

say "checks"
for n in 1 2 3; do
  logins=$(grep -c '"msg":"client authenticated"' "$CLUSTER_DIR/relay-$n.log" || true)
  echo "relay $n: $logins authenticated logins"
done
leaks=0
while IFS= read -r text; do
  if grep -r -a -q -F -- "$text" "$CLUSTER_DIR"/redis-* "$CLUSTER_DIR"/relay-*.log; then
    echo "PLAINTEXT FOUND IN REDIS OR A RELAY LOG: $text"
    leaks=$((leaks + 1))
  fi
done < <(sed -n 's/^send [a-z]* //p' "$DIR"/*.script)
[ "$leaks" = 0 ] || exit 1
echo "none of the plaintexts occurs in Redis's files or the relays' logs"
echo "demo-cluster finished: six messages, each from an agent on one relay to an agent on another"
