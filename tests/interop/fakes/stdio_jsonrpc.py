"""The loop the fake MCP servers here share: newline-delimited JSON-RPC over stdio, standard
library only. Each fake supplies `handle(method, params, msg)`; this module reads requests,
answers `ping`, skips notifications and answers from the client, and writes results and errors.
"""
import json
import sys


class RpcError(Exception):
    """An error answer: `code` and `message` as JSON-RPC has them."""

    def __init__(self, code, message):
        super().__init__(message)
        self.code = code
        self.message = message


def unknown_method(method):
    return RpcError(-32601, f"method not found: {method}")


def unknown_tool(name):
    return RpcError(-32602, f"unknown tool: {name}")


def text(t):
    """A tool result with one text block."""
    return {"content": [{"type": "text", "text": t}]}


def send(msg):
    sys.stdout.write(json.dumps(msg) + "\n")
    sys.stdout.flush()


def serve(handle):
    """Answers each request with `handle(method, params, msg)`: a result, or `(result,
    notifications)` to send those notifications after the answer. `handle` raises `RpcError` for
    an error answer."""
    for line in sys.stdin:
        if not line.strip():
            continue
        msg = json.loads(line)
        if "id" not in msg or "method" not in msg:
            continue  # notifications (initialized, cancelled) and answers need no reply
        method, params = msg["method"], msg.get("params") or {}
        try:
            out = {} if method == "ping" else handle(method, params, msg)
        except RpcError as e:
            send({"jsonrpc": "2.0", "id": msg["id"], "error": {"code": e.code, "message": e.message}})
            continue
        result, after = out if isinstance(out, tuple) else (out, [])
        send({"jsonrpc": "2.0", "id": msg["id"], "result": result})
        for notification in after:
            send({"jsonrpc": "2.0", **notification})
