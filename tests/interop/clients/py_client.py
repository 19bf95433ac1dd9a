"""Drive airlock (or any MCP server) with the official Python SDK (`mcp` 2.3.0).

Prints one JSON object on the last line of stdout:
{"server": {...}, "protocol_version": "...", "tools": [...], "calls": [{"name", "is_error", "text"}]}

    py_client.py --url URL --token TOKEN [--mode auto|legacy] [--list] [--call NAME JSON]...
    py_client.py --stdio-command CMD [--stdio-arg A]... [--stdio-env K=V]... [--list] [--call ...]
"""

import argparse
import asyncio
import json
import sys

from mcp import Client, StdioServerParameters
from mcp.client.streamable_http import streamable_http_client
from mcp.shared._httpx_utils import create_mcp_http_client


def parse_args():
    p = argparse.ArgumentParser()
    p.add_argument("--url")
    p.add_argument("--token")
    p.add_argument("--mode", default="auto")
    p.add_argument("--header", action="append", default=[], help="K: V")
    p.add_argument("--stdio-command")
    p.add_argument("--stdio-arg", action="append", default=[])
    p.add_argument("--stdio-env", action="append", default=[])
    p.add_argument("--list", action="store_true")
    p.add_argument("--call", nargs=2, action="append", default=[], metavar=("NAME", "JSON"))
    p.add_argument("--timeout", type=float, default=60.0)
    return p.parse_args()


def text_of(result):
    parts = []
    for block in result.content:
        text = getattr(block, "text", None)
        if text is not None:
            parts.append(text)
    return "\n".join(parts)


async def main(args):
    if args.stdio_command:
        env = dict(kv.split("=", 1) for kv in args.stdio_env)
        server = StdioServerParameters(command=args.stdio_command, args=args.stdio_arg, env=env or None)
    else:
        headers = {}
        if args.token:
            headers["Authorization"] = f"Bearer {args.token}"
        for h in args.header:
            k, v = h.split(":", 1)
            headers[k.strip()] = v.strip()
        server = streamable_http_client(args.url, http_client=create_mcp_http_client(headers=headers))
    out = {"server": None, "protocol_version": None, "tools": [], "calls": []}
    async with Client(server, mode=args.mode) as client:
        info = client.server_info
        if info is not None:
            out["server"] = {"name": info.name, "version": info.version}
        out["protocol_version"] = client.protocol_version
        if args.list:
            tools = await client.list_tools()
            out["tools"] = [t.name for t in tools.tools]
        for name, raw in args.call:
            result = await client.call_tool(name, json.loads(raw))
            out["calls"].append({"name": name, "is_error": bool(result.is_error), "text": text_of(result)})
    print(json.dumps(out))


if __name__ == "__main__":
    args = parse_args()
    try:
        asyncio.run(asyncio.wait_for(main(args), args.timeout))
    except Exception as e:  # report, don't hide
        print(f"py_client failed: {type(e).__name__}: {e}", file=sys.stderr)
        sys.exit(1)
