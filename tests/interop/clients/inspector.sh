#!/usr/bin/env bash
# Drive a streamable HTTP MCP endpoint with the MCP Inspector CLI (@modelcontextprotocol/inspector),
# run under the Node 22 that install.sh puts in tests/interop/node_modules/.bin/node (the inspector
# wants Node >= 22.19; the machine's Node is 20).
#
#   tests/interop/clients/inspector.sh URL [--token TOKEN] INSPECTOR_ARGS...
#   tests/interop/clients/inspector.sh http://127.0.0.1:7878/mcp --token T --method tools/list
#   tests/interop/clients/inspector.sh http://127.0.0.1:7878/mcp --token T \
#       --method tools/call --tool-name every__echo --tool-arg message=hi
#   ... --method tools/call --tool-name every__get-sum --tool-args-json '{"a": 1, "b": 2}'
#
# --token T becomes --header "Authorization: Bearer T"; every other argument goes to
# `mcp-inspector --cli` unchanged (--header, --method, --tool-name, --tool-arg k=v...,
# --tool-args-json, --protocol-era legacy|auto, ...). The wrapper adds --transport http (unless
# given), --stored-auth-only (a 401 fails at once with exit 3 instead of starting an interactive
# OAuth login), --format json and -q, and runs with HOME set to a throw-away directory (the
# inspector creates ~/.mcp-inspector/ otherwise).
#
# Output: the method's MCP result as one JSON line on stdout, e.g. {"tools": [...]} or
# {"content": [...], "isError"?: true}; exit 0. On failure the inspector's error envelope
# ({"error": {"code", "message"}}) is on stderr and the exit status is non-zero.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
node="$here/node_modules/.bin/node"
inspector="$here/node_modules/.bin/mcp-inspector"
for f in "$node" "$inspector"; do
    [ -x "$f" ] || { echo "inspector.sh: $f is missing: run tests/interop/install.sh" >&2; exit 2; }
done
[ $# -ge 1 ] || { echo "usage: inspector.sh URL [--token TOKEN] INSPECTOR_ARGS..." >&2; exit 2; }

url="$1"
shift
args=()
transport=0
while [ $# -gt 0 ]; do
    case "$1" in
        --token) [ $# -ge 2 ] || { echo "inspector.sh: --token needs a value" >&2; exit 2; }
            args+=(--header "Authorization: Bearer $2"); shift 2 ;;
        --token=*) args+=(--header "Authorization: Bearer ${1#--token=}"); shift ;;
        --transport | --transport=*) transport=1; args+=("$1"); shift ;;
        *) args+=("$1"); shift ;;
    esac
done
[ "$transport" = 1 ] || args+=(--transport http)

home="$(mktemp -d)"
out="$home/out.json"
trap 'rm -rf "$home"' EXIT
status=0
HOME="$home" "$node" "$inspector" --cli "$url" --stored-auth-only --format json -q "${args[@]}" \
    </dev/null >"$out" || status=$?
if [ "$status" -ne 0 ]; then
    cat "$out" >&2
    echo "inspector.sh: mcp-inspector exited with status $status" >&2
    exit "$status"
fi
# --format json prints {"result": ...}; print the result itself on one line.
"$node" -e '
const doc = JSON.parse(require("fs").readFileSync(process.argv[1], "utf8"));
if (!doc || typeof doc !== "object" || !("result" in doc)) {
  console.error("inspector.sh: unexpected output: " + JSON.stringify(doc));
  process.exit(1);
}
console.log(JSON.stringify(doc.result));
' "$out"
