"""tools/call latency from a plain HTTP/1.1 keep-alive JSON-RPC client (Python's http.client, no SDK).

Used by bench/mcp_clients.py; standard library only:

    python3 bench/clients/raw_http.py --url http://127.0.0.1:PORT/mcp [--token T] --tool NAME
        [--args JSON] [--calls N] [--warmup N] [--sessions K] [--conc-calls M] [--api]

Each session is one TCP connection kept open for every request: `initialize`, then
`notifications/initialized`, then `tools/call`s. An answer may be JSON or an SSE stream; the
stream is read to its end (the server ends it after the response), which a client has to do
anyway before it can send the next request on the same connection.

With `--reconnect`, every `tools/call` goes on a new TCP connection (the MCP session stays), to
measure what a kept-alive connection saves at the server.

With `--api`, the same connection talks to airlock's HTTP API instead of MCP (`--url` is the
server's base URL): `POST /v1/sessions`, then `POST /v1/sessions/{id}/actions` per call.

1. One session: `warmup` calls, then `calls` sequential calls, each timed.
2. `sessions` sessions, one thread and one connection each: all open and warm up, then all call
   at once, `conc-calls` calls each.

Prints one JSON object on the last line of stdout, the same shape as ts_sdk.mjs.
"""

from __future__ import annotations

import argparse
import http.client
import json
import sys
import threading
import time
import urllib.parse
from typing import Any

PROTOCOL = "2025-11-25"


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
    p.add_argument("--api", action="store_true", help="airlock's HTTP API instead of MCP")
    p.add_argument("--reconnect", action="store_true",
                   help="a new TCP connection for every tools/call (the session stays): what a keep-alive saves")
    return p.parse_args()


class Failure(Exception):
    pass


def sse_messages(body: bytes) -> list[dict[str, Any]]:
    """The JSON-RPC messages in an SSE body (events with a JSON `data`; priming events have none)."""
    out = []
    for event in body.replace(b"\r\n", b"\n").split(b"\n\n"):
        data = b"\n".join(line[5:].lstrip(b" ") for line in event.split(b"\n") if line.startswith(b"data:"))
        if data.strip():
            out.append(json.loads(data))
    return out


class McpSession:
    def __init__(self, args: argparse.Namespace) -> None:
        u = urllib.parse.urlsplit(args.url)
        self.path = u.path or "/"
        self.conn = http.client.HTTPConnection(u.hostname, u.port, timeout=300)
        self.headers = {
            "Content-Type": "application/json",
            "Accept": "application/json, text/event-stream",
        }
        if args.token:
            self.headers["Authorization"] = f"Bearer {args.token}"
        self.tool = args.tool
        self.arguments = json.loads(args.args)
        self.next_id = 1
        self.errors = 0
        self.reconnect = args.reconnect
        self.address = (u.hostname, u.port)

    def post(self, message: dict[str, Any]) -> tuple[http.client.HTTPResponse, bytes]:
        self.conn.request("POST", self.path, body=json.dumps(message).encode(), headers=self.headers)
        resp = self.conn.getresponse()
        body = resp.read()  # to the end: the connection is reused for the next request
        if resp.status >= 400:
            raise Failure(f"HTTP {resp.status} for {message.get('method')}: {body[:300]!r}")
        return resp, body

    def request(self, method: str, params: dict[str, Any]) -> tuple[http.client.HTTPResponse, dict[str, Any]]:
        rid = self.next_id
        self.next_id += 1
        resp, body = self.post({"jsonrpc": "2.0", "id": rid, "method": method, "params": params})
        ctype = resp.getheader("Content-Type", "")
        messages = sse_messages(body) if ctype.startswith("text/event-stream") else [json.loads(body)]
        for m in messages:
            if m.get("id") == rid:
                if "error" in m:
                    raise Failure(f"{method}: {m['error']}")
                return resp, m["result"]
        raise Failure(f"{method}: no response with id {rid} in {body[:300]!r}")

    def open(self) -> None:
        resp, _ = self.request(
            "initialize",
            {"protocolVersion": PROTOCOL, "capabilities": {}, "clientInfo": {"name": "airlock-bench-raw", "version": "1.0.0"}},
        )
        sid = resp.getheader("Mcp-Session-Id")
        if sid:
            self.headers["Mcp-Session-Id"] = sid
        self.headers["MCP-Protocol-Version"] = PROTOCOL
        resp, _ = self.post({"jsonrpc": "2.0", "method": "notifications/initialized"})

    def call(self) -> None:
        if self.reconnect:
            self.conn.close()
            self.conn = http.client.HTTPConnection(*self.address, timeout=300)
        _, result = self.request("tools/call", {"name": self.tool, "arguments": self.arguments})
        if result.get("isError"):
            self.errors += 1

    def close(self) -> None:
        try:
            if "Mcp-Session-Id" in self.headers:
                self.conn.request("DELETE", self.path, headers=self.headers)
                self.conn.getresponse().read()
        except (OSError, http.client.HTTPException):
            pass
        self.conn.close()


