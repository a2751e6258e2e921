// Test OpenID Provider for the jit broker: panva/oidc-provider (npm `oidc-provider`, v9, ESM).
// An Entra ID stand-in for tests; never use it for anything else (any login, any password).
//
//   npm ci --no-audit --no-fund          (in this folder, once; package-lock.json pins oidc-provider 9.13.3)
//   node idp.mjs                         prints "IDP READY <issuer>" when listening
//   ./login_code_flow.sh alice           look at the tokens by hand (curl; IDP=, REDIRECT=, SCOPE=)
//   ./device_flow.sh bob                 the CLI's device flow by hand (curl; IDP=, SCOPE=, RESOURCE=)
//
// What it does, Entra-like:
// - RS256 signing key generated at start (kid `test-rs256-1`), or kept in IDP_KEY_FILE;
// - client `jit-web`: confidential (client_secret_basic, secret `jit-web-secret`), authorization code + PKCE
//   (S256, required), refresh tokens, `require_auth_time`; redirect URIs from WEB_REDIRECTS, and (unless
//   WEB_ANY_LOOPBACK=0) any `http://127.0.0.1:<port>/auth/callback` or `http://localhost:<port>/auth/callback`,
//   so brokers on random ports need no configuration; post-logout redirects: any loopback URL the same way;
// - client `jit-cli`: public (no secret), device authorization grant (RFC 8628) + refresh tokens;
// - the ID token carries `oid`, `tid`, `name`, `preferred_username`, `email`, `groups`, `roles`, `amr`,
//   `auth_time` (Entra puts claims into the ID token; `conformIdTokenClaims: false` does the same here);
// - access tokens are JWTs (`typ at+jwt`, RS256) for the resource `api://jit-broker` (the default resource)
//   with `scope` holding `access` when the client asked for scope `access`, plus oid/tid/groups/roles/
//   name/preferred_username/email; a second resource `api://other-app` (ask with `resource=`) exists so tests
//   can get a genuine token for another API;
// - consent is automatic (like an admin-consented Entra app);
// - `interval: 1` is added to the device authorization response (oidc-provider sends none, so clients
//   would wait 5 s per poll);
// - Entra's Conditional Access *authentication contexts* (IDP_AUTH_CONTEXTS, default c1,c2,c3): a client
//   asks for one with the `claims` parameter, `{"id_token":{"acrs":{"essential":true,"value":"c1"}}}` for
//   the ID token or `{"access_token":{"acrs":…}}` for the access token (also on the device flow, as MSAL
//   sends it), and the token's `acrs` then lists the contexts asked for and satisfied. Every context here
//   stands for a policy that demands MFA: a sign-in without it is asked for the login again (as Entra
//   would ask for the second factor); `<login>+mfa` or alice satisfy it. Contexts asked for and not
//   satisfied are left out of `acrs`, as Entra leaves them out.
//
// Users (login name -> claims; any other login gets `<login>@example.com`, no groups):
//   alice    Alice Admin     groups grp-jit-requesters, grp-prod-admins; role jit.admin; always signs in with MFA
//   bob      Bob Approver    groups grp-jit-approvers
//   carol    Carol Auditor   groups grp-jit-auditors; role jit.auditor
//   mallory  Mallory         no groups
//   olga     Olga Overage    group overage: no `groups`, `_claim_names.groups` + `_claim_sources` instead
//                            (the broker must ask Microsoft Graph for her groups)
//   eve      Eve Elsewhere   another tenant (`tid` 99999999-8888-7777-6666-555555555555)
// Log in as `<login>+mfa` (e.g. `bob+mfa`) to sign in as that same user with `amr` ["pwd","mfa"];
// otherwise `amr` is ["pwd"] (alice: always ["pwd","mfa"]). `oid` is a GUID derived from the login.
//
// Environment:
//   IDP_HOST=127.0.0.1  IDP_PORT=4000  IDP_ISSUER=http://$IDP_HOST:$IDP_PORT
//   IDP_TENANT_ID=11111111-2222-3333-4444-555555555555   tenant of every user except those with their own `tid`
//   IDP_API_AUDIENCE=api://jit-broker    IDP_OTHER_AUDIENCE=api://other-app
//   IDP_KEY_FILE=path.json     keep the signing key across restarts (created when missing)
//   IDP_ACCOUNTS=path.json     replace the users above: {"login": {"name","email","groups","roles","mfa","tid","oid","overage"}}
//   WEB_REDIRECTS=url,url      exact redirect URIs of jit-web (default http://127.0.0.1:3000/auth/callback;
//                              WEB_REDIRECT, a single URL, is still read)
//   WEB_ANY_LOOPBACK=1         0 = only WEB_REDIRECTS are accepted
//   IDP_DEVICE_INTERVAL=1      polling interval advertised by /device/auth
//   IDP_ACCESS_TOKEN_TTL=3600  IDP_ID_TOKEN_TTL=3600 (seconds)
//   IDP_AUTH_CONTEXTS=c1,c2,c3 the tenant's authentication contexts
import { generateKeyPairSync, createHash } from 'node:crypto';
import { existsSync, readFileSync, writeFileSync } from 'node:fs';
import Provider, { interactionPolicy } from 'oidc-provider';

