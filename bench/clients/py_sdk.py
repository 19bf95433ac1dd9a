"""tools/call latency as the official Python SDK (`mcp` 2.3.0, streamable HTTP over httpx) sees it.

Used by bench/mcp_clients.py; run with tests/interop/.venv/bin/python (the SDK is pinned there):

    python bench/clients/py_sdk.py --url URL [--token T] --tool NAME [--args JSON] [--calls N]
        [--warmup N] [--sessions K] [--conc-calls M] [--mode auto|legacy]

1. One client (one httpx client: one keep-alive connection for the calls): connect + initialize,
   `warmup` calls, then `calls` sequential calls, each timed.
2. `sessions` new clients, each with its own httpx client and MCP session, in this one process
   (asyncio): connect all, warm each up, then all call at once, `conc-calls` calls each.

Prints one JSON object on the last line of stdout, the same shape as ts_sdk.mjs:
    {"client": "py-sdk", "seq": {"lat_ms": [...], "wall_s": s},
     "conc": {"sessions": K, "lat_ms": [...], "wall_s": s}, "errors": E}
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from contextlib import AsyncExitStack
from typing import Any

import anyio
import httpx2
from mcp import Client
from mcp.client.streamable_http import streamable_http_client


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser()
    p.add_argument("--url", required=True)
    p.add_argument("--token")
    p.add_argument("--tool", required=True)
    p.add_argument("--args", default="{}")
    p.add_argument("--calls", type=int, default=100)
    p.add_argument("--warmup", type=int, default=10)
    p.add_argument("--sessions", type=int, default=8)
    p.add_argument("--conc-calls", type=int, default=25)
    p.add_argument("--mode", default="auto", help="the SDK's protocol mode (default auto, as the SDK)")
    return p.parse_args()


ERRORS = 0


async def open_client(stack: AsyncExitStack, args: argparse.Namespace) -> Any:
    headers = {"Authorization": f"Bearer {args.token}"} if args.token else {}
    http = await stack.enter_async_context(
        httpx2.AsyncClient(headers=headers, timeout=httpx2.Timeout(30.0, read=300.0))
    )
    return await stack.enter_async_context(Client(streamable_http_client(args.url, http_client=http), mode=args.mode))


async def call(client: Any, args: argparse.Namespace, arguments: dict[str, Any]) -> None:
    global ERRORS
    result = await client.call_tool(args.tool, arguments)
    if result.is_error:
        ERRORS += 1


async def timed_calls(client: Any, args: argparse.Namespace, arguments: dict[str, Any], n: int, into: list[float]) -> None:
    for _ in range(n):
        t0 = time.perf_counter()
        await call(client, args, arguments)
        into.append((time.perf_counter() - t0) * 1000)


async def run(args: argparse.Namespace) -> dict[str, Any]:
    global ERRORS
    arguments = json.loads(args.args)
    out: dict[str, Any] = {"client": "py-sdk"}

    async with AsyncExitStack() as stack:
        client = await open_client(stack, args)
        for _ in range(args.warmup):
            await call(client, args, arguments)
        ERRORS = 0
        seq: list[float] = []
        t0 = time.perf_counter()
        await timed_calls(client, args, arguments, args.calls, seq)
        out["seq"] = {"lat_ms": seq, "wall_s": time.perf_counter() - t0}

    if args.sessions > 0 and args.conc_calls > 0:
        async with AsyncExitStack() as stack:
            clients = [await open_client(stack, args) for _ in range(args.sessions)]

            async def warm(c: Any) -> None:
                for _ in range(max(1, (args.warmup + 1) // 2)):
                    await call(c, args, arguments)

            async with anyio.create_task_group() as tg:
                for c in clients:
                    tg.start_soon(warm, c)
            conc: list[float] = []
            t0 = time.perf_counter()
            async with anyio.create_task_group() as tg:
                for c in clients:
                    tg.start_soon(timed_calls, c, args, arguments, args.conc_calls, conc)
            out["conc"] = {"sessions": args.sessions, "lat_ms": conc, "wall_s": time.perf_counter() - t0}
    out["errors"] = ERRORS
    return out


def main() -> int:
    args = parse_args()
    out = anyio.run(run, args)
    print(json.dumps(out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
