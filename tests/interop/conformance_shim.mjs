// A tiny HTTP forwarding shim for tests: the official MCP conformance suite cannot send custom
// headers, and airlock's /mcp wants `Authorization: Bearer <token>`, so the suite talks to this
// shim and the shim adds the header.
//
//   node tests/interop/conformance_shim.mjs --target http://127.0.0.1:PORT --token TOKEN
//
// Listens on 127.0.0.1 (a port the kernel picks), prints `LISTENING <port>` on stdout, and
// forwards every request (any method and path) to the target's scheme, host and port, keeping the
// request's own path and query (the target URL's path, if any, is not used). Request and response
// bodies are streamed both ways without buffering, so SSE responses (POST and GET streams) pass
// event by event; a client that goes away aborts the upstream request, and an upstream that ends a
// stream ends the client's. All headers go through as they are, except hop-by-hop ones and
// `Authorization`, which is replaced by `Bearer TOKEN`. `Host` and `Origin` are kept, so the
// target's DNS-rebinding checks see what the client sent. An unreachable target answers 502.
// Exits when its stdin closes (so it never outlives the test that started it), or on SIGTERM.
import http from "node:http";
import https from "node:https";

const argv = process.argv.slice(2);
let target, token;
for (let i = 0; i < argv.length; i++) {
  if (argv[i] === "--target") target = argv[++i];
  else if (argv[i] === "--token") token = argv[++i];
  else {
    console.error(`conformance_shim: unknown argument ${argv[i]}`);
    process.exit(2);
  }
}
if (!target || token === undefined) {
  console.error("usage: conformance_shim.mjs --target URL --token TOKEN");
  process.exit(2);
}
const base = new URL(target);
const client = base.protocol === "https:" ? https : http;
const agent = new client.Agent({ keepAlive: true });

// RFC 9110 7.6.1 connection-specific headers, never forwarded.
const HOP = new Set([
  "connection", "keep-alive", "proxy-connection", "proxy-authenticate", "proxy-authorization",
  "te", "trailer", "transfer-encoding", "upgrade",
]);
function forwardable(headers, extraHop) {
  const out = {};
  for (const [k, v] of Object.entries(headers)) {
    if (!HOP.has(k) && !extraHop.has(k)) out[k] = v;
  }
  return out;
}
const listed = (value) =>
  new Set(String(value ?? "").split(",").map((s) => s.trim().toLowerCase()).filter(Boolean));

const server = http.createServer((req, res) => {
  const headers = forwardable(req.headers, listed(req.headers.connection));
  delete headers.authorization;
  headers.authorization = `Bearer ${token}`;
  const upstream = client.request(
    {
      protocol: base.protocol,
      hostname: base.hostname,
      port: base.port || (base.protocol === "https:" ? 443 : 80),
      method: req.method,
      path: req.url,
      headers, // keeps the client's Host
      agent,
    },
    (up) => {
      res.writeHead(up.statusCode ?? 502, up.statusMessage, forwardable(up.headers, listed(up.headers.connection)));
      res.flushHeaders(); // an SSE stream's headers go out before its first event
      up.pipe(res); // chunk by chunk, as each arrives
      up.on("error", () => res.destroy());
      up.on("aborted", () => res.destroy());
    },
  );
  upstream.on("error", (e) => {
    if (!res.headersSent) {
      res.writeHead(502, { "content-type": "text/plain" });
      res.end(`conformance_shim: upstream error: ${e.message}\n`);
    } else res.destroy();
  });
  // The client went away before the response was complete (e.g. it closed an SSE stream): tell
  // the target by aborting the upstream request.
  res.on("close", () => {
    if (!res.writableFinished) upstream.destroy();
  });
  req.pipe(upstream);
});
server.requestTimeout = 0;
server.headersTimeout = 0;
server.keepAliveTimeout = 5000;

function stop() {
  server.closeAllConnections?.();
  server.close();
  process.exit(0);
}
process.on("SIGTERM", stop);
process.on("SIGINT", stop);
process.stdin.on("end", stop);
process.stdin.on("error", stop);
process.stdin.resume();

server.listen(0, "127.0.0.1", () => {
  process.stdout.write(`LISTENING ${server.address().port}\n`);
});
