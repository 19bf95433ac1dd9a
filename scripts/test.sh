#!/usr/bin/env bash
# Runs airlock's whole test suite: unit, property, integration (real binary, real SQLite and
# PostgreSQL) and example-policy tests. Anything the tests need beyond the Rust toolchain is
# installed first into git-ignored folders of the checkout, or, for PostgreSQL, found or started
# by tests/postgres/install.sh.
#
#   scripts/test.sh            everything
#   scripts/test.sh -E 'test(restart)'   extra arguments go to the test runner (and skip the PostgreSQL pass)
set -euo pipefail
cd "$(dirname "$0")/.."

for installer in tests/*/install.sh; do
    [ -x "$installer" ] || continue
    echo "==> $installer"
    "$installer"
done

# A whole-suite run gains nothing from incremental compilation and its cache is the largest part
# of the target folder; machines with little disk run out of space with it.
export CARGO_INCREMENTAL="${CARGO_INCREMENTAL:-0}"

echo "==> building"
cargo build --workspace --tests --locked

# The behaviour tests a second time with every fixture's journal in PostgreSQL, less those
# tests/postgres/sqlite-only.txt names (with why). Only for a whole-suite run.
mapfile -t sqlite_only < <(grep -v '^#' tests/postgres/sqlite-only.txt | grep -v '^[[:space:]]*$')
postgres_pass() {
    [ $# -eq 0 ] || return 0
    echo "==> behaviour tests on PostgreSQL (AIRLOCK_IT_BACKEND=postgres)"
    if cargo nextest --version >/dev/null 2>&1; then
        local filter
        filter="not ($(printf 'test(%s) | ' "${sqlite_only[@]}" | sed 's/ | $//'))"
        AIRLOCK_IT_BACKEND=postgres cargo nextest run -p airlock-cli --test it --locked --no-fail-fast -E "$filter"
    else
        local skips=()
        for t in "${sqlite_only[@]}"; do skips+=(--skip "$t"); done
        AIRLOCK_IT_BACKEND=postgres cargo test -p airlock-cli --test it --locked --no-fail-fast -- "${skips[@]}"
    fi
}

echo "==> running tests"
if cargo nextest --version >/dev/null 2>&1; then
    cargo nextest run --workspace --locked --no-fail-fast "$@"
else
    cargo test --workspace --locked --no-fail-fast "$@"
fi
postgres_pass "$@"
