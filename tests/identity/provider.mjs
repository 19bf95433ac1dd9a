// A real OpenID provider for airlock's access-token tests: the certified `oidc-provider` package,
// configured for machine clients.
//
//   node provider.mjs            binds 127.0.0.1 on a free port, prints `LISTENING <port>`, and
//                                exits when its standard input closes (the test that started it
//                                went away)
//
// What it offers (the issuer is http://127.0.0.1:<port>):
//   - the client credentials grant at /token for the clients below (client_secret_basic or
//     client_secret_post), with resource indicators (RFC 8707): the token's `aud` is the
//     `resource` asked for, and it is a JWT access token (RFC 9068) signed ES256 with the
//     provider's key, carrying `client_id`, `scope` and the client's `groups`;
//   - discovery at /.well-known/openid-configuration and its keys at /jwks;
//   - a count of the tokens issued to each client, at GET /_test/issued (test-only, see below);
//   - for the tests only, under /_test (never part of a real provider):
//       POST /_test/rotate  a new signing key, published first and used from now on (the old one
//                           is still published), as a provider rotating its keys does;
//       GET  /_test/issued  {client_id: number of access tokens issued}
//       POST /_test/forge   body {claims, kid?}: a token with those claims signed ES256 by a key
//                           the provider never published (under `kid`, default "stranger").
//
//   - sign-in for people (the authorization code flow with PKCE) for the client `airlock-ui`,
//     through oidc-provider's development sign-in page, which takes any login name and any
//     password; the people below get their groups, anyone else none. `airlock-ui`'s redirect URI
//     is http://127.0.0.1:<any port>/ui/login/callback, so that airlock can listen on a port
//     chosen at run time (a real provider registers the exact URI). Consent is implied for it;
//   - the device authorization grant (RFC 8628) for the public client `airlock-cli` (`airlock
//     login`), through /device and the same sign-in page.
//
// People (login name → groups):
//   ana          ["sre", "airlock-approvers"]
//   mallory      ["sre"]                   in the group an approval asks for, not an approver
//
// Clients (secret = "<id>-secret"):
//   ops-bot      groups ["ops"]            a client airlock lists in [[agents]]
//   ci-runner    groups ["ci"]             a client airlock knows only by template
//   visitor      groups ["guests"]         a client no template matches
//   short-lived  groups ["ci"]             its tokens live 2 seconds
//   airlock      groups []                 airlock itself, asking for tokens for an upstream
//   airlock-brief groups []                the same, with tokens that live 3 seconds
import http from 'node:http';
import { createInterface } from 'node:readline';
import Provider from 'oidc-provider';
import { SignJWT, exportJWK, generateKeyPair } from 'jose';

const CLIENTS = {
  'ops-bot': ['ops'],
  'ci-runner': ['ci'],
  visitor: ['guests'],
  'short-lived': ['ci'],
  airlock: [],
  'airlock-brief': [],
};
const PEOPLE = {
  ana: ['sre', 'airlock-approvers'],
  mallory: ['sre'],
};
const UI_CLIENT = 'airlock-ui';
const CLI_CLIENT = 'airlock-cli';
// How long each client's access tokens live, in seconds (default 300).
const TTL = { 'short-lived': 2, 'airlock-brief': 3 };
// Every scope a token may carry: the resource server grants what is asked among these.
const SCOPES = ['openid', 'profile', 'email', 'groups', 'mcp', 'tools:fake__version', 'tools:fake__*', 'tools:*.list', 'tools:nodepool.*', 'admin', 'echo.read'];

async function signingKey(kid) {
  const { privateKey } = await generateKeyPair('ES256', { extractable: true });
  const jwk = await exportJWK(privateKey);
  return { ...jwk, kid, alg: 'ES256', use: 'sig' };
}

