#!/usr/bin/env python3
"""A fake MCP server over stdio, for airlock's upstream tests.

The real servers in tests/interop answer `initialize` with the newest protocol version they know
and never report a cost or echo what a gateway passed on, so they can't stand in for those
cases. This one is plain newline-delimited JSON-RPC, standard library only.

    fake_mcp_server.py            agrees to whatever protocol version the client asks for
    fake_mcp_server.py 2025-03-26 always answers with that version

Tools (listed two per page, so a client must follow `nextCursor`):
    version  returns the protocol version this server agreed to
    meta     returns the `_meta` object its call arrived with, as JSON text
    bill     returns the `cost` argument as the result's `_meta["airlock/cost_usd"]`
    echo     returns its arguments as `structuredContent`
    quiet    returns no `content` at all, only `_meta["airlock/cost_usd"]` from its `cost`
             argument (allowed by the schema's shape, and what some servers send)
"""
import json
import sys

from stdio_jsonrpc import serve, text, unknown_method, unknown_tool

PINNED = sys.argv[1] if len(sys.argv) > 1 else None
agreed = PINNED

TOOLS = [
    {"name": "version", "description": "Returns the protocol version this server speaks.",
     "inputSchema": {"type": "object", "properties": {}}, "annotations": {"readOnlyHint": True}},
    {"name": "meta", "description": "Returns the _meta object of this call as JSON.",
     "inputSchema": {"type": "object", "properties": {}}, "annotations": {"readOnlyHint": True}},
    {"name": "bill", "description": "A priced call: reports `cost` as its cost.",
     "inputSchema": {"type": "object"}},
    {"name": "echo", "description": "Returns its arguments.", "inputSchema": {"type": "object"}},
    {"name": "quiet", "description": "Answers without content.", "inputSchema": {"type": "object"}},
]


def handle(method, params, msg):
    global agreed
    if method == "initialize":
        agreed = PINNED or params.get("protocolVersion", "2025-11-25")
        return {"protocolVersion": agreed, "capabilities": {"tools": {}},
                "serverInfo": {"name": "fake-mcp-server", "version": agreed}}
    if method == "tools/list":
        # Two tools per page, so a client must follow `nextCursor` to see them all.
        start = int(params.get("cursor") or 0)
        result = {"tools": TOOLS[start:start + 2]}
        if start + 2 < len(TOOLS):
            result["nextCursor"] = str(start + 2)
        return result
    if method != "tools/call":
        raise unknown_method(method)
    name, args = params.get("name"), params.get("arguments") or {}
    if name == "version":
        return text(f"speaking {agreed}")
    if name == "meta":
        return text(json.dumps(params.get("_meta") or {}))
    if name == "bill":
        return {**text("billed"), "_meta": {"airlock/cost_usd": args.get("cost")}}
    if name == "quiet":
        return {"_meta": {"airlock/cost_usd": args.get("cost")}} if "cost" in args else {}
    if name == "echo":
        return {**text("echoed"), "structuredContent": args}
    raise unknown_tool(name)


serve(handle)
