#!/usr/bin/env bash
# Installs the peers `switchboard-bench compare --peers` runs beside the
# baseline and Switchboard, from the package registries: the fastwebsockets
# echo (crates.io, built here), Node's `ws` with `bufferutil` (npm) and
# Python's `websockets` (PyPI, into bench/peers/python/deps). Peers that
# cannot be installed are left out of the comparison, which says so.
set -uo pipefail
cd "$(dirname "$0")"
echo "fastwebsockets:"
cargo build --release --manifest-path fastwebsockets/Cargo.toml --target-dir target \
  && echo "  built target/release/fastwebsockets-echo"
echo "node ws + bufferutil:"
if command -v npm >/dev/null; then
  (cd node && npm install --no-audit --no-fund --silent) && echo "  installed in node/node_modules"
else
  echo "  npm is missing: skipped"
fi
echo "python websockets:"
python3 -m pip install --quiet --upgrade --target python/deps 'websockets==17.*' \
  && echo "  installed in python/deps"
