#!/usr/bin/env bash
# make bench-relay: the relay (memory store, then SQLite with fsync group commit),
# nats-server and redis-server under the same workload shape, in one run, on loopback.
# Installs nats-server and redis-server from Debian when missing. Extra arguments go to
# `e2ee-load bench` (e.g. --duration 20s --pairs 50 --idle-connections 20000).
set -euo pipefail
cd "$(dirname "$0")/../.."

need=()
command -v nats-server >/dev/null 2>&1 || [ -x /usr/sbin/nats-server ] || [ -x /usr/bin/nats-server ] || need+=(nats-server)
command -v redis-server >/dev/null 2>&1 || [ -x /usr/bin/redis-server ] || need+=(redis-server)
if [ ${#need[@]} -gt 0 ]; then
    echo "installing ${need[*]} (Debian packages)"
    if [ "$(id -u)" -eq 0 ]; then SUDO=""; else SUDO="sudo"; fi
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${need[@]}" >/dev/null
fi
# Neither server is wanted as a system service: the bench starts its own on free ports.
for svc in nats-server redis-server; do
    if command -v systemctl >/dev/null 2>&1 && systemctl is-active --quiet "$svc" 2>/dev/null; then
        echo "note: a system $svc is running; the bench uses its own instance on another port"
    fi
done

# 20 000 idle connections need about as many descriptors in each process.
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
echo "file descriptor limit: $(ulimit -n)"

mkdir -p target/bench
exec ./target/release/e2ee-load bench --out target/bench "$@"
