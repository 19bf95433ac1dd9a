// Sequential tools/call latency as the official TypeScript SDK sees it, on one keep-alive
// connection (Node's fetch reuses it), through airlock or straight to an upstream.
//
//   node tests/interop/clients/ts_latency.mjs --url URL [--token T] --tool NAME [--args JSON]
//        [--calls N] [--warmup N]
//
// Prints one JSON object on the last line of stdout:
//   {"client": "typescript", "calls": N, "total_ms": …, "p50_ms": …, "p99_ms": …, "max_ms": …,
//    "errors": K}
// A call that returns isError counts in `errors`; the timings include it.
import { Client } from "@modelcontextprotocol/sdk/client/index.js";
import { StreamableHTTPClientTransport } from "@modelcontextprotocol/sdk/client/streamableHttp.js";

function parse(argv) {
  const out = { calls: 50, warmup: 3, args: "{}" };
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
    else throw new Error(`unknown argument ${a}`);
  }
  if (!out.url || !out.tool) throw new Error("--url and --tool are required");
  return out;
}

function percentile(sorted, p) {
  if (sorted.length === 0) return 0;
  const i = Math.min(sorted.length - 1, Math.max(0, Math.ceil((p / 100) * sorted.length) - 1));
  return sorted[i];
}

async function main() {
  const opts = parse(process.argv.slice(2));
  const headers = opts.token ? { Authorization: `Bearer ${opts.token}` } : {};
  const transport = new StreamableHTTPClientTransport(new URL(opts.url), { requestInit: { headers } });
  const client = new Client({ name: "airlock-latency", version: "1.0.0" });
  await client.connect(transport);
  const args = JSON.parse(opts.args);
  let errors = 0;
  const call = async () => {
    const r = await client.callTool({ name: opts.tool, arguments: args });
    if (r.isError) errors += 1;
  };
  for (let i = 0; i < opts.warmup; i++) await call();
  errors = 0;
  const times = [];
  const started = performance.now();
  for (let i = 0; i < opts.calls; i++) {
    const t0 = performance.now();
    await call();
    times.push(performance.now() - t0);
  }
  const total = performance.now() - started;
  await transport.terminateSession().catch(() => {});
  await client.close();
  const sorted = [...times].sort((a, b) => a - b);
  const round = (x) => Math.round(x * 1000) / 1000;
  console.log(
    JSON.stringify({
      client: "typescript",
      calls: opts.calls,
      total_ms: round(total),
      p50_ms: round(percentile(sorted, 50)),
      p99_ms: round(percentile(sorted, 99)),
      max_ms: round(sorted[sorted.length - 1] ?? 0),
      errors,
    }),
  );
}

main().catch((e) => {
  console.error(e?.stack ?? String(e));
  process.exit(1);
});
