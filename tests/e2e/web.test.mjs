// The web UI in a real browser (headless Debian Chromium), against a real `jit-server` in production
// mode: sign-in at the test OpenID provider, email to an aiosmtpd sink, AWS STS from moto.
//
// One story, step by step (each step needs the ones before): alice asks for access; mallory can
// neither see a way to approve nor forge one; bob follows the link in his email, signs in, and
// approves with the keyboard in a browser without JavaScript; alice gets AWS credentials, which
// cross-site forms cannot take away, and opens the AWS console (a federation stand-in on another
// origin) from a form under the strict CSP; carol reads the audit log and signs out at the
// provider, whose next sign-in asks for her password again; alice's CLI tokens reach the API.
// Every page is screenshotted in light and dark theme at desktop and phone width
// (target/screenshots/), and checked for labels, landmarks, contrast, overflow, inline code and
// leaks. Last, no secret given to or obtained from the broker may be in its log or audit table.

import assert from 'node:assert/strict';
import { createServer } from 'node:http';
import { after, before, describe, it } from 'node:test';

import { problems, tabTo } from './lib/a11y.mjs';
import {
  csrfOf, deviceTokens, everyView, launchBrowser, mailText, newContext, peerEnv, readMails, screenshot, signIn,
  startBroker, startFederation, waitFor,
} from './lib/harness.mjs';
import { selfCheck } from './lib/secrets.mjs';

const ENTITLEMENT = 'aws-staging-deploy';
const UUID = '[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}';

let broker;
let browser;
let federation;
const contexts = {};
const pages = {};
let requestId;
let requestUrl;

/** Fails on CSP violations or script errors seen by any context so far. */
function noPageProblems() {
  const seen = Object.values(contexts).flatMap((c) => c.problems);
  assert.deepEqual(seen, [], 'the browser reported CSP violations or script errors');
}

/** Screenshots `page` as `name` and checks it in both themes and widths. */
async function shootAndCheck(page, name, opts = {}) {
  const found = await everyView(page, name, { ...opts, check: problems });
  assert.deepEqual(found, [], `accessibility problems on ${name} (${page.url()})`);
}

async function stateOf(page) {
  return (await page.locator('#state').textContent()).trim();
}

/** The request's state as alice's page shows it after a reload. */
async function reloadState(page) {
  await page.reload();
  return stateOf(page);
}

