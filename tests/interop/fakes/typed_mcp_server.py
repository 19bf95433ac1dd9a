#!/usr/bin/env python3
"""A fake MCP server over stdio whose tools declare typed arguments, for airlock's input-schema
tests. Plain newline-delimited JSON-RPC, standard library only.

Like many real servers it is lenient: `open_port` turns whatever `port` it gets into a number,
so the string "22" opens port 22. Every call it receives is appended to `calls.jsonl` in its
working directory (airlock runs it in the config file's directory), so a test can tell what
reached it.

Tools:
    open_port  {"port": integer 1..65535} (required); answers "opened port N"
    echo       {"text": string}; answers with its arguments
    broken     a schema that is not valid JSON Schema (`"type": "integr"`)
"""
import json
import sys

TOOLS = [
    {"name": "open_port", "description": "Opens a firewall port.",
     "inputSchema": {"type": "object",
                     "properties": {"port": {"type": "integer", "minimum": 1, "maximum": 65535}},
                     "required": ["port"], "additionalProperties": False}},
    {"name": "echo", "description": "Returns its arguments.",
     "inputSchema": {"type": "object", "properties": {"text": {"type": "string"}}}},
    {"name": "broken", "description": "Declares a schema no validator can compile.",
     "inputSchema": {"type": "object", "properties": {"n": {"type": "integr"}}}},
]


def send(msg):
    sys.stdout.write(json.dumps(msg) + "\n")
    sys.stdout.flush()


for line in sys.stdin:
    if not line.strip():
        continue
    msg = json.loads(line)
    if "id" not in msg or "method" not in msg:
        continue
    method, params = msg["method"], msg.get("params") or {}
    if method == "initialize":
        result = {"protocolVersion": params.get("protocolVersion", "2025-06-18"), "capabilities": {"tools": {}},
                  "serverInfo": {"name": "typed-mcp-server", "version": "1"}}
    elif method == "tools/list":
        result = {"tools": TOOLS}
    elif method == "tools/call":
        name, args = params.get("name"), params.get("arguments") or {}
        with open("calls.jsonl", "a") as log:
            log.write(json.dumps({"name": name, "arguments": args}) + "\n")
        if name == "open_port":
            result = {"content": [{"type": "text", "text": f"opened port {int(args.get('port', 0))}"}]}
        elif name in ("echo", "broken"):
            result = {"content": [{"type": "text", "text": json.dumps(args)}]}
        else:
            send({"jsonrpc": "2.0", "id": msg["id"], "error": {"code": -32602, "message": f"unknown tool: {name}"}})
            continue
    elif method == "ping":
        result = {}
    else:
        send({"jsonrpc": "2.0", "id": msg["id"], "error": {"code": -32601, "message": f"method not found: {method}"}})
        continue
    send({"jsonrpc": "2.0", "id": msg["id"], "result": result})
