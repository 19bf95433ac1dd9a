#!/usr/bin/env bash
# Installs what the browser test (crates/airlock-cli/tests/it/web_ui.rs) needs: Debian's Chromium
# at /usr/bin/chromium, from the distribution's packages, and playwright-core (pinned in
# package.json / package-lock.json) into node_modules here, which git ignores. playwright-core
# downloads no browser of its own. Quiet and quick when everything is already there.
set -euo pipefail
cd "$(dirname "$0")"
say() { echo "tests/browser: $*"; }

as_root() {
    if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi
}

apt_install() {
    say "installing Debian's $*"
    as_root apt-get update -qq
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$@" >/dev/null
}

if [ ! -x /usr/bin/chromium ]; then
    apt_install chromium fonts-dejavu-core
fi
if ! command -v npm >/dev/null 2>&1; then
    apt_install nodejs npm
fi

# Re-run npm only when what it installs from changed.
stamp=".installed"
want="$(cat package.json package-lock.json | sha256sum | cut -d' ' -f1)"
if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ] && [ -f node_modules/playwright-core/package.json ]; then
    exit 0
fi
say "npm ci (playwright-core)"
npm ci --no-audit --no-fund --loglevel=error
echo "$want" > "$stamp"
say "ready: $(/usr/bin/chromium --version 2>/dev/null || echo 'chromium version unknown'), node $(node --version)"
