"""Drive airlock (or any MCP server) with the official Python SDK, `mcp` 2.3.0.

Run it with the interop virtualenv's Python (tests/interop/install.sh makes it):

    tests/interop/.venv/bin/python tests/interop/clients/py_client.py \\
        --url URL [--token TOKEN] [--header 'K: V']... [--mode auto|legacy|2026-07-28] \\
        [--list] [--call NAME JSON_ARGS]... [--timeout SECONDS] [--trace]
    tests/interop/.venv/bin/python tests/interop/clients/py_client.py \\
        --stdio-command CMD [--stdio-arg ARG]... [--stdio-env K=V]... [--stdio-cwd DIR] \\
        [--mode ...] [--list] [--call NAME JSON_ARGS]...

`--mode auto` (the SDK's default, also ours) probes `server/discover` at 2026-07-28 and falls back to
the `initialize` handshake; `--mode legacy` goes straight to `initialize`. Use `--stdio-arg=--x` for
an argument that starts with `--`, so that argparse takes it as a value.

On success it prints one JSON object as the last line of stdout and exits 0:

    {"client": "python", "sdk": "mcp 2.3.0", "mode": "auto",
     "server": {"name": ..., "version": ..., ["title": ...]} | null,
     "protocol_version": "2025-11-25",
     "capabilities": {...server capabilities as on the wire...},
     "tools": ["name", ...],                      # [] without --list
     "tool_annotations": {"name": {...}},         # tools that carry annotations, with --list
     "calls": [{"name": ..., "is_error": bool, "text": "text blocks joined by \\n",
                "structured": <structuredContent or null>, "content_types": ["text", ...],
                "error": null | {"code": int, "message": str, "data": ...}}]}

A call answered with a JSON-RPC error (not a tool result) is recorded with `is_error: true`,
`text` set to the error message and `error` set; check `error` to tell the two apart. Anything
else (connection refused, HTTP 401, a handshake or validation failure, the timeout) ends the run
with exit status 1 and a message on stderr.
"""

from __future__ import annotations

import argparse
import json
import sys
import traceback
from contextlib import AsyncExitStack
from importlib.metadata import version as dist_version
from typing import Any

import anyio
import httpx2
from mcp import Client, MCPError, StdioServerParameters
from mcp.client.streamable_http import streamable_http_client
from mcp_types import CONNECTION_CLOSED


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    target = p.add_mutually_exclusive_group(required=True)
    target.add_argument("--url", help="streamable HTTP endpoint, e.g. http://127.0.0.1:7878/mcp")
    target.add_argument("--stdio-command", help="launch this MCP server and talk to it over stdio")
    p.add_argument("--token", help="sent as 'Authorization: Bearer TOKEN' (HTTP only)")
    p.add_argument("--header", action="append", default=[], metavar="'K: V'", help="extra HTTP header")
    p.add_argument("--stdio-arg", action="append", default=[], metavar="ARG")
    p.add_argument("--stdio-env", action="append", default=[], metavar="K=V",
                   help="added to HOME, LOGNAME, PATH, SHELL, TERM, USER inherited by the SDK")
    p.add_argument("--stdio-cwd")
    p.add_argument("--mode", default="auto", help="auto (default), legacy, or a 2026+ protocol version")
    p.add_argument("--list", action="store_true", help="list tools")
    p.add_argument("--call", nargs=2, action="append", default=[], metavar=("NAME", "JSON_ARGS"))
    p.add_argument("--timeout", type=float, default=60.0, help="for the whole run (default 60)")
    p.add_argument("--trace", action="store_true", help="log HTTP requests and responses to stderr")
    return p.parse_args()


def dump(model: Any) -> Any:
    if model is None:
        return None
    return model.model_dump(mode="json", by_alias=True, exclude_none=True)


HTTP_ERRORS: list[str] = []
"""Every HTTP status >= 400 seen, for the failure message (the SDK turns them into bare MCPErrors)."""