function configuration(keys) {
  return {
    clients: [
      ...Object.keys(CLIENTS).map((id) => ({
        client_id: id,
        client_secret: `${id}-secret`,
        grant_types: ['client_credentials'],
        redirect_uris: [],
        response_types: [],
        id_token_signed_response_alg: 'ES256',
      })),
      {
        // `airlock login`: a public client with the device grant (RFC 8628).
        client_id: CLI_CLIENT,
        token_endpoint_auth_method: 'none',
        grant_types: ['urn:ietf:params:oauth:grant-type:device_code'],
        response_types: [],
        redirect_uris: [],
        id_token_signed_response_alg: 'ES256',
      },
      {
        client_id: UI_CLIENT,
        client_secret: `${UI_CLIENT}-secret`,
        grant_types: ['authorization_code'],
        response_types: ['code'],
        redirect_uris: ['http://127.0.0.1/ui/login/callback'],
        id_token_signed_response_alg: 'ES256',
      },
    ],
    findAccount: (_ctx, id) => ({
      accountId: id,
      claims: () => ({ sub: id, preferred_username: id, email: `${id}@example.com`, groups: PEOPLE[id] ?? [] }),
    }),
    claims: { openid: ['sub'], profile: ['preferred_username'], email: ['email'], groups: ['groups'] },
    // The claims a scope asks for go into the ID token too, where airlock reads them.
    conformIdTokenClaims: false,
    // airlock's own review UI is a first-party client: its users are not asked to consent.
    loadExistingGrant: async (ctx) => {
      const grantId = ctx.oidc.result?.consent?.grantId || ctx.oidc.session.grantIdFor(ctx.oidc.client.clientId);
      if (grantId) return ctx.oidc.provider.Grant.find(grantId);
      const clientId = ctx.oidc.client.clientId;
      if (clientId !== UI_CLIENT && clientId !== CLI_CLIENT) return undefined;
      const grant = new ctx.oidc.provider.Grant({ clientId, accountId: ctx.oidc.session.accountId });
      // Everything asked for is granted; a person's access token for a resource (airlock's
      // API) carries the scopes asked for.
      const asked = String(ctx.oidc.params.scope ?? '').split(' ').filter((s) => SCOPES.includes(s));
      grant.addOIDCScope(['openid', 'profile', 'email', 'groups', ...asked].join(' '));
      grant.addOIDCClaims(['sub', 'preferred_username', 'email', 'groups']);
      for (const r of [ctx.oidc.params.resource].flat().filter(Boolean)) grant.addResourceScope(r, asked.join(' '));
      await grant.save();
      return grant;
    },
    jwks: { keys },
    scopes: SCOPES,
    features: {
      devInteractions: { enabled: true },
      clientCredentials: { enabled: true },
      deviceFlow: { enabled: true },
      introspection: { enabled: false },
      revocation: { enabled: false },
      resourceIndicators: {
        enabled: true,
        // A token is always for one resource, and only for one that was asked for.
        defaultResource: (_ctx, _client, oneOf) => oneOf,
        useGrantedResource: () => true,
        getResourceServerInfo: (_ctx, resource, client) => ({
          scope: SCOPES.join(' '),
          audience: resource,
          accessTokenTTL: TTL[client.clientId] ?? 300,
          accessTokenFormat: 'jwt',
          jwt: { sign: { alg: 'ES256' } },
        }),
      },
    },
    // Machine clients' groups; a person's access token carries their name and groups.
    extraTokenClaims: (_ctx, token) =>
      token.accountId
        ? { preferred_username: token.accountId, groups: PEOPLE[token.accountId] ?? [] }
        : { groups: CLIENTS[token.clientId] ?? [] },
    cookies: { keys: ['airlock-test-cookie-key'] },
    pkce: { required: () => true },
  };
}

// airlock's callback on whatever port it listens on (test-only: see the header).
function allowAnyPort(p) {
  const exact = p.Client.prototype.redirectUriAllowed;
  p.Client.prototype.redirectUriAllowed = function allowed(value) {
    return exact.call(this, value)
      || (this.clientId === UI_CLIENT && /^http:\/\/127\.0\.0\.1:\d+\/ui\/login\/callback$/.test(value));
  };
}

async function readJson(req) {
  const chunks = [];
  for await (const chunk of req) chunks.push(chunk);
  return chunks.length ? JSON.parse(Buffer.concat(chunks).toString()) : {};
}

function answer(res, status, body) {
  res.writeHead(status, { 'content-type': 'application/json' });
  res.end(JSON.stringify(body));
}

// Whoever started us reads the first line only; oidc-provider's later notices must not kill us
// when that pipe is closed.
process.stdout.on('error', () => {});

const server = http.createServer();
await new Promise((resolve) => server.listen(0, '127.0.0.1', resolve));
const port = server.address().port;
const issuer = `http://127.0.0.1:${port}`;

let keys = [await signingKey('key-1')];
let provider = new Provider(issuer, configuration(keys));
let handler = provider.callback();
allowAnyPort(provider);
const issued = {};
function count(p) {
  // A JWT access token is `issued`; an opaque one would be `saved`.
  for (const event of ['client_credentials.issued', 'client_credentials.saved']) {
    p.on(event, (token) => {
      issued[token.clientId] = (issued[token.clientId] ?? 0) + 1;
    });
  }
}
count(provider);

server.on('request', async (req, res) => {
  try {
    if (req.method === 'POST' && req.url === '/_test/rotate') {
      keys = [await signingKey(`key-${keys.length + 1}`), ...keys];
      provider = new Provider(issuer, configuration(keys));
      handler = provider.callback();
      allowAnyPort(provider);
      count(provider);
      return answer(res, 200, { kid: keys[0].kid });
    }
    if (req.method === 'GET' && req.url === '/_test/issued') {
      return answer(res, 200, issued);
    }
    if (req.method === 'POST' && req.url === '/_test/forge') {
      const { claims, kid } = await readJson(req);
      const { privateKey } = await generateKeyPair('ES256');
      const token = await new SignJWT(claims)
        .setProtectedHeader({ alg: 'ES256', typ: 'at+jwt', kid: kid ?? 'stranger' })
        .sign(privateKey);
      return answer(res, 200, { token });
    }
    return handler(req, res);
  } catch (e) {
    return answer(res, 500, { error: String(e) });
  }
});

console.log(`LISTENING ${port}`);
// Exit when whoever started us closes our standard input.
createInterface({ input: process.stdin }).on('close', () => process.exit(0));
