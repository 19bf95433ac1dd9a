#!/usr/bin/env bash
# Provides the PostgreSQL server the tests of the PostgreSQL journal run against (the store's
# tests, the engine cases and the binary's in crates/airlock-cli/tests/it/postgres.rs), and
# writes its URL to .url here (git-ignored), where the tests read it. scripts/test.sh runs every
# tests/*/install.sh first. The server is, in this order:
#
#   1. the one AIRLOCK_TEST_PG_URL names (the tests read the variable too);
#   2. one that already answers on 127.0.0.1:5432 as user `postgres` without a password
#      (database `test`, else `postgres`);
#   3. a private cluster in a temporary directory, from Debian's `postgresql` package (installed
#      with apt-get when missing), on a free port of 127.0.0.1, with trust authentication; its
#      directory is kept in .cluster, so a later run starts it again if it stopped.
#
# Each test creates a database of its own on that server and drops it (airlock-test-postgres).
# Quiet and quick when the server named in .url answers.
set -euo pipefail
cd "$(dirname "$0")"
say() { echo "tests/postgres: $*"; }

as_root() {
    if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi
}

apt_install() {
    say "installing Debian's $*"
    as_root apt-get update -qq
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$@" >/dev/null
}

answers() {
    psql "$1" -Atqc 'SELECT 1' >/dev/null 2>&1
}

use() {
    echo "$1" > .url
    say "using $1"
    exit 0
}

command -v psql >/dev/null 2>&1 || apt_install postgresql-client

if [ -n "${AIRLOCK_TEST_PG_URL:-}" ]; then
    answers "$AIRLOCK_TEST_PG_URL" || { say "AIRLOCK_TEST_PG_URL does not answer" >&2; exit 1; }
    use "$AIRLOCK_TEST_PG_URL"
fi
if [ -f .url ] && answers "$(cat .url)"; then
    exit 0
fi
for db in test postgres; do
    url="postgres://postgres@127.0.0.1:5432/$db"
    if answers "$url"; then use "$url"; fi
done

# --- a private cluster ------------------------------------------------------------------------
bindir() { ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1; }
[ -n "$(bindir)" ] || apt_install postgresql
bin="$(bindir)"
[ -x "$bin/initdb" ] || { say "no initdb under /usr/lib/postgresql after installing postgresql" >&2; exit 1; }

# initdb and postgres refuse to run as root: the cluster belongs to the `postgres` user then.
run() {
    if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi
}

port_free() { ! (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

cluster="$(cat .cluster 2>/dev/null || true)"
if [ -z "$cluster" ] || [ ! -f "$cluster/data/PG_VERSION" ]; then
    cluster="$(mktemp -d /tmp/airlock-test-pg.XXXXXX)"
    [ "$(id -u)" = 0 ] && chown postgres: "$cluster"
    say "initdb in $cluster"
    run "$bin/initdb" -D "$cluster/data" -U postgres -A trust --no-sync >/dev/null
    echo "$cluster" > .cluster
fi
port=55432
while ! port_free "$port"; do port=$((port + 1)); done
say "starting the cluster in $cluster on 127.0.0.1:$port"
run "$bin/pg_ctl" -D "$cluster/data" -l "$cluster/log" -w \
    -o "-c listen_addresses=127.0.0.1 -c port=$port -c unix_socket_directories=$cluster" start >/dev/null
url="postgres://postgres@127.0.0.1:$port/postgres"
answers "$url" || { say "the private cluster does not answer; see $cluster/log" >&2; exit 1; }
use "$url"