const HOST = process.env.IDP_HOST ?? '127.0.0.1';
const PORT = Number(process.env.IDP_PORT ?? 4000);
const ISSUER = process.env.IDP_ISSUER ?? `http://${HOST}:${PORT}`;
const TENANT_ID = process.env.IDP_TENANT_ID ?? '11111111-2222-3333-4444-555555555555';
const OTHER_TENANT_ID = '99999999-8888-7777-6666-555555555555';
const API_AUDIENCE = process.env.IDP_API_AUDIENCE ?? 'api://jit-broker';
const OTHER_AUDIENCE = process.env.IDP_OTHER_AUDIENCE ?? 'api://other-app';
const API_SCOPE = 'access';
const WEB_REDIRECTS = (process.env.WEB_REDIRECTS ?? process.env.WEB_REDIRECT ?? 'http://127.0.0.1:3000/auth/callback')
  .split(',').map((s) => s.trim()).filter(Boolean);
const WEB_ANY_LOOPBACK = (process.env.WEB_ANY_LOOPBACK ?? '1') !== '0';
const AUTH_CONTEXTS = new Set((process.env.IDP_AUTH_CONTEXTS ?? 'c1,c2,c3').split(',').map((c) => c.trim())
  .filter(Boolean));
const ACCESS_TOKEN_TTL = Number(process.env.IDP_ACCESS_TOKEN_TTL ?? 3600);
const ID_TOKEN_TTL = Number(process.env.IDP_ID_TOKEN_TTL ?? 3600);

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

// ---- accounts: login name -> Entra-like claims ----
const fixtureAccounts = {
  alice: {
    name: 'Alice Admin', email: 'alice@example.com', groups: ['grp-jit-requesters', 'grp-prod-admins'],
    roles: ['jit.admin'], mfa: true,
  },
  bob: { name: 'Bob Approver', email: 'bob@example.com', groups: ['grp-jit-approvers'] },
  carol: { name: 'Carol Auditor', email: 'carol@example.com', groups: ['grp-jit-auditors'], roles: ['jit.auditor'] },
  mallory: { name: 'Mallory', email: 'mallory@example.com', groups: [] },
  olga: { name: 'Olga Overage', email: 'olga@example.com', overage: true },
  eve: { name: 'Eve Elsewhere', email: 'eve@other.example', groups: ['grp-jit-requesters'], tid: OTHER_TENANT_ID },
};
const accounts = process.env.IDP_ACCOUNTS
  ? JSON.parse(readFileSync(process.env.IDP_ACCOUNTS, 'utf8')) : fixtureAccounts;

// deterministic GUID-ish object id per login (Entra `oid` is a GUID)
function oidFor(login) {
  const h = createHash('sha256').update(login).digest('hex');
  return `${h.slice(0, 8)}-${h.slice(8, 12)}-${h.slice(12, 16)}-${h.slice(16, 20)}-${h.slice(20, 32)}`;
}

function accountFor(login) {
  return accounts[login] ?? { name: login, email: `${login}@example.com`, groups: [] };
}

// The claims of a login; `groups` becomes an overage marker for overage accounts, as Entra does past 200 groups.
function claimsFor(login) {
  const a = accountFor(login);
  const oid = a.oid ?? oidFor(login);
  const claims = {
    sub: login,
    oid,
    tid: a.tid ?? TENANT_ID,
    name: a.name,
    preferred_username: a.email,
    email: a.email,
    email_verified: true,
    roles: a.roles ?? [],
  };
  if (a.overage) {
    claims._claim_names = { groups: 'src1' };
    claims._claim_sources = { src1: { endpoint: `https://graph.microsoft.com/v1.0/users/${oid}/getMemberObjects` } };
  } else {
    claims.groups = a.groups ?? [];
  }
  return claims;
}

