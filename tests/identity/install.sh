#!/usr/bin/env bash
# Installs what the access-token tests (crates/airlock-cli/tests/it/identity.rs) run against, into
# node_modules here, which git ignores (scripts/test.sh runs every tests/*/install.sh first):
# oidc-provider, a certified OpenID provider that provider.mjs configures, and the official
# TypeScript MCP SDK, whose OAuth client discovers airlock's metadata and gets a token. Both are
# pinned exactly in package.json and package-lock.json and come from the npm registry. Quiet and
# quick when nothing changed; FORCE=1 reinstalls.
set -euo pipefail
cd "$(dirname "$0")"
say() { echo "tests/identity: $*"; }

command -v npm >/dev/null || { echo "tests/identity: npm is not installed" >&2; exit 1; }
stamp=.installed
want="$(cat install.sh package.json package-lock.json | sha256sum | cut -d' ' -f1)"
if [ "${FORCE:-0}" != 1 ] && [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ] \
    && [ -f node_modules/oidc-provider/package.json ] && [ -f node_modules/@modelcontextprotocol/sdk/package.json ]; then
    exit 0
fi
rm -f "$stamp"
say "npm ci (oidc-provider, @modelcontextprotocol/sdk)"
npm ci --no-audit --no-fund --loglevel=error
echo "$want" > "$stamp"
say "ready: oidc-provider $(node -p 'require("./node_modules/oidc-provider/package.json").version'), node $(node --version)"
