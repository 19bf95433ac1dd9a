#!/usr/bin/env bash
# airlock quickstart: builds airlock, starts it with this directory's config (embedded SQLite
# journal in examples/quickstart/.airlock), and walks through what it does: an allowed action,
# a denied one, one held for a human, a kill switch, an advisory agent, and the audit check.
# Then it leaves the server running for you to try the curl commands in README.md (Ctrl-C stops).
#
#   examples/quickstart/run.sh              build, tour, keep serving on 127.0.0.1:7878
#   examples/quickstart/run.sh --tour-only  stop after the tour
#   AIRLOCK_BIN=path/to/airlock             use an existing binary instead of building
#   AIRLOCK_LISTEN=127.0.0.1:0              listen elsewhere (port 0: any free port)
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/../.." && pwd)"
tour_only=false
[ "${1:-}" = "--tour-only" ] && tour_only=true

if [ -z "${AIRLOCK_BIN:-}" ]; then
    echo "==> building airlock (release; the first build takes a few minutes)"
    cargo build --release --locked --quiet --manifest-path "$root/Cargo.toml" --bin airlock
    AIRLOCK_BIN="$root/target/release/airlock"
fi
airlock() { "$AIRLOCK_BIN" "$@"; }

airlock check --config "$here/airlock.toml"

log="$(mktemp)"
out="$(mktemp)"
"$AIRLOCK_BIN" serve --config "$here/airlock.toml" --listen "${AIRLOCK_LISTEN:-127.0.0.1:7878}" >"$out" 2>"$log" &
server=$!
cleanup() { kill "$server" 2>/dev/null || true; wait "$server" 2>/dev/null || true; rm -f "$log" "$out"; }
trap cleanup EXIT INT TERM
for _ in $(seq 1 100); do
    grep -q "listening on" "$out" 2>/dev/null && break
    kill -0 "$server" 2>/dev/null || { cat "$log"; echo "airlock did not start"; exit 1; }
    sleep 0.1
done
url="$(sed -n 's/^airlock listening on //p' "$out")"
[ -n "$url" ] || { cat "$log"; echo "airlock did not start"; exit 1; }
export AIRLOCK_SERVER="$url"

field() { python3 -c "import sys, json; d = json.load(sys.stdin); print(eval('d' + sys.argv[1]))" "$1"; }
agent() { curl -sS -H "Authorization: Bearer demo-agent-token" -H "Content-Type: application/json" "$@"; }
act() {
    local resp code
    resp="$(agent -w '\n%{http_code}' -X POST "$url/v1/sessions/$session/actions" -d "$1")"
    code="$(tail -n1 <<<"$resp")"
    body="$(sed '$d' <<<"$resp")"
    echo "    HTTP $code  status=$(field '["status"]' <<<"$body")  effect=$(field '["decision"]["effect"]' <<<"$body")"
    python3 -c "import sys, json; [print('    reason [%s] %s' % (r['rule'], r['msg'])) for r in json.load(sys.stdin)['decision']['reasons']]" <<<"$body"
}
step() { printf '\n\033[1m%s\033[0m\n' "$*"; }

step "1. ops-bot (an autonomous agent) opens a session"
session="$(agent -X POST "$url/v1/sessions" -d '{"task": "handle the evening traffic spike"}' | field '["id"]')"
echo "    session $session"

step "2. It lists node pools: read-only, allowed"
act '{"tool": "nodepool.list", "arguments": {}, "justification": "look before touching"}'

step "3. It scales web to 4 nodes: allowed by policy (cost 4 x \$0.50 counted)"
act '{"tool": "nodepool.scale", "arguments": {"pool": "web", "count": 4}, "justification": "p95 latency above SLO"}'

step "4. It opens SSH to the internet: denied by rule FW001"
act '{"tool": "firewall.open", "arguments": {"port": 22, "cidr": "0.0.0.0/0"}, "justification": "debug a node"}'

step "5. It scales web to 12 nodes: above the limit, held for an SRE (rule NP001)"
act '{"tool": "nodepool.scale", "arguments": {"pool": "web", "count": 12}, "justification": "traffic still rising"}'
action="$(field '["id"]' <<<"$body")"
approval="$(field '["approval"]["id"]' <<<"$body")"
echo "    the agent now long-polls GET /v1/actions/$action?wait=30 while a human looks:"
agent "$url/v1/actions/$action?wait=30" >"$out.poll" &
poller=$!
AIRLOCK_TOKEN=demo-alice-token airlock approvals list
AIRLOCK_TOKEN=demo-alice-token airlock approvals approve "$approval" --comment "spike confirmed on the dashboard"
wait "$poller"
echo "    the agent's long-poll returned: status=$(field '["status"]' <"$out.poll")"
rm -f "$out.poll"
agent -X POST "$url/v1/actions/$action/result" -d '{"ok": true, "output": {"nodes": 12}}' >/dev/null
echo "    the agent ran it and reported the result"

step "6. An operator engages a kill switch on ops-bot; the very next request is denied"
kill_id="$(AIRLOCK_TOKEN=demo-admin-token airlock kill engage --scope agent --target ops-bot --reason "incident review" --json | field '["id"]')"
act '{"tool": "nodepool.list", "arguments": {"again": true}}'
AIRLOCK_TOKEN=demo-admin-token airlock kill release "$kill_id"

step "7. intern-bot is advisory: read-only tools only, whatever policy says"
session="$(curl -sS -H "Authorization: Bearer demo-readonly-agent-token" -X POST "$url/v1/sessions" -d '{"task": "tidy up"}' | field '["id"]')"
body="$(curl -sS -H "Authorization: Bearer demo-readonly-agent-token" -X POST "$url/v1/sessions/$session/actions" -d '{"tool": "nodepool.scale", "arguments": {"pool": "web", "count": 1}}')"
echo "    status=$(field '["status"]' <<<"$body")  reason: $(field '["decision"]["reasons"][0]["msg"]' <<<"$body")"

step "8. Every step is in the hash-chained journal"
airlock audit verify --config "$here/airlock.toml"

if $tour_only; then
    step "Tour done."
    exit 0
fi
step "airlock is running at $url (journal: $here/.airlock/journal.db)"
echo "Try the curl commands in examples/quickstart/README.md in another terminal. Ctrl-C stops it."
wait "$server"
