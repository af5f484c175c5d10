// tests/it/oidc.rs: a real OpenID Provider (the npm package oidc-provider) for lap's sign-in tests.
// One confidential client, five fixed accounts, the package's own login and consent pages.
//
// Env: OIDC_ISSUER (http://localhost:PORT; PORT 0 picks a free one), OIDC_CLIENT_ID,
// OIDC_CLIENT_SECRET, OIDC_REDIRECT_URI. Listens on 127.0.0.1, prints `ready <issuer>` on stdout,
// then serves until killed.

import { generateKeyPairSync, randomBytes } from 'node:crypto';
import { createServer } from 'node:http';
import Provider from 'oidc-provider';

function env(name) {
  if (!process.env[name]) throw new Error(`${name} must be set`);
  return process.env[name];
}
const issuerUrl = new URL(env('OIDC_ISSUER'));

// The package prints its notices with console.info; keep stdout for the ready line alone.
console.info = console.error;

// Who can sign in. The login name on the sign-in page is the account id; any password works.
const ACCOUNTS = {
  ada: { email: 'ada@example.com', email_verified: true, name: 'Ada Lovelace', groups: ['engineering'] },
  grace: { email: 'grace@example.com', email_verified: true, name: 'Grace Hopper', groups: ['admins'] },
  mallory: { email: 'mallory@evil.test', email_verified: true, name: 'Mallory', groups: [] },
  eve: { email: 'eve@example.com', email_verified: false, name: 'Eve', groups: [] },
  lin: { email: 'lin@partner.test', email_verified: true, name: 'Lin', groups: ['contractors'] },
};

// Listen first, so that port 0 can become a real port in the issuer.
let handle = (_req, res) => res.writeHead(503).end();
const server = createServer((req, res) => handle(req, res));
await new Promise((resolve) => server.listen(Number(issuerUrl.port || 0), '127.0.0.1', resolve));
issuerUrl.port = String(server.address().port);
const issuer = issuerUrl.origin;

// A fresh signing key each run; nothing is kept.
const { privateKey } = generateKeyPairSync('rsa', { modulusLength: 2048 });
const signingKey = { ...privateKey.export({ format: 'jwk' }), alg: 'RS256', use: 'sig' };

const provider = new Provider(issuer, {
  clients: [{
    client_id: env('OIDC_CLIENT_ID'),
    client_secret: env('OIDC_CLIENT_SECRET'),
    redirect_uris: [env('OIDC_REDIRECT_URI')],
    response_types: ['code'],
    grant_types: ['authorization_code'],
    token_endpoint_auth_method: 'client_secret_basic',
    id_token_signed_response_alg: 'RS256',
  }],
  jwks: { keys: [signingKey] },
  // Each key in `claims` is a scope; `groups` is our own.
  claims: {
    openid: ['sub'],
    email: ['email', 'email_verified'],
    profile: ['name'],
    groups: ['groups'],
  },
  // Put the scopes' claims in the ID token too, not only behind userinfo.
  conformIdTokenClaims: false,
  // lap sends PKCE (S256); require it so a test notices if it stops.
  pkce: { required: () => true },
  // Cookies over plain http: not Secure (the request is not https), signed with a key made here.
  cookies: { keys: [randomBytes(32).toString('base64url')] },
  ttl: { AuthorizationCode: 60, AccessToken: 3600, IdToken: 3600, Interaction: 3600, Session: 3600, Grant: 3600 },
  features: { devInteractions: { enabled: true } },
  async findAccount(_ctx, id) {
    const account = ACCOUNTS[id];
    if (!account) return undefined;
    return { accountId: id, claims: async () => ({ sub: id, ...account }) };
  },
});
handle = provider.callback();

process.on('SIGTERM', () => process.exit(0));
process.on('SIGINT', () => process.exit(0));
process.stdout.write(`ready ${issuer}\n`);
