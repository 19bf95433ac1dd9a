// An MCP server over streamable HTTP that tells what headers its requests arrived with, to show
// that airlock never passes an agent's bearer token on to an upstream. Built with the official
// TypeScript SDK (pinned in package.json).
//
//   node upstream.mjs     binds 127.0.0.1 on a free port, serves /mcp, prints `LISTENING <port>`,
//                         and exits when its standard input closes
//
// Tool `headers`: returns, as JSON text, the headers of the HTTP request that carried the call.
// Every request's `authorization` header (or null) is also printed to stdout as `AUTH <value>`.
import http from 'node:http';
import { createInterface } from 'node:readline';
import { McpServer } from '@modelcontextprotocol/sdk/server/mcp.js';
import { StreamableHTTPServerTransport } from '@modelcontextprotocol/sdk/server/streamableHttp.js';

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
