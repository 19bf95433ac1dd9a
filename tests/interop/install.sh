#!/usr/bin/env bash
# Installs the real MCP peers the interop tests use, into git-ignored folders here:
#   node_modules/  @modelcontextprotocol/server-everything, server-filesystem, sdk (TypeScript
#                  client), inspector (CLI), and Node 22 (the inspector needs >= 22.19)
#   .venv/         the official Python SDK, mcp 2.3.0
# Versions are pinned in package.json / package-lock.json and requirements.txt. Re-running is
# quick: nothing is done while the pins are unchanged.
set -euo pipefail
cd "$(dirname "$0")"

want="$(cat package.json package-lock.json requirements.txt | sha256sum | cut -d' ' -f1)"
if [ -f .installed ] && [ "$(cat .installed)" = "$want" ] \
    && [ -x node_modules/.bin/mcp-server-everything ] && [ -x .venv/bin/python ]; then
    echo "interop peers: up to date"
    exit 0
fi

echo "interop peers: npm ci"
npm ci --no-audit --no-fund --loglevel=error
echo "interop peers: python venv with $(tr '\n' ' ' < requirements.txt)"
python3 -m venv .venv
.venv/bin/pip install --quiet --disable-pip-version-check -r requirements.txt
echo "$want" > .installed
echo "interop peers: installed"
