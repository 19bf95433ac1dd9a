#!/usr/bin/env python3
"""A fake MCP server over stdio whose calls take their time and leave a trace, for airlock's
tests of calls that outlive their time limit, their caller or a kill switch.

Tools:
    sleep  sleeps `seconds` (default 1), then creates the file `path` if given, and answers
    touch  creates the file `path` at once and answers: a file that exists means the call
           reached this server
    die    creates the file `path` if given, then exits without answering: a server that
           acted and crashed mid-call

It handles one request at a time: while `sleep` runs, nothing else is read.
"""
import os
import pathlib
import time

from stdio_jsonrpc import serve, text, unknown_method, unknown_tool

TOOLS = [
    {"name": "sleep", "description": "Sleeps, then answers.", "inputSchema": {"type": "object"}},
    {"name": "touch", "description": "Creates a file.", "inputSchema": {"type": "object"}},
    {"name": "die", "description": "Acts, then crashes before answering.", "inputSchema": {"type": "object"}},
]


def mark(path):
    if path:
        pathlib.Path(path).write_text("called\n")


def handle(method, params, msg):
    if method == "initialize":
        return {"protocolVersion": params.get("protocolVersion", "2025-11-25"), "capabilities": {"tools": {}},
                "serverInfo": {"name": "slow-mcp-server", "version": "1"}}
    if method == "tools/list":
        return {"tools": TOOLS}
    if method != "tools/call":
        raise unknown_method(method)
    name, args = params.get("name"), params.get("arguments") or {}
    if name == "sleep":
        seconds = float(args.get("seconds", 1))
        time.sleep(seconds)
        mark(args.get("path"))
        return text(f"slept {seconds}s")
    if name == "touch":
        mark(args.get("path"))
        return text("touched")
    if name == "die":
        mark(args.get("path"))
        os._exit(3)
    raise unknown_tool(name)


serve(handle)
