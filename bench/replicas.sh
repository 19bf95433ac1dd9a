#!/usr/bin/env bash
# Durable decisions/s on PostgreSQL with one and three replicas, next to SQLite, at 1, 8 and 64
# requesters, in one run. Results and method: docs/BENCHMARKS.md.
set -euo pipefail
cd "$(dirname "$0")/.."
tests/postgres/install.sh
AIRLOCK_BENCH_SECONDS="${AIRLOCK_BENCH_SECONDS:-3}" cargo bench -p airlock-server --bench replicas
