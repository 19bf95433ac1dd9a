#!/usr/bin/env python3
"""A fake MCP server over stdio that speaks exactly one protocol version.

For airlock's tests of upstreams on older protocol versions: the real servers in this folder
answer `initialize` with the newest version they know, so they cannot stand in for a server that
only speaks, say, 2025-03-26. This one answers with the version given as its first argument,
whatever the client asked for, and offers one tool, `version`, that returns it.

Plain JSON-RPC over newline-delimited stdio, standard library only.
"""
import json
import sys

VERSION = sys.argv[1] if len(sys.argv) > 1 else "2025-03-26"


def reply(msg_id, result=None, error=None):
    out = {"jsonrpc": "2.0", "id": msg_id}
    if error is not None:
        out["error"] = error
    else:
        out["result"] = result
    sys.stdout.write(json.dumps(out) + "\n")
    sys.stdout.flush()


for line in sys.stdin:
    line = line.strip()
    if not line:
        continue
    msg = json.loads(line)
    method = msg.get("method")
    if "id" not in msg:
        continue  # notifications (initialized, cancelled) need no answer
    if method == "initialize":
        reply(msg["id"], {
            "protocolVersion": VERSION,
            "capabilities": {"tools": {}},
            "serverInfo": {"name": "fake-versioned-server", "version": VERSION},
        })
    elif method == "tools/list":
        reply(msg["id"], {"tools": [{
            "name": "version",
            "description": "Returns the protocol version this server speaks.",
            "inputSchema": {"type": "object", "properties": {}},
            "annotations": {"readOnlyHint": True},
        }]})
    elif method == "tools/call":
        reply(msg["id"], {"content": [{"type": "text", "text": f"speaking {VERSION}"}], "isError": False})
    elif method == "ping":
        reply(msg["id"], {})
    else:
        reply(msg["id"], error={"code": -32601, "message": f"method not found: {method}"})