class ApiSession(McpSession):
    """airlock's HTTP API on one keep-alive connection: one session, then one action per call."""

    def open(self) -> None:
        self.base = self.path.rstrip("/")
        self.session = self.json("POST", f"{self.base}/v1/sessions", {"task": "bench"})["id"]

    def json(self, method: str, path: str, body: dict[str, Any]) -> dict[str, Any]:
        self.conn.request(method, path, body=json.dumps(body).encode(), headers=self.headers)
        resp = self.conn.getresponse()
        raw = resp.read()
        if resp.status >= 400:
            raise Failure(f"HTTP {resp.status} on {method} {path}: {raw[:300]!r}")
        return json.loads(raw)

    def call(self) -> None:
        action = self.json(
            "POST",
            f"{self.base}/v1/sessions/{self.session}/actions",
            {"tool": self.tool, "arguments": self.arguments, "justification": "bench"},
        )
        result = action.get("result") or {}
        # `executing`: an allowed agent-executed tool (the agent would run it now); `succeeded`: an
        # upstream tool that airlock ran.
        if action.get("status") not in ("executing", "succeeded") or result.get("ok") is False:
            self.errors += 1

    def close(self) -> None:
        self.conn.close()


def main() -> int:
    args = parse_args()
    kind = ApiSession if args.api else McpSession
    out: dict[str, Any] = {"client": "raw-http"}

    one = kind(args)
    one.open()
    for _ in range(args.warmup):
        one.call()
    one.errors = 0
    seq: list[float] = []
    t0 = time.perf_counter()
    for _ in range(args.calls):
        t = time.perf_counter()
        one.call()
        seq.append((time.perf_counter() - t) * 1000)
    out["seq"] = {"lat_ms": seq, "wall_s": time.perf_counter() - t0}
    errors = one.errors
    one.close()

    if args.sessions > 0 and args.conc_calls > 0:
        sessions = [kind(args) for _ in range(args.sessions)]
        for s in sessions:
            s.open()
            for _ in range(max(1, (args.warmup + 1) // 2)):
                s.call()
            s.errors = 0
        start = threading.Barrier(args.sessions + 1)
        conc: list[float] = []
        failures: list[BaseException] = []
        lock = threading.Lock()

        def work(s: McpSession) -> None:
            mine = []
            start.wait()
            try:
                for _ in range(args.conc_calls):
                    t = time.perf_counter()
                    s.call()
                    mine.append((time.perf_counter() - t) * 1000)
            except BaseException as e:  # reported below
                failures.append(e)
            with lock:
                conc.extend(mine)

        threads = [threading.Thread(target=work, args=(s,), daemon=True) for s in sessions]
        for t in threads:
            t.start()
        start.wait()
        t0 = time.perf_counter()
        for t in threads:
            t.join()
        out["conc"] = {"sessions": args.sessions, "lat_ms": conc, "wall_s": time.perf_counter() - t0}
        if failures:
            raise failures[0]
        for s in sessions:
            errors += s.errors
            s.close()
    out["errors"] = errors
    print(json.dumps(out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