describe('web UI in headless Chromium', { timeout: 240_000 }, () => {
  before(async () => {
    browser = await launchBrowser();
    federation = await startFederation();
    broker = await startBroker({ federationUrl: federation.url });
  });

  after(async () => {
    await browser?.close();
    await broker?.stop();
    await federation?.stop();
  });

  it('answers with strict security headers and no HSTS over plain http', async () => {
    for (const path of ['/login', '/healthz', '/no-such-page', '/assets/app.css']) {
      const res = await fetch(`${broker.base}${path}`, { redirect: 'manual' });
      const csp = res.headers.get('content-security-policy') ?? '';
      assert.match(csp, /default-src 'self'/, `${path}: CSP`);
      assert.match(csp, /frame-ancestors 'none'/, `${path}: CSP`);
      assert.doesNotMatch(csp, /unsafe-inline|unsafe-eval/, `${path}: CSP allows inline code`);
      assert.equal(res.headers.get('x-content-type-options'), 'nosniff', path);
      assert.ok(res.headers.get('referrer-policy'), `${path}: Referrer-Policy`);
      assert.equal(res.headers.get('strict-transport-security'), null, `${path}: HSTS over http`);
    }
    const css = await fetch(`${broker.base}/assets/app.css`);
    assert.match(css.headers.get('content-type'), /^text\/css/);
  });

  it('signs alice in through the OpenID provider and shows her empty access page', async () => {
    contexts.alice = await newContext(browser, broker.base);
    pages.alice = await signIn(contexts.alice, broker.base, 'alice', '/', {
      shoot: (p) => screenshot(p, '01-sign-in'),
    });
    const page = pages.alice;
    assert.equal(new URL(page.url()).pathname, '/');
    await page.getByRole('heading', { level: 1, name: 'My access' }).waitFor();
    await page.getByText('You hold no access right now').waitFor();
    assert.match(await page.locator('header .who').textContent(), /Alice Admin/);
    await shootAndCheck(page, '02-my-access-empty');
  });

  it('lets alice file a request on the new request page', async () => {
    const page = pages.alice;
    await page.getByRole('link', { name: 'New request' }).click();
    await page.getByRole('heading', { level: 1, name: 'Request access' }).waitFor();
    await shootAndCheck(page, '03-new-request');
    // A mistake first: the form comes back with the error and what was typed.
    await page.locator(`input[name=entitlement][value=${ENTITLEMENT}]`).check();
    await page.getByLabel('Duration').fill('9h');
    await page.getByLabel('Justification').fill('deploy the hotfix for INC-4711');
    await page.locator('#submit-request').click();
    await page.locator('.error[role=alert]').waitFor();
    assert.match(await page.locator('.error[role=alert]').textContent(), /duration|longer|at most|exceeds/i);
    assert.equal(await page.getByLabel('Justification').inputValue(), 'deploy the hotfix for INC-4711');
    await shootAndCheck(page, '04-new-request-error', { phone: false });

    await page.locator(`input[name=entitlement][value=${ENTITLEMENT}]`).check();
    await page.getByLabel('Duration').fill('1h');
    await Promise.all([
      page.waitForURL(new RegExp(`/requests/${UUID}$`)),
      page.locator('#submit-request').click(),
    ]);
    requestUrl = page.url();
    requestId = new URL(requestUrl).pathname.split('/').pop();
    assert.equal(await stateOf(page), 'pending');
    await shootAndCheck(page, '05-request-pending', { phone: false });
  });

  it('emails bob a link to the request page, and nothing that approves by itself', async () => {
    const mail = await waitFor('the approval email to bob', () => readMails(broker.mails)
      .find((m) => m.to.includes('bob@example.com')));
    const text = mailText(mail.raw);
    const links = [...text.matchAll(new RegExp(`https?://[^\\s"<>]*/requests/${UUID}[^\\s"<>]*`, 'g'))].map((m) => m[0]);
    assert.ok(links.length > 0, `no request link in the email:\n${text}`);
    for (const link of links) {
      assert.equal(link, `${broker.base}/requests/${requestId}`, 'every link points at the request page');
    }
    assert.doesNotMatch(text, /\/approve\b/, 'no link approves on its own');
  });

  it('shows mallory no way to approve, and refuses her forged posts', async () => {
    contexts.mallory = await newContext(browser, broker.base);
    const page = await signIn(contexts.mallory, broker.base, 'mallory', `/requests/${requestId}`);
    assert.equal(await page.locator('#approve').count(), 0, 'mallory sees an approve button');
    assert.equal(await page.locator('form[action$="/approve"]').count(), 0);
    // She has a session and a CSRF token of her own (from her own page's sign-out form).
    await page.goto(`${broker.base}/`);
    const token = await csrfOf(page);
    const approve = `${broker.base}/requests/${requestId}/approve`;
    const refusals = [
      { form: { comment: 'forged' }, headers: { origin: broker.base } },
      { form: { csrf: token, comment: 'forged' }, headers: { origin: 'https://evil.example' } },
      { form: { csrf: token, comment: 'forged' }, headers: { origin: broker.base } },
    ];
    for (const r of refusals) {
      const res = await contexts.mallory.request.post(approve, { ...r, maxRedirects: 0 });
      assert.ok([403, 404].includes(res.status()), `forged approve answered ${res.status()}`);
      const body = await res.text();
      assert.doesNotMatch(body, /panicked|sqlx|backtrace|at src\//i, 'the error page leaks internals');
    }
    await page.goto(`${broker.base}/approvals`);
    await page.getByText('Nothing waits for your decision').waitFor();
    await page.goto(`${broker.base}/requests/new`);
    await page.getByText('There is nothing you may request').waitFor();
    await shootAndCheck(page, '07-new-request-nothing', { phone: false });
    const audit = await page.goto(`${broker.base}/audit`);
    assert.equal(audit.status(), 403);
    await shootAndCheck(page, '08-error-forbidden', { phone: false });
    assert.equal(await reloadState(pages.alice), 'pending', 'mallory changed the request');
  });

  it('sends bob (no JavaScript) to sign in from the email link, refuses forged posts in his session, and takes his keyboard approval', async () => {
    contexts.bob = await newContext(browser, broker.base, { colorScheme: 'dark', javaScriptEnabled: false });
    const page = await signIn(contexts.bob, broker.base, 'bob', `/requests/${requestId}`);
    assert.equal(page.url(), requestUrl, 'bob lands on the request he was sent to');
    await page.locator('#approve').waitFor();
    await shootAndCheck(page, '09-request-decision-form');

    // A forged approval in bob's own session: no CSRF token, or the token with a foreign Origin.
    const approve = `${broker.base}/requests/${requestId}/approve`;
    const token = await csrfOf(page);
    for (const r of [
      { form: { comment: 'forged' }, headers: { origin: broker.base } },
      { form: { comment: 'forged' }, headers: { referer: `${broker.base}/requests/${requestId}` } },
      { form: { csrf: token, comment: 'forged' }, headers: { origin: 'https://evil.example' } },
      { form: { csrf: token, comment: 'forged' }, headers: { origin: 'null' } },
    ]) {
      const res = await contexts.bob.request.post(approve, { ...r, maxRedirects: 0 });
      assert.equal(res.status(), 403, `forged approve ${JSON.stringify(r.headers)} answered ${res.status()}`);
    }
    assert.equal(await reloadState(pages.alice), 'pending', 'a forged approval changed the request');
    assert.match(await pages.alice.locator('.facts').textContent(), /0 of 1/);

    // His approvals page lists it as waiting.
    await page.goto(`${broker.base}/approvals`);
    await page.locator(`main table a[href="/requests/${requestId}"]`).waitFor();
    await shootAndCheck(page, '10-approvals-waiting');

    // Keyboard only: Tab to the comment, type, Tab to Approve, Enter. Focus must be visible.
    await page.goto(requestUrl);
    const focus = await tabTo(page, '#comment');
    assert.notEqual(focus.style, 'none', 'focused comment box shows no focus outline');
    await page.keyboard.type('ok for the hotfix window');
    const onApprove = await tabTo(page, '#approve', { fromTop: false });
    assert.notEqual(onApprove.style, 'none', 'focused approve button shows no focus outline');
    assert.ok(onApprove.width >= 2, 'focus outline is too thin to see');
    await Promise.all([page.waitForURL(requestUrl), page.keyboard.press('Enter')]);
    await waitFor('the approval to show', async () => ['approved', 'active'].includes(await stateOf(page)));
    assert.equal(await page.locator('#approve').count(), 0, 'the decision form stays after deciding');
    assert.match(await page.locator('body').textContent(), /ok for the hotfix window/);

    await page.goto(`${broker.base}/approvals`);
    await page.getByRole('heading', { name: 'Decided by you' }).waitFor();
    assert.match(await page.locator('main').textContent(), new RegExp(ENTITLEMENT));
    await shootAndCheck(page, '10-approvals-decided', { phone: false });
  });

  it('shows alice her active grant and, on request, AWS credentials from STS that are never cached', async () => {
    const page = pages.alice;
    await waitFor('the grant to become active', async () => (await reloadState(page)) === 'active');
    await page.locator('#get-credentials').waitFor();
    const [response] = await Promise.all([
      page.waitForResponse((r) => r.url().endsWith('/credentials') && r.request().method() === 'POST'),
      page.locator('#get-credentials').click(),
    ]);
    assert.equal(response.status(), 200);
    assert.match(response.headers()['cache-control'] ?? '', /no-store/, 'credentials page may be cached');
    assert.match(response.headers()['content-security-policy'] ?? '', /default-src 'self'/);
    const creds = await page.locator('#creds').textContent();
    assert.match(creds, /^export AWS_ACCESS_KEY_ID=ASIA[A-Z0-9]{12,}$/m);
    assert.match(creds, /^export AWS_SECRET_ACCESS_KEY=\S{20,}$/m);
    assert.match(creds, /^export AWS_SESSION_TOKEN=\S{20,}$/m);
    assert.match(creds, /^export AWS_REGION=us-east-1$/m);
    broker.secrets.add('the STS secret access key', creds.match(/^export AWS_SECRET_ACCESS_KEY=(\S+)$/m)[1]);
    broker.secrets.add('the STS session token', creds.match(/^export AWS_SESSION_TOKEN=(\S+)$/m)[1]);
    await shootAndCheck(page, '11-request-credentials');

    await page.goto(`${broker.base}/`);
    await page.locator('.cards .card').first().waitFor();
    assert.match(await page.locator('.cards').textContent(), /AWS staging — deployer/);
    await shootAndCheck(page, '12-my-access-active');
  });

  it('refuses a cross-site form that tries to revoke alice\'s grant, and a token sent from another origin', async () => {
    const page = pages.alice;
    await page.goto(requestUrl);
    const token = await csrfOf(page);
    // A page on another origin (same site: 127.0.0.1, so the Lax cookie goes along) posts a form.
    const evil = createServer((req, res) => {
      res.writeHead(200, { 'content-type': 'text/html' });
      res.end(`<!doctype html><title>win a prize</title>
<form id="f" method="post" action="${broker.base}/requests/${requestId}/revoke">
<input name="csrf" value="guessed"><input name="comment" value="gotcha"></form>
<script>document.getElementById('f').submit()</script>`);
    });
    await new Promise((r) => evil.listen(0, '127.0.0.1', r));
    try {
      const [res] = await Promise.all([
        page.waitForResponse((r) => r.url().endsWith('/revoke')),
        page.goto(`http://127.0.0.1:${evil.address().port}/`),
      ]);
      assert.equal(res.status(), 403, 'the cross-site revoke was not refused');
      assert.equal(res.request().headers().origin, `http://127.0.0.1:${evil.address().port}`);
    } finally {
      evil.close();
    }
    await page.goto(requestUrl);
    const revoke = `${broker.base}/requests/${requestId}/revoke`;
    for (const headers of [{ origin: 'http://127.0.0.1:1' }, {}]) {
      const res = await contexts.alice.request.post(revoke, { form: { csrf: token }, headers, maxRedirects: 0 });
      assert.equal(res.status(), 403, `revoke with ${JSON.stringify(headers)} answered ${res.status()}`);
    }
    assert.equal(await reloadState(page), 'active', 'a forged post revoked the grant');
  });

  it('opens the AWS console for alice at the federation endpoint through a page of its own, under the strict CSP', async () => {
    const page = pages.alice;
    const isLogin = (url) => url.href.startsWith(federation.url) && url.searchParams.get('Action') === 'login';
    // First with the federation endpoint held (204: the browser stays), to look at the page
    // that hands over; then its link goes on.
    let held = 0;
    await page.route(isLogin, (route) => {
      held += 1;
      return route.fulfill({ status: 204 });
    });
    await page.goto(requestUrl);
    const [post] = await Promise.all([
      page.waitForResponse((r) => r.url().endsWith('/console') && r.request().method() === 'POST'),
      page.locator('#open-console').click(),
    ]);
    assert.equal(post.status(), 200, 'the console form is answered with a page of the broker');
    assert.match(post.headers()['cache-control'] ?? '', /no-store/);
    await page.getByRole('heading', { level: 1, name: 'Opening the AWS console' }).waitFor();
    await waitFor('the page to go on to the federation endpoint by itself', () => held === 1);
    await shootAndCheck(page, '16-console-handoff', { phone: false });
    await page.unroute(isLogin);
    await Promise.all([
      page.waitForURL(isLogin),
      page.getByRole('link', { name: 'Continue to the AWS console' }).click(),
    ]);
    await page.getByRole('heading', { name: 'AWS Management Console (stand-in)' }).waitFor();

    // And without holding anything: the click on "Open AWS console" lands there by itself.
    await page.goto(requestUrl);
    await Promise.all([page.waitForURL(isLogin), page.locator('#open-console').click()]);
    await page.getByRole('heading', { name: 'AWS Management Console (stand-in)' }).waitFor();
    const url = new URL(page.url());
    assert.ok(federation.calls.tokens.includes(url.searchParams.get('SigninToken')), 'a sign-in token the endpoint gave');
    assert.equal(url.searchParams.get('Destination'), 'https://console.aws.amazon.com/');
    assert.equal(federation.calls.logins.length, 2, 'the browser reached the federation endpoint twice');
    assert.equal(federation.calls.tokens.length, 2, 'one sign-in token per click');
    for (const token of federation.calls.tokens) broker.secrets.add('a console sign-in token', token, { minLength: 16 });
    assert.deepEqual(contexts.alice.problems, [], 'the browser reported CSP violations on the way');
    await page.goto(requestUrl);
  });

  it('shows carol the verified audit log with the sign-ins and the decision', async () => {
    contexts.carol = await newContext(browser, broker.base);
    const page = await signIn(contexts.carol, broker.base, 'carol', '/audit');
    await page.getByRole('heading', { level: 1, name: 'Audit log' }).waitFor();
    assert.match(await page.locator('#verify-status').textContent(), /chain verified/);
    const table = await page.locator('main table').textContent();
    for (const action of ['auth.signed_in', 'request.created', 'request.approved']) {
      assert.ok(table.includes(action), `the audit log shows no ${action}`);
    }
    await shootAndCheck(page, '13-audit');
    await page.getByLabel('Action').fill('auth.');
    await page.getByRole('button', { name: 'Filter' }).click();
    await page.waitForURL(/action=auth\./);
    const actions = await page.locator('main tbody tr td:nth-child(4)').allTextContents();
    assert.ok(actions.length > 0 && actions.every((a) => a.startsWith('auth.')), `filter shows ${actions}`);
  });

  it('shows alice, an admin by role, the admin page with her live grant', async () => {
    const page = pages.alice;
    await page.getByRole('link', { name: 'Admin' }).click();
    await page.getByRole('heading', { level: 1, name: 'Admin' }).waitFor();
    assert.match(await page.title(), /^Admin · jit$/);
    assert.match(await page.locator('main table').textContent(), /alice@example\.com/);
    await shootAndCheck(page, '14-admin');
  });

  it('sends alice back to the provider for the authentication context of an entitlement, and keeps what she typed', async () => {
    const idp = peerEnv('JIT_TEST_IDP_URL').replace(/\/$/, '');
    const page = pages.alice;
    await page.goto(`${broker.base}/requests/new`);
    await page.locator('input[name=entitlement][value=aws-prod-context]').check();
    await page.getByLabel('Duration').fill('45m');
    const justification = 'INC-5150: ünïcødé — "page the on-call" & <check>';
    await page.getByLabel('Justification').fill(justification);
    await page.getByLabel(/^Ticket/).fill('INC-5150');
    // Her session has no `acrs`: the form post is answered with a page that goes on to the
    // provider with the claims request. Held there once (204) to look at it, then followed.
    const isAuthorize = (url) => url.href.startsWith(`${idp}/auth?`);
    let held;
    await page.route(isAuthorize, (route) => {
      held = route.request().url();
      return route.fulfill({ status: 204 });
    });
    await page.locator('#submit-request').click();
    await page.getByRole('heading', { level: 1, name: 'Signing you in again' }).waitFor();
    await waitFor('the page to go on to the provider by itself', () => held);
    assert.match(await page.locator('main').textContent(), /authentication context `c1`/);
    await shootAndCheck(page, '14a-step-up-handoff', { phone: false });
    await page.unroute(isAuthorize);
    const [authorize] = await Promise.all([
      page.waitForRequest((r) => isAuthorize(new URL(r.url()))),
      page.waitForURL(`${broker.base}/requests/new?resume=1`),
      page.getByRole('link', { name: 'Continue to your identity provider' }).click(),
    ]);
    assert.equal(authorize.url(), held, 'the link and the refresh go to the same place');
    const query = new URL(authorize.url()).searchParams;
    assert.deepEqual(JSON.parse(query.get('claims')), { id_token: { acrs: { essential: true, value: 'c1' } } });
    assert.equal(query.get('max_age'), '3600');
    // Back with the form as she sent it (her sign-ins carry MFA: the provider asked nothing).
    assert.equal(await page.locator('input[name=entitlement][value=aws-prod-context]').isChecked(), true);
    assert.equal(await page.getByLabel('Duration').inputValue(), '45m');
    assert.equal(await page.getByLabel('Justification').inputValue(), justification);
    assert.equal(await page.getByLabel(/^Ticket/).inputValue(), 'INC-5150');
    await shootAndCheck(page, '14b-new-request-after-step-up', { phone: false });
    await Promise.all([
      page.waitForURL(new RegExp(`/requests/${UUID}$`)),
      page.locator('#submit-request').click(),
    ]);
    assert.equal(await stateOf(page), 'pending');
    assert.equal((await page.locator('.facts dd.pre').textContent()).trim(), justification);
    // The timeline names the context she satisfied.
    assert.match(await page.locator('.timeline').textContent(), /auth context: c1/);
  });

  it('answers unknown pages with an error page that leaks nothing', async () => {
    const page = pages.alice;
    const res = await page.goto(`${broker.base}/requests/00000000-0000-4000-8000-000000000000`);
    assert.equal(res.status(), 404);
    const missing = await page.goto(`${broker.base}/no/such/page?x=<script>`);
    assert.equal(missing.status(), 404);
    const body = await page.locator('body').textContent();
    assert.doesNotMatch(body, /<script>|panicked|sqlx|backtrace|src\/|\.rs\b/i);
    await page.getByRole('link', { name: /Back to my access/ }).waitFor();
    await shootAndCheck(page, '15-error-not-found');
  });

  it('takes alice\'s CLI access token on the API and refuses her ID token there', async () => {
    const tokens = await deviceTokens(browser, 'alice');
    for (const name of ['access_token', 'id_token', 'refresh_token']) {
      broker.secrets.add(`the CLI's ${name}`, tokens[name]);
    }
    const me = await fetch(`${broker.base}/api/v1/me`, { headers: { authorization: `Bearer ${tokens.access_token}` } });
    assert.equal(me.status, 200);
    assert.equal((await me.json()).email, 'alice@example.com');
    const refused = await fetch(`${broker.base}/api/v1/me`, { headers: { authorization: `Bearer ${tokens.id_token}` } });
    assert.equal(refused.status, 401, 'an ID token was taken as an access token');
  });

  it('signs carol out at the identity provider, whose next sign-in asks for her password again', async () => {
    const idp = peerEnv('JIT_TEST_IDP_URL').replace(/\/$/, '');
    const isEndSession = (url) => url.href.startsWith(`${idp}/session/end?`);
    const page = await contexts.carol.newPage();
    await page.goto(`${broker.base}/audit`);
    // The page that hands over, held at the provider's door (204) to look at it first.
    await page.route(isEndSession, (route) => route.fulfill({ status: 204 }));
    await Promise.all([
      page.waitForResponse((r) => r.url() === `${broker.base}/logout` && r.status() === 200),
      page.getByRole('button', { name: 'Sign out' }).click(),
    ]);
    await page.getByRole('heading', { level: 1, name: 'Signing you out' }).waitFor();
    assert.equal(await page.locator('header .who').count(), 0, 'the page still shows a signed-in user');
    await shootAndCheck(page, '17-signing-out', { phone: false });
    await page.unroute(isEndSession);
    const [endSession] = await Promise.all([
      page.waitForRequest((r) => isEndSession(new URL(r.url())) && r.method() === 'GET'),
      page.getByRole('link', { name: 'Continue to sign out at your identity provider' }).click(),
    ]);
    const query = new URL(endSession.url()).searchParams;
    assert.equal(query.get('post_logout_redirect_uri'), `${broker.base}/signed-out`);
    assert.ok(query.get('id_token_hint'), 'the provider is told whose session ends');
    // The provider asks before it ends its session, then sends the browser back.
    await Promise.all([
      page.waitForURL(`${broker.base}/signed-out`),
      page.getByRole('button', { name: 'Yes, sign me out' }).click(),
    ]);
    await page.getByRole('heading', { level: 1, name: 'You are signed out' }).waitFor();
    // Its session is gone too: the next sign-in shows the provider's login form.
    await page.goto(`${broker.base}/login`, { waitUntil: 'domcontentloaded' });
    await page.locator('input[name=login]').waitFor();
    assert.ok(page.url().startsWith(idp), `not at the provider: ${page.url()}`);
    assert.deepEqual(contexts.carol.problems, [], 'the browser reported CSP violations on the way');
  });

  it('saw no CSP violation or script error in any page', () => {
    noPageProblems();
  });

  it('kept every key, token, cookie and credential out of the broker log and the audit table', async () => {
    selfCheck();
    for (const [who, context] of Object.entries(contexts)) await broker.secrets.addCookies(context, who);
    const names = broker.secrets.items.map((s) => s.name);
    for (const kind of ['session key', 'client secret', 'STS session token', "CLI's refresh_token", "alice's cookie"]) {
      assert.ok(names.some((n) => n.includes(kind)), `nothing to look for: no ${kind} was collected`);
    }
    const log = broker.serverLog();
    const audit = await broker.auditExport();
    // The scan is only worth something if the log and the table saw the flows that handle secrets.
    for (const action of ['auth.signed_in', 'request.approved', 'credentials.minted']) {
      assert.ok(audit.includes(action), `the audit table has no ${action}`);
    }
    for (const seen of ['/auth/callback', '/api/v1/me', 'bearer token refused', 'minted sts session']) {
      assert.ok(log.includes(seen), `the broker log did not capture \`${seen}\``);
    }
    broker.secrets.assertAbsent(log, 'the broker log');
    broker.secrets.assertAbsent(audit, 'the audit table');
  });
});
