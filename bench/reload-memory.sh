#!/usr/bin/env bash
# What reloads cost in memory: for each example plugin, 100 reloads that each
# load a new build of it (the same code with other bytes appended, which is a
# new file to the server), measuring the server's resident memory (VmRSS) and
# its memory mappings before and after. abi_stable never unloads a library,
# so every changed build stays mapped until the server restarts.
#
# Usage: bench/reload-memory.sh [RELOADS]   (after cargo build --release --workspace)
set -euo pipefail
cd "$(dirname "$0")/.."
reloads=${1:-100}
bin=target/release/switchboard
[ -x "$bin" ] || { echo "build first: cargo build --release --workspace" >&2; exit 1; }
work=$(mktemp -d)
trap 'kill "$pid" 2>/dev/null || true; rm -rf "$work"' EXIT
plugins=(echo commands chat locks clock progress hub)
apps=""
for p in "${plugins[@]}"; do
  cp "target/release/lib$p.so" "$work/lib$p.so"
  if [ "$p" = hub ]; then
    apps+=$'\n[[app]]\npaths = ["/hub"]\nplugin = "hub"\n'
  else
    apps+=$'\n[[app]]\npath = "/'"$p"$'"\nplugin = "'"$p"$'"\n'
  fi
done
cat > "$work/switchboard.toml" <<TOML
[server]
listen = "127.0.0.1:0"
plugin_dir = "$work"
runtime_dir = "$work/run"
$apps
TOML
"$bin" --config "$work/switchboard.toml" > "$work/stdout" 2> "$work/stderr" &
pid=$!
for _ in $(seq 100); do grep -q listening "$work/stdout" 2>/dev/null && break; sleep 0.05; done
rss() { awk '/VmRSS/ {print $2}' "/proc/$pid/status"; }
maps() { wc -l < "/proc/$pid/maps"; }
printf '%-10s %8s %12s %12s %10s %10s %14s\n' plugin reloads "rss before" "rss after" "KiB/reload" "maps +" "so size KiB"
for p in "${plugins[@]}"; do
  before_rss=$(rss); before_maps=$(maps)
  for i in $(seq "$reloads"); do
    printf 'rebuilt %s %s' "$i" "$(date +%s%N)" >> "$work/lib$p.so"
    "$bin" --config "$work/switchboard.toml" reload > /dev/null
  done
  after_rss=$(rss); after_maps=$(maps)
  size=$(( $(stat -c %s "target/release/lib$p.so") / 1024 ))
  printf '%-10s %8d %9d KiB %9d KiB %10d %10d %14d\n' "$p" "$reloads" "$before_rss" "$after_rss" \
    $(( (after_rss - before_rss) / reloads )) $(( after_maps - before_maps )) "$size"
done
echo "runtime dir: $(du -sh "$work/run" | cut -f1) in $(ls "$work/run" | wc -l) plugin copies"
grep -c "plugin libraries are mapped" "$work/stderr" | sed 's/^/warnings logged: /'
