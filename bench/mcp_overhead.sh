#!/usr/bin/env bash
# tools/call latency and throughput through airlock vs calling the same MCP server directly,
# measured in one run. Results and method: docs/BENCHMARKS.md.
set -euo pipefail
cd "$(dirname "$0")/.."
tests/interop/install.sh
AIRLOCK_BENCH_SECONDS="${AIRLOCK_BENCH_SECONDS:-5}" cargo bench -p airlock-cli --bench mcp_overhead