// ---- authentication contexts (Entra Conditional Access) ----
// The tenant's contexts that `request` (one member of a claims request: `id_token` or `access_token`)
// asks for in `acrs`, as `value` or `values`.
function askedContexts(request) {
  const acrs = request?.acrs;
  if (!acrs || typeof acrs !== 'object') return [];
  const wanted = Array.isArray(acrs.values) ? acrs.values : [acrs.value];
  return wanted.filter((c) => typeof c === 'string' && AUTH_CONTEXTS.has(c));
}

// Every context here demands MFA, as a Conditional Access policy bound to it would.
function satisfies(amr) {
  return Array.isArray(amr) && amr.includes('mfa');
}

// The `acrs` of a token for the claims request member `request`, signed in with `amr`.
function acrsFor(request, amr) {
  return satisfies(amr) ? askedContexts(request) : [];
}

// What a token is being made from (an authorization code, a device code, a refresh token).
function sourceOf(ctx) {
  const e = ctx.oidc.entities;
  return e.AuthorizationCode ?? e.DeviceCode ?? e.RefreshToken;
}

// A sign-in that asks for a context its session cannot satisfy shows the login form again, as
// Entra would ask for the second factor (once: whatever the user does then, the token tells).
const policy = interactionPolicy.base();
policy.get('login').checks.add(new interactionPolicy.Check(
  'auth_context',
  'the authentication context asks for multi-factor authentication',
  (ctx) => {
    const { oidc } = ctx;
    const asked = [...askedContexts(oidc.claims?.id_token), ...askedContexts(oidc.claims?.access_token)];
    if (asked.length === 0 || oidc.result?.login || satisfies(oidc.session.amr)) {
      return interactionPolicy.Check.NO_NEED_TO_PROMPT;
    }
    return interactionPolicy.Check.REQUEST_PROMPT;
  },
));

const MFA_SUFFIX = '+mfa';
function isLoopbackUrl(value, path) {
  let url;
  try { url = new URL(value); } catch { return false; }
  return url.protocol === 'http:' && ['127.0.0.1', 'localhost', '[::1]'].includes(url.hostname)
    && (path === undefined || url.pathname === path) && !url.username && !url.password;
}

