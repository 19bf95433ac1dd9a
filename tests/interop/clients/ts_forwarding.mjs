// Drive airlock with the official TypeScript SDK (1.32) as a client that offers sampling,
// elicitation (form and URL) and roots, and records every notification it receives, to test
// what airlock forwards between its clients and its upstreams.
//
//   node tests/interop/clients/ts_forwarding.mjs --url URL --token TOKEN [--bare] STEP...
//
// Steps run in order: --ping | --list | --call NAME JSON | --set-level LEVEL | --subscribe URI |
// --unsubscribe URI | --wait MS. `--bare` offers no client capabilities (and registers no
// handlers). Prints one JSON object as the last line of stdout:
//   {"capabilities": {...server's...}, "steps": [{"step", "ok", "result" | "error"}],
//    "requests": [{"method", "params"}], "notifications": [{"method", "params"}]}
import { Client } from "@modelcontextprotocol/sdk/client/index.js";
import { StreamableHTTPClientTransport } from "@modelcontextprotocol/sdk/client/streamableHttp.js";
import {
  CreateMessageRequestSchema,
  ElicitRequestSchema,
  ListRootsRequestSchema,
  LoggingMessageNotificationSchema,
  PromptListChangedNotificationSchema,
  ResourceListChangedNotificationSchema,
  ResourceUpdatedNotificationSchema,
  ToolListChangedNotificationSchema,
} from "@modelcontextprotocol/sdk/types.js";

const argv = process.argv.slice(2);
let url, token, bare = false;
const steps = [];
for (let i = 0; i < argv.length; i++) {
  const a = argv[i];
  if (a === "--url") url = argv[++i];
  else if (a === "--token") token = argv[++i];
  else if (a === "--bare") bare = true;
  else if (a === "--ping" || a === "--list") steps.push([a.slice(2)]);
  else if (a === "--call") steps.push(["call", argv[++i], argv[++i]]);
  else if (["--set-level", "--subscribe", "--unsubscribe", "--wait"].includes(a)) steps.push([a.slice(2), argv[++i]]);
  else {
    console.error(`unknown argument ${a}`);
    process.exit(2);
  }
}

const capabilities = bare ? {} : { sampling: {}, elicitation: { form: {}, url: {} }, roots: { listChanged: false } };
const client = new Client({ name: "forwarding-test", version: "1.0.0" }, { capabilities });
const requests = [];
const notifications = [];
if (!bare) {
  client.setRequestHandler(CreateMessageRequestSchema, async (req) => {
    requests.push({ method: req.method, params: req.params });
    const prompt = req.params.messages[0]?.content?.text ?? "";
    return { role: "assistant", content: { type: "text", text: `sampled: ${prompt}` }, model: "test-model" };
  });
  client.setRequestHandler(ElicitRequestSchema, async (req) => {
    requests.push({ method: req.method, params: req.params });
    return req.params.mode === "url" ? { action: "accept" } : { action: "accept", content: { name: "Ada" } };
  });
  client.setRequestHandler(ListRootsRequestSchema, async (req) => {
    requests.push({ method: req.method, params: req.params ?? null });
    return { roots: [{ uri: "file:///work/project", name: "project" }] };
  });
}
for (const schema of [
  LoggingMessageNotificationSchema,
  ToolListChangedNotificationSchema,
  PromptListChangedNotificationSchema,
  ResourceListChangedNotificationSchema,
  ResourceUpdatedNotificationSchema,
]) {
  client.setNotificationHandler(schema, (n) => notifications.push({ method: n.method, params: n.params ?? null }));
}

const headers = token ? { Authorization: `Bearer ${token}` } : {};
const transport = new StreamableHTTPClientTransport(new URL(url), { requestInit: { headers } });
await client.connect(transport);
const out = { capabilities: client.getServerCapabilities() ?? null, steps: [], requests, notifications };
for (const [kind, a, b] of steps) {
  const step = [kind, a, b].filter((x) => x !== undefined).join(" ");
  try {
    let result = null;
    if (kind === "ping") result = await client.ping();
    else if (kind === "list") result = (await client.listTools()).tools.map((t) => t.name);
    else if (kind === "call") {
      const r = await client.callTool({ name: a, arguments: JSON.parse(b) });
      result = { is_error: r.isError ?? false, text: r.content?.map((c) => c.text ?? "").join("") };
    } else if (kind === "set-level") result = await client.setLoggingLevel(a);
    else if (kind === "subscribe") result = await client.subscribeResource({ uri: a });
    else if (kind === "unsubscribe") result = await client.unsubscribeResource({ uri: a });
    else if (kind === "wait") await new Promise((r) => setTimeout(r, Number(a)));
    out.steps.push({ step, ok: true, result });
  } catch (e) {
    out.steps.push({ step, ok: false, error: { code: e.code ?? null, message: String(e.message ?? e) } });
  }
}
await transport.terminateSession().catch(() => {});
await client.close();
console.log(JSON.stringify(out));
