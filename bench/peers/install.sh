#!/usr/bin/env bash
# Installs the other MCP gateways that bench/mcp_clients.sh compares airlock with, into
# git-ignored folders here:
#
#   node_modules/      supergateway, from package.json + package-lock.json (exact pins, `npm ci`)
#   .venv-mcp-proxy/   a Python virtualenv with mcp-proxy and its dependencies, pinned in
#                      requirements-mcp-proxy.txt. mcp-proxy 0.13.0 needs mcp < 2, while
#                      tests/interop/.venv has mcp 2.3.0, so it gets a venv of its own.
#
# The clients (TypeScript and Python SDKs), Node 22 and server-everything come from
# tests/interop/install.sh, which bench/mcp_clients.sh runs too.
#
# Everything comes from the npm registry and PyPI. Nothing is done while .installed holds the
# hash of the pins and of this script and the binaries are there; FORCE=1 reinstalls anyway.
# PYTHON=/path/to/python3 picks the interpreter (>= 3.10).
set -euo pipefail
cd "$(dirname "$0")"

say() { echo "bench peers: $*"; }

stamp=.installed
want="$(cat install.sh package.json package-lock.json requirements-mcp-proxy.txt | sha256sum | cut -d' ' -f1)"
needed=(
    node_modules/.bin/supergateway
    .venv-mcp-proxy/bin/mcp-proxy
)
all_there() {
    local f
    for f in "${needed[@]}"; do [ -e "$f" ] || return 1; done
}
if [ "${FORCE:-0}" != 1 ] && [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ] && all_there; then
    say "up to date"
    exit 0
fi
rm -f "$stamp"
start=$SECONDS

command -v npm >/dev/null || { echo "bench peers: npm is not installed" >&2; exit 1; }
say "npm ci (supergateway)"
npm ci --no-audit --no-fund --loglevel=error

python="${PYTHON:-python3}"
"$python" -c 'import sys; sys.exit(sys.version_info < (3, 10))' \
    || { echo "bench peers: $python is older than 3.10 (mcp-proxy needs >= 3.10)" >&2; exit 1; }
if [ -d .venv-mcp-proxy ] && ! .venv-mcp-proxy/bin/python -c 'import sys' >/dev/null 2>&1; then
    say "removing a broken .venv-mcp-proxy"
    rm -rf .venv-mcp-proxy
fi
if [ ! -d .venv-mcp-proxy ]; then
    say "python venv for mcp-proxy ($("$python" --version 2>&1))"
    "$python" -m venv .venv-mcp-proxy
fi
say "pip install -r requirements-mcp-proxy.txt ($(grep -m1 '^mcp-proxy==' requirements-mcp-proxy.txt))"
.venv-mcp-proxy/bin/python -m pip install --quiet --disable-pip-version-check --no-input -r requirements-mcp-proxy.txt

echo "$want" > "$stamp"
say "installed in $((SECONDS - start)) s"