def http_client(args: argparse.Namespace) -> httpx2.AsyncClient:
    headers: dict[str, str] = {}
    if args.token:
        headers["Authorization"] = f"Bearer {args.token}"
    for h in args.header:
        if ":" not in h:
            raise SystemExit(f"--header wants 'K: V', got {h!r}")
        k, v = h.split(":", 1)
        headers[k.strip()] = v.strip()

    async def on_request(request: httpx2.Request) -> None:
        if args.trace:
            body = request.content.decode(errors="replace") if request.method == "POST" else ""
            print(f"py_client trace: > {request.method} {request.url} {body[:400]}", file=sys.stderr)

    async def on_response(response: httpx2.Response) -> None:
        r = response.request
        if response.status_code >= 400:
            HTTP_ERRORS.append(f"HTTP {response.status_code} on {r.method} {r.url}")
        if args.trace:
            print(f"py_client trace: < {response.status_code} {r.method} {r.url} "
                  f"{response.headers.get('content-type', '')}", file=sys.stderr)

    hooks = {"request": [on_request], "response": [on_response]}
    # The SDK's default client uses 30 s for connect/write/pool and 300 s for reads; the whole
    # run is bounded by --timeout anyway.
    return httpx2.AsyncClient(headers=headers, timeout=httpx2.Timeout(30.0, read=300.0), event_hooks=hooks)


def text_of(result: Any) -> str:
    return "\n".join(block.text for block in result.content if getattr(block, "type", None) == "text")


async def run(args: argparse.Namespace) -> dict[str, Any]:
    out: dict[str, Any] = {
        "client": "python",
        "sdk": f"mcp {dist_version('mcp')}",
        "mode": args.mode,
        "server": None,
        "protocol_version": None,
        "capabilities": None,
        "tools": [],
        "tool_annotations": {},
        "calls": [],
    }
    calls = []
    for name, raw in args.call:
        try:
            arguments = json.loads(raw)
        except json.JSONDecodeError as e:
            raise SystemExit(f"--call {name}: JSON_ARGS is not JSON: {e}")
        if not isinstance(arguments, dict):
            raise SystemExit(f"--call {name}: JSON_ARGS must be a JSON object")
        calls.append((name, arguments))

    async with AsyncExitStack() as stack:
        if args.stdio_command:
            env = {}
            for kv in args.stdio_env:
                if "=" not in kv:
                    raise SystemExit(f"--stdio-env wants K=V, got {kv!r}")
                k, v = kv.split("=", 1)
                env[k] = v
            server: Any = StdioServerParameters(
                command=args.stdio_command, args=args.stdio_arg, env=env or None, cwd=args.stdio_cwd
            )
        else:
            # Headers go through our own httpx2 client; `Client(url)` alone cannot carry them.
            # A client we pass in is not closed by the SDK, so the exit stack closes it.
            http = await stack.enter_async_context(http_client(args))
            server = streamable_http_client(args.url, http_client=http)

        client = await stack.enter_async_context(Client(server, mode=args.mode))
        out["server"] = dump(client.server_info)
        out["protocol_version"] = client.protocol_version
        out["capabilities"] = dump(client.server_capabilities)
        if args.list:
            cursor = None
            while True:
                page = await client.list_tools(cursor=cursor)
                for tool in page.tools:
                    out["tools"].append(tool.name)
                    if tool.annotations is not None:
                        out["tool_annotations"][tool.name] = dump(tool.annotations)
                cursor = page.next_cursor
                if not cursor:
                    break
        for name, arguments in calls:
            try:
                result = await client.call_tool(name, arguments)
            except MCPError as e:
                if e.code == CONNECTION_CLOSED and e.message == "Connection closed":
                    raise  # made by the SDK itself: the connection is gone, not an answer
                out["calls"].append({
                    "name": name, "is_error": True, "text": e.message, "structured": None,
                    "content_types": [], "error": dump(e.error),
                })
                continue
            out["calls"].append({
                "name": name,
                "is_error": bool(result.is_error),
                "text": text_of(result),
                "structured": result.structured_content,
                "content_types": [getattr(b, "type", None) for b in result.content],
                "error": None,
            })
    return out


def leaves(exc: BaseException) -> list[BaseException]:
    if isinstance(exc, BaseExceptionGroup):
        return [leaf for sub in exc.exceptions for leaf in leaves(sub)]
    return [exc]


def main() -> int:
    args = parse_args()
    result: dict[str, Any] = {}

    async def bounded() -> None:
        with anyio.fail_after(args.timeout):
            result.update(await run(args))

    try:
        anyio.run(bounded)
    except SystemExit:
        raise
    except BaseException as e:  # report every failure, including exception groups and timeouts
        traceback.print_exception(e, file=sys.stderr)
        found = leaves(e)
        summary = "; ".join(
            f"timed out after {args.timeout:g} s" if isinstance(x, TimeoutError) else f"{type(x).__name__}: {x}"
            for x in found
        )
        if HTTP_ERRORS:
            summary += f" [HTTP errors seen: {', '.join(HTTP_ERRORS[-3:])}]"
        print(f"py_client failed ({args.mode} mode): {summary}", file=sys.stderr)
        return 1
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
