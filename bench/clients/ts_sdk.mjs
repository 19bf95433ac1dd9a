// tools/call latency as the official TypeScript SDK sees it (StreamableHTTPClientTransport; Node's
// fetch keeps its connections open). Used by bench/mcp_clients.py; run with Node 22 from
// tests/interop (the SDK is loaded from tests/interop/node_modules, pinned there).
//
//   node bench/clients/ts_sdk.mjs --url URL [--token T] --tool NAME [--args JSON]
//        [--calls N] [--warmup N] [--sessions K] [--conc-calls M]
//
// 1. One client: connect + initialize, `warmup` calls, then `calls` sequential calls, each timed.
// 2. `sessions` new clients (each its own MCP session; Node's fetch gives each in-flight request
//    its own keep-alive connection): connect all, warm each up, then all call at once, `conc-calls`
//    calls each, each call timed, and the wall time of the whole phase.
//
// Prints one JSON object on the last line of stdout:
//   {"client": "ts-sdk", "seq": {"lat_ms": [...], "wall_s": s}, "conc": {"sessions": K,
//    "lat_ms": [...], "wall_s": s}, "errors": E}
import { createRequire } from "node:module";
import { fileURLToPath } from "node:url";
import path from "node:path";

const here = path.dirname(fileURLToPath(import.meta.url));
const require = createRequire(path.join(here, "../../tests/interop/package.json"));
const { Client } = require("@modelcontextprotocol/sdk/client/index.js");
const { StreamableHTTPClientTransport } = require("@modelcontextprotocol/sdk/client/streamableHttp.js");

function parse(argv) {
  const out = { calls: 100, warmup: 10, args: "{}", sessions: 8, concCalls: 25 };
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i];
    const next = () => {
      if (i + 1 >= argv.length) throw new Error(`${a} needs a value`);
      return argv[++i];
    };
    if (a === "--url") out.url = next();
    else if (a === "--token") out.token = next();
    else if (a === "--tool") out.tool = next();
    else if (a === "--args") out.args = next();
    else if (a === "--calls") out.calls = Number(next());
    else if (a === "--warmup") out.warmup = Number(next());
    else if (a === "--sessions") out.sessions = Number(next());
    else if (a === "--conc-calls") out.concCalls = Number(next());
    else throw new Error(`unknown argument ${a}`);
  }
  if (!out.url || !out.tool) throw new Error("--url and --tool are required");
  return out;
}

const opts = parse(process.argv.slice(2));
const args = JSON.parse(opts.args);
let errors = 0;

async function open() {
  const headers = opts.token ? { Authorization: `Bearer ${opts.token}` } : {};
  const transport = new StreamableHTTPClientTransport(new URL(opts.url), { requestInit: { headers } });
  const client = new Client({ name: "airlock-bench", version: "1.0.0" });
  await client.connect(transport);
  return { client, transport };
}

async function close({ client, transport }) {
  await transport.terminateSession().catch(() => {});
  await client.close().catch(() => {});
}

async function call(client) {
  const r = await client.callTool({ name: opts.tool, arguments: args });
  if (r.isError) errors += 1;
}

async function timedCalls(client, n, into) {
  for (let i = 0; i < n; i++) {
    const t0 = performance.now();
    await call(client);
    into.push(performance.now() - t0);
  }
}

async function main() {
  const out = { client: "ts-sdk" };

  const one = await open();
  for (let i = 0; i < opts.warmup; i++) await call(one.client);
  errors = 0;
  const seq = [];
  let t0 = performance.now();
  await timedCalls(one.client, opts.calls, seq);
  out.seq = { lat_ms: seq, wall_s: (performance.now() - t0) / 1000 };
  await close(one);

  if (opts.sessions > 0 && opts.concCalls > 0) {
    const many = await Promise.all(Array.from({ length: opts.sessions }, open));
    await Promise.all(many.map(async (s) => { for (let i = 0; i < Math.max(1, Math.ceil(opts.warmup / 2)); i++) await call(s.client); }));
    const conc = [];
    t0 = performance.now();
    await Promise.all(many.map((s) => timedCalls(s.client, opts.concCalls, conc)));
    out.conc = { sessions: opts.sessions, lat_ms: conc, wall_s: (performance.now() - t0) / 1000 };
    await Promise.all(many.map(close));
  }
  out.errors = errors;
  console.log(JSON.stringify(out));
}

main().then(
  () => process.exit(0),
  (e) => {
    console.error(e?.stack ?? String(e));
    process.exit(1);
  },
);
