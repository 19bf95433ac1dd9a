// The official TypeScript MCP SDK (@modelcontextprotocol/sdk, pinned in package.json) as an OAuth
// client of airlock: it connects without a token, reads airlock's `401` challenge, discovers the
// protected resource metadata and the authorization server from it, gets a token with the client
// credentials grant (for the resource the metadata names), and retries with it. The SDK (1.32)
// asks for the scope its client credentials provider is configured with (`--scope`), not the
// one in the challenge.
//
//   node oauth_client.mjs --url URL --issuer ISSUER --client ID --secret SECRET [--scope S] [--call NAME]
//
// Prints one JSON object as the last line of stdout: {"tools": [names], "calls": [{name,
// is_error, text}], "token_scope": "...", "token_audience": "..."}. Any failure: exit 1, message
// on stderr.
import { Client } from '@modelcontextprotocol/sdk/client/index.js';
import { StreamableHTTPClientTransport } from '@modelcontextprotocol/sdk/client/streamableHttp.js';
import { ClientCredentialsProvider } from '@modelcontextprotocol/sdk/client/auth-extensions.js';

const args = {};
for (let i = 2; i < process.argv.length; i += 2) args[process.argv[i].replace(/^--/, '')] = process.argv[i + 1];
for (const required of ['url', 'issuer', 'client', 'secret']) {
  if (!args[required]) {
    console.error(`--${required} is required`);
    process.exit(1);
  }
}

try {
  const provider = new ClientCredentialsProvider({
    clientId: args.client,
    clientSecret: args.secret,
    expectedIssuer: args.issuer,
    scope: args.scope,
  });
  // Every exchange is written to stderr, for whoever reads a failure.
  const traced = async (url, init) => {
    const response = await fetch(url, init);
    const challenge = response.headers.get('www-authenticate');
    console.error(`${init?.method ?? 'GET'} ${url} -> ${response.status}${challenge ? ` (${challenge})` : ''}`);
    return response;
  };
  const transport = new StreamableHTTPClientTransport(new URL(args.url), { authProvider: provider, fetch: traced });
  const client = new Client({ name: 'airlock-oauth-test', version: '1' });
  await client.connect(transport);
  const tools = (await client.listTools()).tools.map((t) => t.name);
  const calls = [];
  if (args.call) {
    const r = await client.callTool({ name: args.call, arguments: {} });
    calls.push({ name: args.call, is_error: Boolean(r.isError), text: r.content?.map((c) => c.text).join('\n') });
  }
  const token = provider.tokens()?.access_token ?? '';
  const claims = JSON.parse(Buffer.from(token.split('.')[1] ?? '', 'base64url').toString() || '{}');
  await client.close();
  console.log(JSON.stringify({ tools, calls, token_scope: claims.scope, token_audience: claims.aud }));
  process.exit(0);
} catch (e) {
  console.error(e?.stack ?? String(e));
  process.exit(1);
}
