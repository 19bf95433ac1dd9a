// Drive airlock (or any MCP server) with the official TypeScript SDK, @modelcontextprotocol/sdk 1.32.
// Runs under the machine's Node (20) or tests/interop/node_modules/.bin/node (22); the SDK is
// resolved from tests/interop/node_modules next to this file, whatever the working directory.
//
//   node tests/interop/clients/ts_client.mjs --url URL [--token TOKEN] [--header 'K: V']...
//        [--list] [--call NAME JSON_ARGS]... [--timeout SECONDS]
//   node tests/interop/clients/ts_client.mjs --stdio-command CMD [--stdio-arg ARG]...
//        [--stdio-env K=V]... [--stdio-cwd DIR] [--list] [--call NAME JSON_ARGS]...
//
// The SDK 1.32 only knows the `initialize` handshake; it offers 2025-11-25 and accepts
// 2025-11-25, 2025-06-18, 2025-03-26, 2024-11-05 and 2024-10-07 in the answer.
//
// On success it prints one JSON object as the last line of stdout and exits 0 (same shape as
// py_client.py):
//   {"client": "typescript", "sdk": "@modelcontextprotocol/sdk 1.32.2", "mode": "legacy",
//    "server": {"name", "version", ["title"]} | null, "protocol_version": "2025-11-25",
//    "capabilities": {...}, "tools": [names], "tool_annotations": {name: {...}},
//    "calls": [{"name", "is_error", "text", "structured", "content_types", "error"}]}
// A call answered with a JSON-RPC error is recorded with is_error: true, text = the error
// message and error = {code, message, data}. Any other failure: exit 1, message on stderr.
import { readFileSync } from "node:fs";
import { Client } from "@modelcontextprotocol/sdk/client/index.js";
import { StreamableHTTPClientTransport } from "@modelcontextprotocol/sdk/client/streamableHttp.js";
import { StdioClientTransport, getDefaultEnvironment } from "@modelcontextprotocol/sdk/client/stdio.js";
import { McpError } from "@modelcontextprotocol/sdk/types.js";

const USAGE = "usage: ts_client.mjs (--url URL [--token T] [--header 'K: V']... | --stdio-command CMD "
  + "[--stdio-arg A]... [--stdio-env K=V]... [--stdio-cwd DIR]) [--list] [--call NAME JSON]... [--timeout S]";

function parse(argv) {
  const out = { calls: [], list: false, headers: [], stdioArgs: [], stdioEnv: [], timeout: 60 };
  const value = (i, flag) => {
    if (i >= argv.length) throw new Error(`${flag} needs a value\n${USAGE}`);
    return argv[i];
  };
  for (let i = 0; i < argv.length; i++) {
    let a = argv[i];
    let inline;
    // Accept --flag=value too (handy for values that start with --).
    const eq = a.indexOf("=");
    if (a.startsWith("--") && eq > 0 && a !== "--call") {
      inline = a.slice(eq + 1);
      a = a.slice(0, eq);
    }
    const next = (flag) => (inline !== undefined ? inline : value(++i, flag));
    if (a === "--url") out.url = next(a);
    else if (a === "--token") out.token = next(a);
    else if (a === "--header") out.headers.push(next(a));
    else if (a === "--stdio-command") out.stdioCommand = next(a);
    else if (a === "--stdio-arg") out.stdioArgs.push(next(a));
    else if (a === "--stdio-env") out.stdioEnv.push(next(a));
    else if (a === "--stdio-cwd") out.stdioCwd = next(a);
    else if (a === "--timeout") out.timeout = Number(next(a));
    else if (a === "--list") out.list = true;
    else if (a === "--call") out.calls.push([value(++i, a), value(++i, a)]);
    else if (a === "--help" || a === "-h") {
      console.log(USAGE);
      process.exit(0);
    } else throw new Error(`unknown argument ${argv[i]}\n${USAGE}`);
  }
  if (!out.url === !out.stdioCommand) throw new Error(`give exactly one of --url and --stdio-command\n${USAGE}`);
  if (!(out.timeout > 0)) throw new Error("--timeout wants a positive number of seconds");
  return out;
}

function sdkVersion() {
  try {
    const url = new URL("../node_modules/@modelcontextprotocol/sdk/package.json", import.meta.url);
    return JSON.parse(readFileSync(url, "utf8")).version;
  } catch {
    return "unknown";
  }
}

function isLocalError(e) {
  return (e.code === -32000 && /Connection closed|Request was cancelled/.test(e.message))
    || (e.code === -32001 && /Request timed out|Maximum total timeout exceeded/.test(e.message));
}

function fail(message) {
  console.error(`ts_client failed: ${message}`);
  process.exit(1);
}

