#!/usr/bin/env bash
# Three Switchboard nodes and one Redis on this machine, to try a cluster:
# every example app of config/switchboard.toml on each node, the nodes
# sharing deliveries and app state through Redis (see docs/scaling.md).
#
#   examples/cluster/run.sh            # nodes on 8081, 8082, 8083; Redis on 6390
#   BASE_PORT=9001 REDIS_PORT=6400 examples/cluster/run.sh
#
# Open http://127.0.0.1:8081/chat.html and http://127.0.0.1:8082/chat.html:
# two nodes, one chat room. Ctrl-C stops everything. Needs redis-server
# (Debian: apt-get install redis-server).
set -euo pipefail
cd "$(dirname "$0")/../.."
root=$(pwd)
base_port=${BASE_PORT:-8081}
redis_port=${REDIS_PORT:-6390}

command -v redis-server >/dev/null || { echo "redis-server is missing (apt-get install redis-server)" >&2; exit 1; }
cargo build --release --workspace

work=$(mktemp -d)
pids=()
stop() {
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$work"
}
trap stop EXIT INT TERM

redis-server --port "$redis_port" --bind 127.0.0.1 --save '' --appendonly no --dir "$work" \
  --logfile "$work/redis.log" &
pids+=($!)
for _ in $(seq 50); do
  redis-cli -p "$redis_port" ping >/dev/null 2>&1 && break
  sleep 0.1
done

for n in 1 2 3; do
  port=$((base_port + n - 1))
  config="$work/node$n.toml"
  # The example config, on its own port, serving the pages from the
  # repository, plus the cluster.
  sed -e "s|^listen = .*|listen = \"127.0.0.1:$port\"|" \
      -e "s|^static_dir = .*|static_dir = \"$root/examples/web\"|" \
      config/switchboard.toml > "$config"
  cat >> "$config" <<TOML

[cluster]
redis = "redis://127.0.0.1:$redis_port"
node_id = "node$n"
TOML
  ./target/release/switchboard --config "$config" &
  pids+=($!)
done

sleep 1
echo
echo "three nodes, one Redis (redis://127.0.0.1:$redis_port):"
for n in 1 2 3; do
  port=$((base_port + n - 1))
  echo "  node$n  http://127.0.0.1:$port/   (health: curl http://127.0.0.1:$port/_/health)"
done
echo "Ctrl-C stops them."
wait
