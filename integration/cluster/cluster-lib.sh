# Sourced by run-cluster.sh and run-demo-cluster.sh: starts, on loopback, a Redis
# Cluster of three primaries (AOF, appendfsync always) and three relays on it that
# share one TLS certificate, so that an agent trusts every relay of the cluster with one
# pin. Every process started is recorded in `pids` and stopped by `cluster_stop`.
#
# Settings (environment): BIN (relay binary directory, default ./target/release),
# CLUSTER_DIR (default: a new temporary directory), REDIS_BASE_PORT (7001: ports
# 7001-7003), RELAY_BASE_PORT (7441: ports 7441-7443).

BIN=${BIN:-./target/release}
REDIS_BASE_PORT=${REDIS_BASE_PORT:-7001}
RELAY_BASE_PORT=${RELAY_BASE_PORT:-7441}
pids=()
RELAY_ADDRS=()

cluster_stop() {
  for p in "${pids[@]:-}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
}

need_redis() {
  command -v redis-server >/dev/null && command -v redis-cli >/dev/null && return 0
  echo "redis-server is not installed: installing it from Debian"
  local sudo=""
  [ "$(id -u)" -eq 0 ] || sudo=sudo
  $sudo apt-get update -qq && DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq redis-server >/dev/null
}

port_free() { ! (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

# Waits until `redis-cli -p PORT ping` answers.
redis_up() {
  for _ in $(seq 1 100); do
    redis-cli -p "$1" ping >/dev/null 2>&1 && return 0
    sleep 0.1
  done
  echo "redis-server on port $1 did not start (see $CLUSTER_DIR/redis-$1/redis.log)"
  return 1
}

start_redis_cluster() {
  local nodes=()
  for i in 0 1 2; do
    local port=$((REDIS_BASE_PORT + i)) dir="$CLUSTER_DIR/redis-$((REDIS_BASE_PORT + i))"
    # (A cluster node also listens on its port + 10000, the cluster bus.)
    port_free "$port" && port_free $((port + 10000)) \
      || { echo "port $port or $((port + 10000)) is taken: set REDIS_BASE_PORT"; return 1; }
    mkdir -p "$dir"
    redis-server --bind 127.0.0.1 --port "$port" --dir "$dir" --cluster-enabled yes \
      --cluster-config-file nodes.conf --appendonly yes --appendfsync always --save "" \
      --logfile redis.log --protected-mode no &
    pids+=($!)
    nodes+=("127.0.0.1:$port")
  done
  for i in 0 1 2; do redis_up $((REDIS_BASE_PORT + i)) || return 1; done
  redis-cli --cluster create "${nodes[@]}" --cluster-replicas 0 --cluster-yes >"$CLUSTER_DIR/cluster-create.log" 2>&1 \
    || { cat "$CLUSTER_DIR/cluster-create.log"; return 1; }
  for _ in $(seq 1 100); do
    redis-cli -p "$REDIS_BASE_PORT" cluster info 2>/dev/null | grep -q 'cluster_state:ok' && return 0
    sleep 0.1
  done
  echo "the Redis Cluster did not reach cluster_state:ok"
  return 1
}

# Starts relay N (1..3) with the shared certificate; sets RELAY_ADDRS[N-1].
start_relay() {
  local n=$1 port=$((RELAY_BASE_PORT + $1 - 1)) dir="$CLUSTER_DIR/relay-$1"
  port_free "$port" || { echo "port $port is taken: set RELAY_BASE_PORT"; return 1; }
  mkdir -p "$dir"
  cat > "$CLUSTER_DIR/relay-$n.toml" <<TOML
listen = "127.0.0.1:$port"
data_dir = "$dir"

[store]
engine = "redis"
redis_urls = ["redis://127.0.0.1:$REDIS_BASE_PORT", "redis://127.0.0.1:$((REDIS_BASE_PORT + 1))", "redis://127.0.0.1:$((REDIS_BASE_PORT + 2))"]
redis_cluster = true
node_name = "relay-$n"

[tls]
cert_file = "$CLUSTER_DIR/tls-cert.pem"
key_file = "$CLUSTER_DIR/tls-key.pem"
TOML
  "$BIN/e2ee-relay" --config "$CLUSTER_DIR/relay-$n.toml" --log-format json --log-level info \
    2> "$CLUSTER_DIR/relay-$n.log" &
  pids+=($!)
  for _ in $(seq 1 100); do
    grep -q '"msg":"relay listening"' "$CLUSTER_DIR/relay-$n.log" && { RELAY_ADDRS[$((n - 1))]="127.0.0.1:$port"; return 0; }
    sleep 0.1
  done
  echo "relay $n did not start:"
  cat "$CLUSTER_DIR/relay-$n.log"
  return 1
}

cluster_start() {
  CLUSTER_DIR=${CLUSTER_DIR:-$(mktemp -d /tmp/e2ee-cluster.XXXXXX)}
  mkdir -p "$CLUSTER_DIR"
  need_redis
  start_redis_cluster
  # One certificate for the three relays: made once, by the relay itself.
  if [ ! -f "$CLUSTER_DIR/tls-cert.pem" ]; then
    mkdir -p "$CLUSTER_DIR/certificate"
    "$BIN/e2ee-relay" --data-dir "$CLUSTER_DIR/certificate" --print-pin >/dev/null
    cp "$CLUSTER_DIR/certificate/tls-cert.pem" "$CLUSTER_DIR/certificate/tls-key.pem" "$CLUSTER_DIR/"
    chmod 600 "$CLUSTER_DIR/tls-key.pem"
  fi
  PIN=$("$BIN/e2ee-relay" --data-dir "$CLUSTER_DIR/certificate" --print-pin)
  for n in 1 2 3; do start_relay "$n"; done
  RELAYS=$(IFS=,; echo "${RELAY_ADDRS[*]}")
}
