#!/usr/bin/env bash
# Installs what the browser test needs: Debian's Chromium (/usr/bin/chromium, from the
# distribution's packages; never a browser download) and playwright-core (pinned, into
# node_modules here, git-ignored). Quick when already installed.
set -euo pipefail
cd "$(dirname "$0")"
say() { echo "browser test: $*"; }

if [ ! -x /usr/bin/chromium ]; then
    say "installing Debian's chromium"
    if [ "$(id -u)" = 0 ]; then SUDO=""; else SUDO="sudo"; fi
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq chromium >/dev/null
fi

want="$(cat install.sh package.json package-lock.json | sha256sum | cut -d' ' -f1)"
if [ -f .installed ] && [ "$(cat .installed)" = "$want" ] && [ -d node_modules/playwright-core ]; then
    say "up to date ($(/usr/bin/chromium --version 2>/dev/null | head -1))"
    exit 0
fi
say "npm ci (playwright-core)"
npm ci --no-audit --no-fund --loglevel=error
echo "$want" > .installed
say "installed"
