#!/usr/bin/env python3
"""A fake MCP server over stdio whose tool list grows while it runs, for airlock's tests of what
happens when an upstream adds a tool (`notifications/tools/list_changed`). Plain
newline-delimited JSON-RPC, standard library only.

    growing_mcp_server.py

Tools at start:
    grow   adds a tool named by its `name` argument (which answers with the text `grown NAME`),
           then sends `notifications/tools/list_changed`
    shout  returns its `text` argument in capitals
"""
import json
import sys

TOOLS = [
    {"name": "grow", "description": "Adds a tool named `name`.",
     "inputSchema": {"type": "object", "properties": {"name": {"type": "string"}}, "required": ["name"]}},
    {"name": "shout", "description": "Returns `text` in capitals.",
     "inputSchema": {"type": "object", "properties": {"text": {"type": "string"}}}},
]


def send(msg):
    sys.stdout.write(json.dumps(msg) + "\n")
    sys.stdout.flush()


def text(t):
    return {"content": [{"type": "text", "text": t}]}


for line in sys.stdin:
    if not line.strip():
        continue
    msg = json.loads(line)
    if "id" not in msg or "method" not in msg:
        continue  # notifications and answers need no reply
    method, params = msg["method"], msg.get("params") or {}
    changed = False
    if method == "initialize":
        result = {"protocolVersion": params.get("protocolVersion", "2025-11-25"),
                  "capabilities": {"tools": {"listChanged": True}},
                  "serverInfo": {"name": "growing-mcp-server", "version": "1"}}
    elif method == "tools/list":
        result = {"tools": TOOLS}
    elif method == "tools/call":
        name, args = params.get("name"), params.get("arguments") or {}
        if name == "grow":
            new = str(args.get("name", ""))
            if new and all(t["name"] != new for t in TOOLS):
                TOOLS.append({"name": new, "description": f"Grown at run time: {new}.",
                              "inputSchema": {"type": "object"}})
                changed = True
            result = text(f"grew {new}")
        elif name == "shout":
            result = text(str(args.get("text", "")).upper())
        elif any(t["name"] == name for t in TOOLS):
            result = text(f"grown {name}")
        else:
            send({"jsonrpc": "2.0", "id": msg["id"], "error": {"code": -32602, "message": f"unknown tool: {name}"}})
            continue
    elif method == "ping":
        result = {}
    else:
        send({"jsonrpc": "2.0", "id": msg["id"], "error": {"code": -32601, "message": f"method not found: {method}"}})
        continue
    send({"jsonrpc": "2.0", "id": msg["id"], "result": result})
    if changed:
        send({"jsonrpc": "2.0", "method": "notifications/tools/list_changed"})
