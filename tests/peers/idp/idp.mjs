// Test OpenID Provider for the JIT broker: panva/oidc-provider (npm `oidc-provider`, v9, ESM).
// Entra-like: RS256, id_token carries email/name/preferred_username/groups + custom oid/tid,
// JWT access tokens for the broker API (aud api://jit-broker) carrying the same claims,
// PKCE required, device authorization grant for the CLI, devInteractions (any login + any password).
//
// Started by `scripts/test` on a free loopback port (exported as JIT_TEST_IDP_URL, which is the issuer):
//   npm ci                               (in this folder; scripts/test does it when node_modules is stale)
//   node idp.mjs                         (env: IDP_PORT=4000, IDP_HOST=127.0.0.1, IDP_ISSUER, IDP_KEY_FILE=jwks.json,
//                                          IDP_ACCOUNTS=accounts.json, WEB_REDIRECT=http://127.0.0.1:3000/auth/callback)
// Prints "IDP READY <issuer>" when listening.
//
// Tests run the broker on random ports, so redirect URIs cannot be fixed in advance:
// - `jit-web` is registered as a native (RFC 8252) client, so any loopback port in its redirect URI
//   (http://127.0.0.1:<any port>/auth/callback) is accepted;
// - dynamic client registration (`POST /reg`, RFC 7591) is open, for a test that needs its own client.
import { generateKeyPairSync, randomUUID, createHash } from 'node:crypto';
import { existsSync, readFileSync, writeFileSync } from 'node:fs';
import Provider from 'oidc-provider';

const HOST = process.env.IDP_HOST ?? '127.0.0.1';
const PORT = Number(process.env.IDP_PORT ?? 4000);
const ISSUER = process.env.IDP_ISSUER ?? `http://${HOST}:${PORT}`;
const TENANT_ID = process.env.IDP_TENANT_ID ?? '11111111-2222-3333-4444-555555555555';
const API_AUDIENCE = process.env.IDP_API_AUDIENCE ?? 'api://jit-broker';
const WEB_REDIRECT = process.env.WEB_REDIRECT ?? 'http://127.0.0.1:3000/auth/callback';

// ---- signing key: RS256, stable across restarts if IDP_KEY_FILE is set ----
function loadJwks() {
  const file = process.env.IDP_KEY_FILE;
  if (file && existsSync(file)) return JSON.parse(readFileSync(file, 'utf8'));
  const { privateKey } = generateKeyPairSync('rsa', { modulusLength: 2048 });
  const jwk = privateKey.export({ format: 'jwk' });
  const jwks = { keys: [{ ...jwk, kid: 'test-rs256-1', alg: 'RS256', use: 'sig' }] };
  if (file) writeFileSync(file, JSON.stringify(jwks));
  return jwks;
}

// ---- accounts: login name -> Entra-like claims. Unknown logins get a deterministic default. ----
const fixtureAccounts = {
  alice: { name: 'Alice Admin', email: 'alice@example.com', groups: ['grp-jit-requesters', 'grp-prod-admins'] },
  bob: { name: 'Bob Approver', email: 'bob@example.com', groups: ['grp-jit-approvers'] },
  mallory: { name: 'Mallory', email: 'mallory@example.com', groups: [] },
};
const accounts = process.env.IDP_ACCOUNTS
  ? JSON.parse(readFileSync(process.env.IDP_ACCOUNTS, 'utf8')) : fixtureAccounts;

// deterministic GUID-ish object id per login (Entra `oid` is a GUID)
function oidFor(login) {
  const h = createHash('sha256').update(login).digest('hex');
  return `${h.slice(0, 8)}-${h.slice(8, 12)}-${h.slice(12, 16)}-${h.slice(16, 20)}-${h.slice(20, 32)}`;
}

function claimsFor(login) {
  const a = accounts[login] ?? { name: login, email: `${login}@example.com`, groups: [] };
  return {
    sub: login,
    oid: a.oid ?? oidFor(login),
    tid: a.tid ?? TENANT_ID,
    name: a.name,
    preferred_username: a.email,
    email: a.email,
    email_verified: true,
    groups: a.groups ?? [],
  };
}

