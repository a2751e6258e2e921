// The e2e harness: one real `jit-server serve --config <generated toml>` (OpenID Connect against the
// test IdP, AWS STS against moto, email to a private aiosmtpd sink, a fresh SQLite file), headless
// Debian Chromium through playwright-core, and helpers to sign in, read mail and take screenshots.
//
// `scripts/test` runs this (`npm --prefix tests/e2e test`) with JIT_TEST_CHROMIUM, JIT_TEST_SERVER_BIN,
// JIT_TEST_IDP_URL, JIT_TEST_MOTO_URL, JIT_TEST_PEERS and JIT_TEST_ROOT set.

import assert from 'node:assert/strict';
import { execFile, spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { copyFileSync, existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { createServer as createHttpServer } from 'node:http';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import { chromium } from 'playwright-core';

import { Secrets } from './secrets.mjs';

const HERE = dirname(fileURLToPath(import.meta.url));

/** Generous waits: the test machine has two busy cores. */
export const WAIT_MS = 30_000;

/** A peer variable; a clear failure when the harness did not set it. */
export function peerEnv(name) {
  const value = process.env[name];
  if (!value) {
    throw new Error(`${name} is not set: run the browser tests with \`scripts/test\`, which starts the peers`);
  }
  return value;
}

export const ROOT = process.env.JIT_TEST_ROOT ?? resolve(HERE, '../../..');
export const SCREENSHOTS = join(ROOT, 'target', 'screenshots');

/** A free TCP port on 127.0.0.1. */
export function freePort() {
  return new Promise((res, rej) => {
    const srv = createServer();
    srv.unref();
    srv.on('error', rej);
    srv.listen(0, '127.0.0.1', () => {
      const { port } = srv.address();
      srv.close(() => res(port));
    });
  });
}

/** Polls `probe` until it returns a truthy value; fails after `ms` with `what`. */
export async function waitFor(what, probe, ms = WAIT_MS) {
  const deadline = Date.now() + ms;
  let last;
  for (let delay = 50; ; delay = Math.min(delay * 2, 500)) {
    try {
      const value = await probe();
      if (value) return value;
    } catch (e) {
      last = e;
    }
    if (Date.now() > deadline) {
      throw new Error(`timed out after ${ms} ms waiting for ${what}${last ? `: ${last.message}` : ''}`);
    }
    await new Promise((r) => setTimeout(r, delay));
  }
}

/** Spawns a child whose output goes to `log`; resolves once `ready(text)` holds for its output. */
function startChild(name, cmd, args, { env, cwd, log, ready }) {
  const child = spawn(cmd, args, { env, cwd, stdio: ['ignore', 'pipe', 'pipe'] });
  let output = '';
  const append = (chunk) => {
    output += chunk;
    writeFileSync(log, output);
  };
  child.stdout.on('data', append);
  child.stderr.on('data', append);
  const started = new Promise((res, rej) => {
    child.on('error', (e) => rej(new Error(`cannot start ${name} (${cmd}): ${e.message}`)));
    child.on('exit', (code) => rej(new Error(`${name} exited with ${code} before it was ready:\n${output}`)));
    const check = () => {
      if (ready(output)) res();
    };
    child.stdout.on('data', check);
    child.stderr.on('data', check);
  });
  return { child, started, output: () => output };
}

/** The policy directory: the repository's Cedar policies, and a catalog of `aws_role` entitlements only. */
function writePolicies(dir) {
  mkdirSync(dir, { recursive: true });
  for (const file of readdirSync(join(ROOT, 'policies'))) {
    if (file.endsWith('.cedar') || file.endsWith('.cedarschema')) {
      copyFileSync(join(ROOT, 'policies', file), join(dir, file));
    }
  }
  // The IdP gives alice the app role `jit.admin` (not the group): make that role an admin here.
  writeFileSync(join(dir, 'e2e.cedar'), `// e2e only: the test IdP's app roles.
@id("e2e-role-admins")
permit (
  principal in Group::"jit.admin",
  action in [Action::"admin", Action::"audit"],
  resource
);
`);
  writeFileSync(join(dir, 'entitlements.toml'), `# e2e catalog: AWS STS roles only (moto), every route to bob.

[[entitlement]]
id = "aws-prod-admin"
title = "AWS production — administrator"
kind = "aws_role"
role_arn = "arn:aws:iam::123456789012:role/JitAdmin"
max_duration = "4h"
approvals_required = 1
pending_ttl = "1h"
require_mfa = true
notify = { email = ["bob@example.com"] }

[[entitlement]]
id = "aws-staging-deploy"
title = "AWS staging — deployer"
kind = "aws_role"
role_arn = "arn:aws:iam::123456789012:role/JitDeployer"
max_duration = "4h"
approvals_required = 1
pending_ttl = "1h"
notify = { email = ["bob@example.com"] }

[[entitlement]]
id = "aws-prod-readonly"
title = "AWS production — read only"
kind = "aws_role"
role_arn = "arn:aws:iam::123456789012:role/JitReadOnly"
max_duration = "8h"
approvals_required = 2
pending_ttl = "2h"
notify = { email = ["bob@example.com"] }

[[entitlement]]
id = "aws-prod-context"
title = "AWS production — incident responder"
kind = "aws_role"
role_arn = "arn:aws:iam::123456789012:role/JitIncident"
max_duration = "2h"
approvals_required = 1
auth_context = "c1"
notify = { email = ["bob@example.com"] }

[[entitlement]]
id = "aws-sandbox"
title = "AWS sandbox — power user"
kind = "aws_role"
role_arn = "arn:aws:iam::123456789012:role/JitSandbox"
max_duration = "2h"
approvals_required = 0
notify = { email = ["bob@example.com"] }
`);
}

const toml = (s) => JSON.stringify(s); // a TOML basic string is a JSON string for these values

/** The audit table as `jit-server audit export` (JSON lines) writes it, with `args` and `env`. */
async function auditExport(serverBin, args, env) {
  const { stdout } = await promisify(execFile)(serverBin, [...args, 'audit', 'export'], { env, maxBuffer: 64 << 20 });
  return stdout;
}

/**
 * Starts the SMTP sink and `jit-server serve --config FILE` (non-dev). `publicUrl` defaults to the
 * server's own http://127.0.0.1:PORT. Returns `secrets` (what the broker was given; the tests add
 * what they obtain) and `auditExport()` for the leak check, which must run before `stop()`.
 */
export async function startBroker({ publicUrl, federationUrl } = {}) {
  const serverBin = peerEnv('JIT_TEST_SERVER_BIN');
  const idp = peerEnv('JIT_TEST_IDP_URL').replace(/\/$/, '');
  const moto = peerEnv('JIT_TEST_MOTO_URL');
  const peers = peerEnv('JIT_TEST_PEERS');
  const dir = mkdtempSync(join(tmpdir(), 'jit-e2e-'));
  const mails = join(dir, 'mail');
  const logs = join(ROOT, 'target', 'e2e-logs');
  mkdirSync(logs, { recursive: true });
  const children = [];
  const stop = async () => {
    await Promise.all(children.map(stopChild));
    rmSync(dir, { recursive: true, force: true });
  };

  try {
    const [port, smtpPort] = [await freePort(), await freePort()];
    const sink = startChild('smtp sink', join(peers, 'venv', 'bin', 'python'),
      [join(ROOT, 'tests', 'peers', 'smtp_sink.py'), '--host', '127.0.0.1', '--port', String(smtpPort), '--dir', mails],
      { env: process.env, log: join(logs, 'smtp.log'), ready: (o) => o.includes('SMTP READY') });
    children.push(sink.child);
    await sink.started;

    const base = `http://127.0.0.1:${port}`;
    const policies = join(dir, 'policies');
    writePolicies(policies);
    const config = join(dir, 'jit.toml');
    writeFileSync(config, brokerConfig({
      port, publicUrl: publicUrl ?? base, dir, idp, moto, smtpPort, policies, federationUrl,
    }));
    const env = brokerEnv();
    const server = startChild('jit-server', serverBin, ['serve', '--config', config],
      { env, log: join(logs, 'server.log'), ready: (o) => o.includes('jit-server listening') });
    children.push(server.child);
    await server.started;
    await waitFor(`${base}/readyz`, async () => (await fetch(`${base}/readyz`)).status === 200);
    const secrets = new Secrets();
    secrets.add('the session key', env.JIT_E2E_SESSION_KEY);
    // Fixed by the test IdP's client registration, so shorter than a real one.
    secrets.add('the OIDC client secret', env.JIT_E2E_OIDC_SECRET, { minLength: 8 });
    secrets.add("the broker's AWS secret access key", env.AWS_SECRET_ACCESS_KEY);
    return {
      base, mails, serverLog: server.output, secrets, stop,
      auditExport: () => auditExport(serverBin, ['--config', config], env),
    };
  } catch (e) {
    await stop();
    throw e;
  }
}

/** `jit-server serve --dev` (demo users, simulated grants) on a fresh SQLite file, for its own sign-in page. */
export async function startDevBroker() {
  const serverBin = peerEnv('JIT_TEST_SERVER_BIN');
  const dir = mkdtempSync(join(tmpdir(), 'jit-e2e-dev-'));
  const logs = join(ROOT, 'target', 'e2e-logs');
  mkdirSync(logs, { recursive: true });
  const port = await freePort();
  const base = `http://127.0.0.1:${port}`;
  const env = brokerEnv();
  Object.assign(env, {
    JIT_SERVER__BIND: `127.0.0.1:${port}`,
    JIT_DATABASE__URL: `sqlite://${join(dir, 'jit.db')}`,
    JIT_POLICY__DIR: join(ROOT, 'policies'),
  });
  const server = startChild('jit-server --dev', serverBin, ['serve', '--dev'],
    { env, cwd: dir, log: join(logs, 'server-dev.log'), ready: (o) => o.includes('jit-server listening') });
  const stop = async () => {
    await stopChild(server.child);
    rmSync(dir, { recursive: true, force: true });
  };
  try {
    await server.started;
    await waitFor(`${base}/readyz`, async () => (await fetch(`${base}/readyz`)).status === 200);
  } catch (e) {
    await stop();
    throw e;
  }
  return {
    base, serverLog: server.output, secrets: new Secrets(), stop,
    auditExport: () => auditExport(serverBin, [], env),
  };
}

function brokerConfig({ port, publicUrl, dir, idp, moto, smtpPort, policies, federationUrl }) {
  return `[server]
bind = "127.0.0.1:${port}"
public_url = ${toml(publicUrl)}
session_key = "env:JIT_E2E_SESSION_KEY"
log_format = "text"

[database]
url = ${toml(`sqlite://${join(dir, 'jit.db')}`)}

[oidc]
issuer = ${toml(idp)}
client_id = "jit-web"
client_secret = "env:JIT_E2E_OIDC_SECRET"
scopes = ["openid", "profile", "email", "groups"]
api_audience = "api://jit-broker"
cli_client_id = "jit-cli"
cli_scopes = ["openid", "profile", "email", "groups", "offline_access", "access"]
required_scope = "access"
tenant_id = "11111111-2222-3333-4444-555555555555"

[aws]
region = "us-east-1"
endpoint_url = ${toml(moto)}
${federationUrl ? `federation_url = ${toml(federationUrl)}` : ''}

[notify.email]
smtp_url = ${toml(`smtp://127.0.0.1:${smtpPort}`)}
from = "jit <jit@example.com>"

[policy]
dir = ${toml(policies)}

[scheduler]
tick = "1s"
`;
}

/** The server's environment: no stray JIT_/AWS_ overrides; fresh secrets, an AWS key moto accepts. */
function brokerEnv() {
  const env = { ...process.env };
  for (const k of Object.keys(env)) {
    if ((k.startsWith('JIT_') && !k.startsWith('JIT_TEST_')) || k.startsWith('AWS_')) delete env[k];
  }
  return Object.assign(env, {
    JIT_E2E_SESSION_KEY: randomBytes(64).toString('base64'),
    JIT_E2E_OIDC_SECRET: 'jit-web-secret',
    // Debug, as in tests/it/multi.rs's leak test: more lines that could carry a secret.
    JIT_LOG: 'debug,sqlx=info,hyper=info,h2=info,rustls=info',
    AWS_ACCESS_KEY_ID: 'testing',
    AWS_SECRET_ACCESS_KEY: randomBytes(30).toString('base64url'),
    AWS_REGION: 'us-east-1',
    AWS_EC2_METADATA_DISABLED: 'true',
  });
}

/** SIGTERM, then SIGKILL after 5 s. */
async function stopChild(child) {
  if (child.exitCode !== null || child.signalCode !== null) return;
  const exited = new Promise((r) => child.once('exit', r));
  child.kill('SIGTERM');
  const timer = setTimeout(() => child.kill('SIGKILL'), 5000);
  await exited;
  clearTimeout(timer);
}

/**
 * A stand-in for the AWS federation endpoint (`https://signin.aws.amazon.com/federation`; no
 * emulator exists) on its own origin: `Action=getSigninToken` with a `Session` answers a fresh
 * random `SigninToken` (the broker asks for it server-side), `Action=login` with a token it gave
 * out answers a page titled "AWS Management Console (stand-in)" (where the browser lands).
 * Records both; `tokens` lists the tokens given out, for the leak check.
 */
export async function startFederation() {
  const calls = { tokens: [], logins: [] };
  const server = createHttpServer((req, res) => {
    const url = new URL(req.url, 'http://stand-in');
    const action = url.searchParams.get('Action');
    if (url.pathname === '/federation' && action === 'getSigninToken' && url.searchParams.get('Session')) {
      const token = randomBytes(24).toString('base64url');
      calls.tokens.push(token);
      res.writeHead(200, { 'content-type': 'application/json' });
      res.end(JSON.stringify({ SigninToken: token }));
    } else if (url.pathname === '/federation' && action === 'login'
      && calls.tokens.includes(url.searchParams.get('SigninToken'))) {
      calls.logins.push({ destination: url.searchParams.get('Destination'), issuer: url.searchParams.get('Issuer') });
      res.writeHead(200, { 'content-type': 'text/html; charset=utf-8' });
      res.end('<!doctype html><html lang="en"><title>AWS Management Console (stand-in)</title>'
        + '<h1>AWS Management Console (stand-in)</h1>');
    } else {
      res.writeHead(400, { 'content-type': 'text/plain' });
      res.end('unexpected request');
    }
  });
  await new Promise((r) => server.listen(0, '127.0.0.1', r));
  const url = `http://127.0.0.1:${server.address().port}/federation`;
  return { url, calls, stop: () => new Promise((r) => server.close(r)) };
}

/** Messages the sink stored so far: `{ to: [...], raw }`. */
export function readMails(dir) {
  if (!existsSync(dir)) return [];
  return readdirSync(dir).filter((f) => f.endsWith('.json')).sort().map((f) => {
    const meta = JSON.parse(readFileSync(join(dir, f), 'utf8'));
    return { to: meta.rcpt_tos, raw: readFileSync(join(dir, f.replace(/\.json$/, '.eml')), 'latin1') };
  });
}

/**
 * The readable text of an RFC 5322 message: every part, quoted-printable and base64 decoded (the
 * raw message when nothing is encoded).
 */
export function mailText(raw) {
  const out = [];
  const part = /content-transfer-encoding:[ \t]*([\w-]+)[^]*?\r?\n\r?\n([^]*?)(?=\r?\n--|$)/gi;
  for (const [, encoding, body] of raw.matchAll(part)) {
    if (encoding.toLowerCase() === 'base64') {
      out.push(Buffer.from(body.replace(/\s+/g, ''), 'base64').toString('utf8'));
    } else if (encoding.toLowerCase() === 'quoted-printable') {
      const bytes = body.replace(/=\r?\n/g, '').replace(/=([0-9A-F]{2})/gi, (_, h) => String.fromCharCode(parseInt(h, 16)));
      out.push(Buffer.from(bytes, 'latin1').toString('utf8'));
    }
  }
  return out.length > 0 ? out.join('\n') : raw;
}

export async function launchBrowser() {
  return chromium.launch({
    executablePath: peerEnv('JIT_TEST_CHROMIUM'),
    headless: true,
    args: ['--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run', '--disable-background-networking',
      '--disable-component-update', '--disable-sync', '--disable-dev-shm-usage',
      // Loopback only: any other host fails at once (the IdP's login page asks for a web font).
      '--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1, EXCLUDE localhost'],
  });
}

export const DESKTOP = { width: 1280, height: 800 };
export const PHONE = { width: 390, height: 844 };

/**
 * A fresh browser context (its own cookies), light or dark, that records in `context.problems` any
 * CSP violation, page error, or inline script or style in an HTML page `base` served.
 */
export async function newContext(browser, base, { colorScheme = 'light', javaScriptEnabled = true } = {}) {
  const context = await browser.newContext({ colorScheme, viewport: DESKTOP, javaScriptEnabled });
  context.colorScheme = colorScheme;
  context.base = base;
  context.setDefaultTimeout(WAIT_MS);
  context.setDefaultNavigationTimeout(WAIT_MS);
  context.problems = [];
  context.on('page', (page) => watch(context, page));
  return context;
}

function watch(context, page) {
  page.on('console', (msg) => {
    if (msg.type() === 'error' && /Content Security Policy|Refused to/i.test(msg.text())) {
      context.problems.push(`${page.url()}: ${msg.text()}`);
    }
  });
  page.on('pageerror', (e) => context.problems.push(`${page.url()}: ${e.message}`));
  page.on('response', async (res) => {
    if (!res.url().startsWith(context.base) || res.request().resourceType() !== 'document') return;
    if (res.status() >= 300 && res.status() < 400) return;
    const html = await res.text().catch(() => '');
    if (/<script(?![^>]*\ssrc=)[^>]*>/i.test(html)) context.problems.push(`${res.url()}: inline <script>`);
    if (/<style[\s>]|\sstyle\s*=/i.test(html)) context.problems.push(`${res.url()}: inline style`);
  });
}

/**
 * Signs in at the IdP's own login page: goes to `path` on the broker, is sent to the provider,
 * types the login, and comes back to `path` (the fixture consents by itself). Returns the page.
 */
export async function signIn(context, base, login, path = '/', { shoot } = {}) {
  const page = await context.newPage();
  // Not `load`: the provider's page also asks for a web font from the internet, which fails.
  await page.goto(`${base}${path}`, { waitUntil: 'domcontentloaded' });
  await page.locator('input[name=login]').waitFor();
  assert.ok(!page.url().startsWith(base), `the broker showed its own page instead of the IdP: ${page.url()}`);
  if (shoot) await shoot(page);
  await page.fill('input[name=login]', login);
  await page.fill('input[name=password]', 'any password');
  await Promise.all([
    page.waitForURL((u) => u.href.startsWith(base), { waitUntil: 'load' }),
    page.click('button[type=submit]'),
  ]);
  return page;
}

/** The hidden CSRF token of the page's forms. */
export async function csrfOf(page) {
  return page.locator('input[name=csrf]').first().inputValue();
}

/**
 * Shows `page` in light and dark theme, at desktop and phone width; in each, saves a full-page
 * screenshot as `target/screenshots/<name>.<theme>.<viewport>.png` (unless `phone: false` for the
 * phone ones) and collects what `check(page)` finds, prefixed with the variant. The page is left
 * as it was. Returns the findings.
 */
export async function everyView(page, name, { phone = true, check = async () => [] } = {}) {
  mkdirSync(SCREENSHOTS, { recursive: true });
  const original = page.viewportSize();
  const found = [];
  for (const theme of ['light', 'dark']) {
    await page.emulateMedia({ colorScheme: theme });
    for (const [view, size] of [['desktop', DESKTOP], ['phone', PHONE]]) {
      await page.setViewportSize(size);
      if (view === 'desktop' || phone) {
        await page.screenshot({ path: join(SCREENSHOTS, `${name}.${theme}.${view}.png`), fullPage: true, animations: 'disabled' });
      }
      for (const p of await check(page)) found.push(`[${theme} ${view}] ${p}`);
    }
  }
  await page.emulateMedia({ colorScheme: page.context().colorScheme ?? 'light' });
  await page.setViewportSize(original);
  return found;
}

/** Screenshots only (pages that are not ours, like the provider's login form). */
export async function screenshot(page, name, opts = {}) {
  await everyView(page, name, opts);
}

/**
 * What `jit login` gets: the device authorization grant (RFC 8628) at the test IdP for the CLI client,
 * approved as `login` through a fresh browser context's HTTP client (as tests/peers/idp/device_flow.sh
 * does with curl). Returns the token response: `access_token`, `id_token`, `refresh_token`.
 */
export async function deviceTokens(browser, login) {
  const idp = peerEnv('JIT_TEST_IDP_URL').replace(/\/$/, '');
  const form = (fields) => ({ method: 'POST', body: new URLSearchParams(fields) });
  const device = await (await fetch(`${idp}/device/auth`, form({
    client_id: 'jit-cli', scope: 'openid profile email groups offline_access access',
  }))).json();
  const context = await browser.newContext();
  try {
    const http = context.request;
    const page = await (await http.get(device.verification_uri_complete)).text();
    const xsrf = page.match(/name="xsrf" value="([^"]+)"/)?.[1];
    assert.ok(xsrf, `no xsrf field on the device page:\n${page}`);
    let res = await http.post(`${idp}/device`, {
      form: { xsrf, user_code: device.user_code, confirm: 'yes' }, maxRedirects: 0,
    });
    for (let step = 0; step < 16 && res.headers().location; step += 1) {
      const next = new URL(res.headers().location, idp).href;
      res = await http.get(next, { maxRedirects: 0 });
      if (res.headers().location) continue;
      const body = await res.text();
      if (body.includes('name="login"')) {
        res = await http.post(next, { form: { prompt: 'login', login, password: 'x' }, maxRedirects: 0 });
      } else if (new URL(next).pathname.startsWith('/interaction/')) {
        res = await http.post(next, { form: { prompt: 'consent' }, maxRedirects: 0 });
      }
    }
  } finally {
    await context.close();
  }
  return waitFor('the device flow tokens', async () => {
    const tokens = await (await fetch(`${idp}/token`, form({
      grant_type: 'urn:ietf:params:oauth:grant-type:device_code', client_id: 'jit-cli', device_code: device.device_code,
    }))).json();
    return tokens.access_token ? tokens : null;
  });
}
