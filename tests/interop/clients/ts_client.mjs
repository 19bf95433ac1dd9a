// Drive airlock (or any MCP server) with the official TypeScript SDK.
// Prints one JSON object on the last line of stdout:
// {"server": {...}, "protocol_version": "...", "tools": [...], "calls": [{"name", "is_error", "text"}]}
//
//   node ts_client.mjs --url URL --token TOKEN [--list] [--call NAME JSON]...
import { Client } from "@modelcontextprotocol/sdk/client/index.js";
import { StreamableHTTPClientTransport } from "@modelcontextprotocol/sdk/client/streamableHttp.js";

function parse(argv) {
  const out = { calls: [], list: false };
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i];
    if (a === "--url") out.url = argv[++i];
    else if (a === "--token") out.token = argv[++i];
    else if (a === "--list") out.list = true;
    else if (a === "--call") out.calls.push([argv[++i], argv[++i]]);
    else throw new Error(`unknown argument ${a}`);
  }
  return out;
}

const args = parse(process.argv.slice(2));
const headers = args.token ? { Authorization: `Bearer ${args.token}` } : {};
const transport = new StreamableHTTPClientTransport(new URL(args.url), { requestInit: { headers } });
const client = new Client({ name: "airlock-interop-ts", version: "1.0.0" });
try {
  await client.connect(transport);
  const out = {
    server: client.getServerVersion() ?? null,
    protocol_version: transport.protocolVersion ?? null,
    tools: [],
    calls: [],
  };
  if (args.list) {
    const tools = await client.listTools();
    out.tools = tools.tools.map((t) => t.name);
  }
  for (const [name, raw] of args.calls) {
    const r = await client.callTool({ name, arguments: JSON.parse(raw) });
    const text = (r.content ?? []).filter((c) => c.type === "text").map((c) => c.text).join("\n");
    out.calls.push({ name, is_error: Boolean(r.isError), text });
  }
  await client.close();
  console.log(JSON.stringify(out));
} catch (e) {
  console.error(`ts_client failed: ${e?.stack ?? e}`);
  process.exit(1);
}
