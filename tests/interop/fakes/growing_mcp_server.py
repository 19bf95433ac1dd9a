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
from stdio_jsonrpc import serve, text, unknown_method, unknown_tool

TOOLS = [
    {"name": "grow", "description": "Adds a tool named `name`.",
     "inputSchema": {"type": "object", "properties": {"name": {"type": "string"}}, "required": ["name"]}},
    {"name": "shout", "description": "Returns `text` in capitals.",
     "inputSchema": {"type": "object", "properties": {"text": {"type": "string"}}}},
]


def handle(method, params, msg):
    if method == "initialize":
        return {"protocolVersion": params.get("protocolVersion", "2025-11-25"),
                "capabilities": {"tools": {"listChanged": True}},
                "serverInfo": {"name": "growing-mcp-server", "version": "1"}}
    if method == "tools/list":
        return {"tools": TOOLS}
    if method != "tools/call":
        raise unknown_method(method)
    name, args = params.get("name"), params.get("arguments") or {}
    if name == "grow":
        new = str(args.get("name", ""))
        if new and all(t["name"] != new for t in TOOLS):
            TOOLS.append({"name": new, "description": f"Grown at run time: {new}.",
                          "inputSchema": {"type": "object"}})
            return text(f"grew {new}"), [{"method": "notifications/tools/list_changed"}]
        return text(f"grew {new}")
    if name == "shout":
        return text(str(args.get("text", "")).upper())
    if any(t["name"] == name for t in TOOLS):
        return text(f"grown {name}")
    raise unknown_tool(name)


serve(handle)
