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

from stdio_jsonrpc import serve, text, unknown_method, unknown_tool

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


def handle(method, params, msg):
    if method == "initialize":
        return {"protocolVersion": params.get("protocolVersion", "2025-06-18"), "capabilities": {"tools": {}},
                "serverInfo": {"name": "typed-mcp-server", "version": "1"}}
    if method == "tools/list":
        return {"tools": TOOLS}
    if method != "tools/call":
        raise unknown_method(method)
    name, args = params.get("name"), params.get("arguments") or {}
    with open("calls.jsonl", "a") as log:
        log.write(json.dumps({"name": name, "arguments": args}) + "\n")
    if name == "open_port":
        return text(f"opened port {int(args.get('port', 0))}")
    if name in ("echo", "broken"):
        return text(json.dumps(args))
    raise unknown_tool(name)


serve(handle)
