#!/usr/bin/env bash
# Instructions the server executes per echoed message, for the baseline and for
# Switchboard's /echo, counted by valgrind's callgrind: repeatable to the
# instruction whatever else the machine does, unlike timings on a shared box.
#
# Each server is run twice under callgrind, for N1 and N2 round trips of
# SIZE-byte messages on one connection; (I(N2) - I(N1)) / (N2 - N1) cancels out
# start-up and shutdown.
#
#   cargo build --release --workspace && bench/instructions.sh [SIZE] [N1] [N2]
#
# With KEEP=DIR, the callgrind profiles are kept in DIR, and the functions
# whose own instructions per message differ most are listed
# (bench/callgrind_per_message.py).
set -euo pipefail
cd "$(dirname "$0")/.."
size=${1:-32}
n1=${2:-2000}
n2=${3:-12000}
bin=target/release
command -v valgrind >/dev/null || { echo "valgrind is needed (apt-get install valgrind)" >&2; exit 1; }
[ -x "$bin/switchboard" ] && [ -x "$bin/switchboard-bench" ] || { echo "build first: cargo build --release --workspace" >&2; exit 1; }
work=$(mktemp -d)
if [ -n "${KEEP:-}" ]; then
  mkdir -p "$KEEP"
  work=$(cd "$KEEP" && pwd)
else
  trap 'rm -rf "$work"' EXIT
fi
cat > "$work/switchboard.toml" <<TOML
[server]
listen = "127.0.0.1:0"
plugin_dir = "$PWD/$bin"
message_rate = 0
byte_rate = 0
[[app]]
path = "/echo"
plugin = "echo"
TOML

# instructions SERVER N -> total instructions of the server process
instructions() {
  local server=$1 n=$2 out="$work/$1-$2"
  if [ "$server" = baseline ]; then
    valgrind --tool=callgrind --callgrind-out-file="$out.cg" "$bin/switchboard-bench" baseline > "$out.stdout" 2> "$out.stderr" &
  else
    SWITCHBOARD_LOG=warn valgrind --tool=callgrind --callgrind-out-file="$out.cg" "$bin/switchboard" -c "$work/switchboard.toml" > "$out.stdout" 2> "$out.stderr" &
  fi
  local pid=$! addr=""
  for _ in $(seq 600); do
    addr=$(grep -o '127\.0\.0\.1:[0-9]*' "$out.stdout" 2>/dev/null | head -1 || true)
    [ -n "$addr" ] && break
    sleep 0.1
  done
  [ -n "$addr" ] || { echo "$server did not start under valgrind" >&2; cat "$out.stderr" >&2; exit 1; }
  local path=/
  [ "$server" = switchboard ] && path=/echo
  "$bin/switchboard-bench" load "ws://$addr$path" -c 1 -s "$size" --count "$n" --warmup 0s > /dev/null
  kill -TERM "$pid"
  wait "$pid" || true
  grep -E '^(summary|totals):' "$out.cg" | head -1 | awk '{print $2}'
}

printf '%-12s %14s %14s %16s\n' server "I($n1)" "I($n2)" "instructions/msg"
declare -A per
for server in baseline switchboard; do
  a=$(instructions "$server" "$n1")
  b=$(instructions "$server" "$n2")
  per[$server]=$(( (b - a) / (n2 - n1) ))
  printf '%-12s %14s %14s %16s\n' "$server" "$a" "$b" "${per[$server]}"
done
awk -v s="${per[switchboard]}" -v b="${per[baseline]}" 'BEGIN { printf "ratio (switchboard / baseline): %.3f\n", s / b }'

if [ -n "${KEEP:-}" ]; then
  for server in baseline switchboard; do
    echo "== $server: own instructions per message, by function"
    python3 bench/callgrind_per_message.py "$work/$server-$n1.cg" "$work/$server-$n2.cg" $((n2 - n1)) | head -25
  done
fi