const configuration = {
  clients: [
    {
      // confidential web client (the broker's axum app)
      client_id: 'jit-web',
      client_secret: 'jit-web-secret',
      redirect_uris: [WEB_REDIRECT],
      post_logout_redirect_uris: ['http://127.0.0.1:3000/'],
      grant_types: ['authorization_code', 'refresh_token'],
      response_types: ['code'],
      token_endpoint_auth_method: 'client_secret_basic',
      // native = RFC 8252 loopback redirect: any port on 127.0.0.1 matches (tests bind port 0)
      application_type: 'native',
    },
    {
      // public native client (the `jit` CLI): device flow, no secret
      client_id: 'jit-cli',
      grant_types: ['urn:ietf:params:oauth:grant-type:device_code', 'refresh_token'],
      response_types: [],
      redirect_uris: [],
      token_endpoint_auth_method: 'none',
      application_type: 'native',
    },
  ],
  jwks: loadJwks(),
  pkce: { required: () => true },            // S256 only (v9 default methods)
  scopes: ['openid', 'email', 'profile', 'groups', 'offline_access', 'api:access'],
  claims: {
    openid: ['sub', 'oid', 'tid'],
    email: ['email', 'email_verified'],
    profile: ['name', 'preferred_username'],
    groups: ['groups'],
  },
  // Entra puts the claims straight into the ID token; oidc-provider by default only does that
  // when no access token is issued.  false = put them into the id_token of the code flow too.
  conformIdTokenClaims: false,
  findAccount: async (ctx, sub) => ({
    accountId: sub,
    async claims() { return claimsFor(sub); },
  }),
  // auto-consent (like an admin-consented Entra app): no consent screen in scripted logins
  loadExistingGrant: async (ctx) => {
    const grantId = ctx.oidc.result?.consent?.grantId || ctx.oidc.session.grantIdFor(ctx.oidc.client.clientId);
    if (grantId) return ctx.oidc.provider.Grant.find(grantId);
    const grant = new ctx.oidc.provider.Grant({ clientId: ctx.oidc.client.clientId, accountId: ctx.oidc.session.accountId });
    grant.addOIDCScope('openid email profile groups offline_access');
    grant.addOIDCClaims(['sub', 'oid', 'tid', 'email', 'email_verified', 'name', 'preferred_username', 'groups']);
    grant.addResourceScope(API_AUDIENCE, 'api:access');
    await grant.save();
    return grant;
  },
  // JWT access tokens for the broker API (Entra: aud = App ID URI of the API)
  extraTokenClaims: async (ctx, token) => {
    if (!token.accountId) return undefined;
    const c = claimsFor(token.accountId);
    return { oid: c.oid, tid: c.tid, groups: c.groups, preferred_username: c.preferred_username, email: c.email };
  },
  features: {
    devInteractions: { enabled: true },        // built-in login form: any login, any password
    deviceFlow: { enabled: true },             // /device/auth + /device (user code page)
    revocation: { enabled: true },
    introspection: { enabled: true },
    rpInitiatedLogout: { enabled: true },
    registration: { enabled: true },           // open dynamic client registration (POST /reg), tests only
    resourceIndicators: {
      enabled: true,
      defaultResource: async () => API_AUDIENCE,
      useGrantedResource: async () => true,
      getResourceServerInfo: async (ctx, resourceIndicator) => {
        if (resourceIndicator !== API_AUDIENCE) throw new Error('unknown resource');
        return { scope: 'api:access', audience: API_AUDIENCE, accessTokenFormat: 'jwt', accessTokenTTL: 3600,
                 jwt: { sign: { alg: 'RS256' } } };
      },
    },
  },
  ttl: { AccessToken: 3600, IdToken: 3600, DeviceCode: 600, Interaction: 600, Session: 3600, Grant: 3600, RefreshToken: 86400 },
  cookies: { keys: ['test-cookie-key-not-secret'] },
  // keep tokens / errors readable in tests
  renderError: async (ctx, out) => { ctx.type = 'json'; ctx.body = out; },
};

const provider = new Provider(ISSUER, configuration);
provider.on('server_error', (ctx, err) => console.error('server_error', err));
// oidc-provider sends no `interval` in the device authorization response, so RFC 8628 clients wait the default
// 5 s between polls; advertise a shorter one for fast tests (it does not enforce slow_down either).
const DEVICE_INTERVAL = Number(process.env.IDP_DEVICE_INTERVAL ?? 1);
provider.use(async (ctx, next) => {
  await next();
  if (ctx.path === '/device/auth' && ctx.status === 200 && ctx.body && typeof ctx.body === 'object') {
    ctx.body = { ...ctx.body, interval: DEVICE_INTERVAL };
  }
});
provider.listen(PORT, HOST, () => console.log(`IDP READY ${ISSUER}`));
