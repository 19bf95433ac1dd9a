#!/usr/bin/env bash
# MCP tools/call latency with real clients (the official TypeScript and Python SDKs and a raw
# HTTP/1.1 keep-alive client), direct to server-everything and through airlock, supergateway and
# mcp-proxy, all in one run; prints a table (or JSON with --json). Method and figures:
# docs/BENCHMARKS.md. Arguments go to bench/mcp_clients.py (--help lists them), e.g.
#
#   bench/mcp_clients.sh                       # the default run: a few minutes
#   bench/mcp_clients.sh --calls 300 --rounds 5 --json results.json
#   bench/mcp_clients.sh --explore --clients raw-http   # where airlock's time goes
#
# It installs the peers into git-ignored folders (tests/interop/install.sh, bench/peers/install.sh),
# builds airlock in release mode (CARGO_TARGET_DIR is honoured), starts every server on 127.0.0.1
# on ports chosen at run time, and stops all of them when it ends, fails or is interrupted.
set -euo pipefail
cd "$(dirname "$0")/.."

tests/interop/install.sh
bench/peers/install.sh
cargo build --release -p airlock-cli ${CARGO_BUILD_FLAGS:-}
airlock="${CARGO_TARGET_DIR:-target}/release/airlock"

# mcp_clients.py stops everything it started (servers, their children, clients) in its own
# `finally`, on failure and on SIGINT/SIGTERM/SIGHUP. This trap asks it to (SIGTERM), waits, and
# then kills the runner's process group, which every server and client it starts stays in.
runner=""
group=""
cleanup() {
    if [ -n "$runner" ] && kill -0 "$runner" 2>/dev/null; then
        kill -TERM "$runner" 2>/dev/null || true
        for _ in $(seq 150); do kill -0 "$runner" 2>/dev/null || break; sleep 0.1; done
    fi
    # Whatever is left in the runner's group (all of it, if the runner itself was killed):
    # SIGTERM first, so that servers can stop their own children, then SIGKILL.
    if [ -n "$group" ] && kill -0 -- "-$group" 2>/dev/null; then
        kill -TERM -- "-$group" 2>/dev/null || true
        sleep 2
        kill -KILL -- "-$group" 2>/dev/null || true
    fi
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM
trap 'exit 129' HUP

set -m  # the runner gets its own process group
python3 bench/mcp_clients.py --airlock "$airlock" "$@" &
runner=$!
group=$runner
set +m
status=0
wait "$runner" || status=$?
runner=""
exit "$status"