let args;
try {
  args = parse(process.argv.slice(2));
} catch (e) {
  fail(e.message);
}

const calls = args.calls.map(([name, raw]) => {
  let parsed;
  try {
    parsed = JSON.parse(raw);
  } catch (e) {
    fail(`--call ${name}: JSON_ARGS is not JSON: ${e.message}`);
  }
  if (parsed === null || typeof parsed !== "object" || Array.isArray(parsed)) {
    fail(`--call ${name}: JSON_ARGS must be a JSON object`);
  }
  return [name, parsed];
});

let negotiated = null;
let transport;
if (args.url) {
  const headers = {};
  if (args.token) headers.Authorization = `Bearer ${args.token}`;
  for (const h of args.headers) {
    const i = h.indexOf(":");
    if (i < 0) fail(`--header wants 'K: V', got ${JSON.stringify(h)}`);
    headers[h.slice(0, i).trim()] = h.slice(i + 1).trim();
  }
  // `requestInit.headers` go on every POST, GET and DELETE the transport sends.
  transport = new StreamableHTTPClientTransport(new URL(args.url), { requestInit: { headers } });
} else {
  const env = { ...getDefaultEnvironment() };
  for (const kv of args.stdioEnv) {
    const i = kv.indexOf("=");
    if (i < 0) fail(`--stdio-env wants K=V, got ${JSON.stringify(kv)}`);
    env[kv.slice(0, i)] = kv.slice(i + 1);
  }
  transport = new StdioClientTransport({
    command: args.stdioCommand,
    args: args.stdioArgs,
    env,
    cwd: args.stdioCwd,
    stderr: "inherit",
  });
}
// The client tells the transport the negotiated version; the stdio transport has no getter.
const setVersion = transport.setProtocolVersion?.bind(transport);
transport.setProtocolVersion = (v) => {
  negotiated = v;
  setVersion?.(v);
};

const client = new Client({ name: "airlock-interop-ts", version: "1.0.0" });
// Per request, a bit more than the whole run's bound, so that the bound below fires first.
const requestOptions = { timeout: args.timeout * 1000 + 1000 };

let timedOut = false;
const timer = setTimeout(async () => {
  timedOut = true;
  console.error(`ts_client failed: timed out after ${args.timeout} s`);
  await Promise.race([client.close().catch(() => {}), new Promise((r) => setTimeout(r, 2000))]);
  process.exit(1);
}, args.timeout * 1000);
timer.unref();

try {
  await client.connect(transport, requestOptions);
  const out = {
    client: "typescript",
    sdk: `@modelcontextprotocol/sdk ${sdkVersion()}`,
    mode: "legacy",
    server: client.getServerVersion() ?? null,
    protocol_version: negotiated ?? transport.protocolVersion ?? null,
    capabilities: client.getServerCapabilities() ?? null,
    tools: [],
    tool_annotations: {},
    calls: [],
  };
  if (args.list) {
    let cursor;
    do {
      const page = await client.listTools(cursor ? { cursor } : undefined, requestOptions);
      for (const t of page.tools) {
        out.tools.push(t.name);
        if (t.annotations) out.tool_annotations[t.name] = t.annotations;
      }
      cursor = page.nextCursor;
    } while (cursor);
  }
  for (const [name, argsObj] of calls) {
    try {
      const r = await client.callTool({ name, arguments: argsObj }, undefined, requestOptions);
      const content = r.content ?? [];
      out.calls.push({
        name,
        is_error: Boolean(r.isError),
        text: content.filter((c) => c.type === "text").map((c) => c.text).join("\n"),
        structured: r.structuredContent ?? null,
        content_types: content.map((c) => c.type),
        error: null,
      });
    } catch (e) {
      // The SDK makes these two itself (-32000 connection closed / cancelled, -32001 request
      // timeout): they are failures of the run, not answers from the server.
      if (!(e instanceof McpError) || isLocalError(e)) throw e;
      out.calls.push({
        name,
        is_error: true,
        text: e.message,
        structured: null,
        content_types: [],
        error: { code: e.code, message: e.message, ...(e.data === undefined ? {} : { data: e.data }) },
      });
    }
  }
  clearTimeout(timer);
  await client.close();
  if (timedOut) await new Promise(() => {}); // the timer's handler exits
  console.log(JSON.stringify(out));
  process.exit(0);
} catch (e) {
  if (timedOut) await new Promise(() => {}); // the timer's handler exits
  console.error(e?.stack ?? String(e));
  await Promise.race([client.close().catch(() => {}), new Promise((r) => setTimeout(r, 2000))]);
  const cause = e?.cause ? ` (cause: ${e.cause.code ?? ""} ${e.cause.message ?? e.cause})` : "";
  fail(`${e?.message ?? String(e)}${cause}`);
}