const configuration = {
  clients: [
    {
      // confidential web client (the broker)
      client_id: 'jit-web',
      client_secret: 'jit-web-secret',
      redirect_uris: WEB_REDIRECTS,
      post_logout_redirect_uris: ['http://127.0.0.1:3000/'],
      grant_types: ['authorization_code', 'refresh_token'],
      response_types: ['code'],
      token_endpoint_auth_method: 'client_secret_basic',
      require_auth_time: true,
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
  scopes: ['openid', 'email', 'profile', 'groups', 'offline_access'],
  claims: {
    acr: null,
    acrs: null,
    auth_time: null,
    sid: null,
    openid: ['sub', 'oid', 'tid', 'roles', 'amr'],
    email: ['email', 'email_verified'],
    profile: ['name', 'preferred_username'],
    groups: ['groups'],
  },
  // Entra puts the claims straight into the ID token; oidc-provider by default only does that
  // when no access token is issued.  false = put them into the id_token of the code flow too.
  conformIdTokenClaims: false,
  // `token` is what the token is made from (code, device code, refresh token): its `amr` says how
  // the user signed in; `asked` is the claims request's `id_token` member.
  findAccount: async (ctx, sub, token) => ({
    accountId: sub,
    async claims(use, scope, asked) {
      const claims = claimsFor(sub);
      const acrs = use === 'id_token' ? acrsFor(asked, token?.amr) : [];
      return acrs.length > 0 ? { ...claims, acrs } : claims;
    },
  }),
  // auto-consent (like an admin-consented Entra app): no consent screen in scripted logins
  loadExistingGrant: async (ctx) => {
    const grantId = ctx.oidc.result?.consent?.grantId || ctx.oidc.session.grantIdFor(ctx.oidc.client.clientId);
    if (grantId) return ctx.oidc.provider.Grant.find(grantId);
    const grant = new ctx.oidc.provider.Grant({ clientId: ctx.oidc.client.clientId, accountId: ctx.oidc.session.accountId });
    grant.addOIDCScope('openid email profile groups offline_access');
    grant.addOIDCClaims([
      'sub', 'oid', 'tid', 'email', 'email_verified', 'name', 'preferred_username', 'groups', 'roles', 'amr', 'acrs',
    ]);
    grant.addResourceScope(API_AUDIENCE, API_SCOPE);
    grant.addResourceScope(OTHER_AUDIENCE, API_SCOPE);
    await grant.save();
    return grant;
  },
  // JWT access tokens for the broker API (Entra: aud = the API app) carry the user's claims
  extraTokenClaims: async (ctx, token) => {
    if (!token.accountId) return undefined;
    const c = claimsFor(token.accountId);
    const out = {
      oid: c.oid, tid: c.tid, roles: c.roles, name: c.name, preferred_username: c.preferred_username, email: c.email,
    };
    if (c._claim_names) {
      out._claim_names = c._claim_names;
      out._claim_sources = c._claim_sources;
    } else {
      out.groups = c.groups;
    }
    const source = sourceOf(ctx);
    const acrs = acrsFor(source?.claims?.access_token, source?.amr);
    if (acrs.length > 0) out.acrs = acrs;
    return out;
  },
  interactions: { policy },
  features: {
    claimsParameter: { enabled: true },        // `claims` (authentication contexts in `acrs`)
    devInteractions: { enabled: true },        // built-in login form: any login, any password
    deviceFlow: { enabled: true },             // /device/auth + /device (user code page)
    revocation: { enabled: true },
    introspection: { enabled: true },
    rpInitiatedLogout: { enabled: true },
    resourceIndicators: {
      enabled: true,
      defaultResource: async () => API_AUDIENCE,
      useGrantedResource: async () => true,
      getResourceServerInfo: async (ctx, resourceIndicator) => {
        if (resourceIndicator !== API_AUDIENCE && resourceIndicator !== OTHER_AUDIENCE) {
          throw new Error('unknown resource');
        }
        return {
          scope: API_SCOPE, audience: resourceIndicator, accessTokenFormat: 'jwt', accessTokenTTL: ACCESS_TOKEN_TTL,
          jwt: { sign: { alg: 'RS256' } },
        };
      },
    },
  },
  ttl: {
    AccessToken: ACCESS_TOKEN_TTL, IdToken: ID_TOKEN_TTL, DeviceCode: 600, Interaction: 600, Session: 3600,
    Grant: 3600, RefreshToken: 86400,
  },
  cookies: { keys: ['test-cookie-key-not-secret'] },
  // keep tokens / errors readable in tests
  renderError: async (ctx, out) => { ctx.type = 'json'; ctx.body = out; },
};

const provider = new Provider(ISSUER, configuration);
provider.on('server_error', (ctx, err) => console.error('server_error', err));

// Brokers in tests listen on random ports: accept any loopback `/auth/callback` for jit-web.
if (WEB_ANY_LOOPBACK) {
  const proto = provider.Client.prototype;
  const redirectUriAllowed = proto.redirectUriAllowed;
  proto.redirectUriAllowed = function allowLoopback(value) {
    return redirectUriAllowed.call(this, value)
      || (this.clientId === 'jit-web' && isLoopbackUrl(value, '/auth/callback'));
  };
  const postLogoutAllowed = proto.postLogoutRedirectUriAllowed;
  proto.postLogoutRedirectUriAllowed = function allowLoopbackLogout(value) {
    return postLogoutAllowed.call(this, value) || (this.clientId === 'jit-web' && isLoopbackUrl(value));
  };
}

// The login form takes any login; `<login>+mfa` signs in as <login> with `amr` ["pwd","mfa"].
const interactionFinished = provider.interactionFinished.bind(provider);
provider.interactionFinished = async (req, res, result, options) => {
  if (result?.login?.accountId) {
    let login = String(result.login.accountId);
    let mfa = false;
    if (login.endsWith(MFA_SUFFIX)) {
      login = login.slice(0, -MFA_SUFFIX.length);
      mfa = true;
    }
    mfa = mfa || accountFor(login).mfa === true;
    result.login.accountId = login;
    result.login.amr = mfa ? ['pwd', 'mfa'] : ['pwd'];
  }
  return interactionFinished(req, res, result, options);
};

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
