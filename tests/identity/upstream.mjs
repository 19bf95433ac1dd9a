// An MCP server over streamable HTTP that tells what headers its requests arrived with, to show
// that airlock never passes an agent's bearer token on to an upstream. Built with the official
// TypeScript SDK (pinned in package.json).
//
//   node upstream.mjs     binds 127.0.0.1 on a free port, serves /mcp, prints `LISTENING <port>`,
//                         and exits when its standard input closes
//   node upstream.mjs --issuer URL --audience AUD
//                         the same, as a protected resource: every request needs an access token
//                         of that issuer (checked against its published keys) for that audience,
//                         else `401` with a `WWW-Authenticate` challenge
//
// With --issuer, each request's token is also judged on stdout as `TOKEN valid <claims JSON>` or
// `TOKEN refused <reason>`, and POST /_test/refuse-seen makes it refuse every token it has
// accepted so far (as if they were revoked), to show that a client gets a new one.
//
// Tool `headers`: returns, as JSON text, the headers of the HTTP request that carried the call.
// Every request's `authorization` header (or null) is also printed to stdout as `AUTH <value>`.
import http from 'node:http';
import { createInterface } from 'node:readline';
import { McpServer } from '@modelcontextprotocol/sdk/server/mcp.js';
import { StreamableHTTPServerTransport } from '@modelcontextprotocol/sdk/server/streamableHttp.js';
import { createRemoteJWKSet, jwtVerify } from 'jose';

const args = process.argv.slice(2);
const option = (name) => {
  const i = args.indexOf(name);
  return i >= 0 ? args[i + 1] : undefined;
};
const issuer = option('--issuer');
const audience = option('--audience');
const keys = issuer ? createRemoteJWKSet(new URL(`${issuer}/jwks`)) : undefined;
const accepted = new Set();
const revoked = new Set();

// The token's claims when it is acceptable, else the reason it is not.
async function judge(authorization) {
  const token = /^Bearer (.+)$/.exec(authorization ?? '')?.[1];
  if (!token) return { reason: 'no bearer token' };
  if (revoked.has(token)) return { reason: 'revoked' };
  try {
    const { payload } = await jwtVerify(token, keys, { issuer, audience, typ: 'at+jwt' });
    accepted.add(token);
    return { claims: payload };
  } catch (e) {
    return { reason: `${e.code ?? 'invalid'}: ${e.message}` };
  }
}

function serverFor() {
  const server = new McpServer({ name: 'header-echo', version: '1' });
  server.registerTool(
    'headers',
    { description: 'Returns the headers this call arrived with.', annotations: { readOnlyHint: true } },
    async (extra) => ({ content: [{ type: 'text', text: JSON.stringify(extra.requestInfo?.headers ?? {}) }] }),
  );
  return server;
}

const httpServer = http.createServer(async (req, res) => {
  console.log(`AUTH ${req.headers.authorization ?? 'null'}`);
  if (req.method === 'POST' && req.url === '/_test/refuse-seen') {
    for (const t of accepted) revoked.add(t);
    res.writeHead(204).end();
    return;
  }
  if (issuer) {
    const { claims, reason } = await judge(req.headers.authorization);
    if (!claims) {
      console.log(`TOKEN refused ${reason}`);
      res.writeHead(401, {
        'content-type': 'application/json',
        'www-authenticate': `Bearer error="invalid_token", error_description="${reason.replace(/"/g, "'")}"`,
      });
      res.end(JSON.stringify({ error: 'invalid_token' }));
      return;
    }
    console.log(`TOKEN valid ${JSON.stringify(claims)}`);
  }
  if (!req.url.startsWith('/mcp')) {
    res.writeHead(404).end();
    return;
  }
  // Stateless: a new server and transport for every request.
  const transport = new StreamableHTTPServerTransport({ sessionIdGenerator: undefined, enableJsonResponse: true });
  const server = serverFor();
  res.on('close', () => {
    transport.close();
    server.close();
  });
  await server.connect(transport);
  await transport.handleRequest(req, res);
});
await new Promise((resolve) => httpServer.listen(0, '127.0.0.1', resolve));
console.log(`LISTENING ${httpServer.address().port}`);
createInterface({ input: process.stdin }).on('close', () => process.exit(0));
