#!/usr/bin/env bash
# Fuzzes airlock with libFuzzer: each target in turn for a given time.
#
#   scripts/fuzz.sh                      every target, 60 s each
#   scripts/fuzz.sh 600                  every target, 10 minutes each
#   scripts/fuzz.sh 300 http mcp         only these targets
#
# Targets (what the input becomes, which property must hold): crates/airlock-fuzz/src/lib.rs.
# Needs a nightly toolchain (`rustup toolchain install nightly`) and cargo-fuzz, which this
# script installs from crates.io when missing. Each run starts from the committed corpus
# (fuzz/corpus/TARGET, read-only here) and keeps what it learns in fuzz/work/TARGET
# (git-ignored). A crash or a broken property stops that target and leaves the input in
# fuzz/artifacts/TARGET/; reproduce it with
#   cargo +nightly fuzz run TARGET fuzz/artifacts/TARGET/crash-…
# and, once fixed, copy the input into fuzz/corpus/TARGET/ so that the normal test suite
# (crates/airlock-fuzz/tests/corpus.rs) replays it from then on.
#
# Environment: FUZZ_SANITIZER (default `none`; `address` also checks the bundled SQLite's C
# code, at about a third of the speed), FUZZ_JOBS (parallel fuzzing processes per target, 1).
set -euo pipefail
cd "$(dirname "$0")/.."

seconds="${1:-60}"
shift || true
targets=("$@")
[ ${#targets[@]} -gt 0 ] || targets=(config http policy_input mcp journal)

if ! rustup toolchain list | grep -q '^nightly'; then
    echo "fuzzing needs a nightly toolchain: rustup toolchain install nightly" >&2
    exit 2
fi
if ! cargo fuzz --version >/dev/null 2>&1; then
    echo "==> installing cargo-fuzz"
    cargo install cargo-fuzz --locked
fi
# Start from the versions the workspace has tested.
[ -f fuzz/Cargo.lock ] || cp Cargo.lock fuzz/Cargo.lock

sanitizer="${FUZZ_SANITIZER:-none}"
jobs="${FUZZ_JOBS:-1}"
failed=()
for target in "${targets[@]}"; do
    mkdir -p "fuzz/work/$target" "fuzz/artifacts/$target"
    echo "==> fuzzing $target for ${seconds}s (sanitizer: $sanitizer)"
    parallel=()
    [ "$jobs" -le 1 ] || parallel=(-fork="$jobs")
    # -a: debug assertions on, so that an integer overflow is a finding, not a wrap.
    if ! cargo +nightly fuzz run -a --sanitizer "$sanitizer" "$target" "fuzz/work/$target" "fuzz/corpus/$target" -- \
        -max_total_time="$seconds" -max_len=8192 -timeout=60 -rss_limit_mb=4096 \
        -print_final_stats=1 "${parallel[@]}"; then
        failed+=("$target")
    fi
done

if [ ${#failed[@]} -gt 0 ]; then
    echo "FINDINGS in: ${failed[*]} (inputs under fuzz/artifacts/)" >&2
    exit 1
fi
echo "no findings in ${targets[*]} (${seconds}s each)"
