// The pages in people's words, against `jit-server serve --dev` from a clean database:
// the README's quick tour step by step (alice requests, bob approves from his approvals list while
// alice's page updates by itself, alice uses the grant, carol reads and filters the audit log);
// the menu per role with its waiting-count badge; a grant that expires while its page is open,
// with JavaScript (it updates by itself) and without (a refresh link); the favicon.
// Every page is checked for accessibility in both themes and kept as screenshots.

import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';

import { problems } from './lib/a11y.mjs';
import { everyView, launchBrowser, newContext, startDevBroker, waitFor } from './lib/harness.mjs';

let broker;
let browser;

/** Signs `user` in at the development sign-in page; returns the page, at `path`. */
async function devSignIn(context, user, path = '/') {
  const page = await context.newPage();
  await page.goto(`${broker.base}/login?next=${encodeURIComponent(path)}`);
  await page.locator(`input[name=user][value=${user}]`).check();
  await Promise.all([page.waitForURL(`${broker.base}${path}`), page.locator('#sign-in').click()]);
  await broker.secrets.addCookies(context, user);
  return page;
}

/** The main menu's entries, by their text without the badge. */
async function menu(page) {
  return page.locator('nav[aria-label=Main] a').evaluateAll((links) =>
    links.map((a) => a.firstChild.textContent.trim()));
}

async function accessible(page, name, opts = {}) {
  const found = await everyView(page, name, { check: problems, ...opts });
  assert.deepEqual(found, [], `accessibility problems on ${name}`);
}

/** Files a request on the form; returns its page. */
async function fileRequest(page, entitlement, duration, justification, ticket) {
  await page.goto(`${broker.base}/requests/new`);
  await page.locator(`input[name=entitlement][value=${entitlement}]`).check();
  await page.getByLabel('Duration').fill(duration);
  await page.getByLabel('Justification').fill(justification);
  if (ticket) await page.getByLabel(/Ticket/).fill(ticket);
  await Promise.all([page.waitForURL(/\/requests\/[0-9a-f-]{36}$/), page.locator('#submit-request').click()]);
  return page;
}

const stateOf = async (page) => (await page.locator('#state').textContent()).trim();

describe('pages in people\'s words (development mode)', { timeout: 300_000 }, () => {
  before(async () => {
    browser = await launchBrowser();
    broker = await startDevBroker();
  });

  after(async () => {
    await browser?.close();
    await broker?.stop();
  });

  it('repeats the README quick tour step by step, the approval reaching the open page by itself', async () => {
    // 1. Sign in as alice.
    const aliceContext = await newContext(browser, broker.base);
    const alice = await devSignIn(aliceContext, 'alice');
    await alice.getByRole('heading', { level: 1, name: 'My access' }).waitFor();
    assert.match(await alice.locator('main').textContent(), /You hold no access right now/);

    // 2. New request → aws-prod-admin, 1h, a justification → pending.
    await fileRequest(alice, 'aws-prod-admin', '1h', 'rotate the TLS certificate for INC-4711');
    const requestUrl = alice.url();
    const id = requestUrl.split('/').pop();
    assert.equal(await stateOf(alice), 'pending');
    const facts = await alice.locator('dl.facts').textContent();
    assert.match(facts, /Times out[\s\S]*\(in (59|60) min\) unless someone decides/);
    assert.match(await alice.locator('#may-approve').textContent(), /sre-leads@example\.com/);
    assert.match(await alice.locator('.timeline').textContent(),
      /alice@example\.com requested 1h of access/);
    // The raw event stays behind a disclosure.
    const raw = alice.locator('.timeline details').first();
    assert.equal(await raw.locator('small').isVisible(), false);
    await raw.locator('summary').click();
    assert.match(await raw.locator('small').textContent(), /request\.created/);
    // Without JavaScript the page would offer a refresh link; with it, it follows the request.
    await waitFor('the page to follow the request', async () =>
      /updates by itself/.test(await alice.locator('#live').textContent()));
    await accessible(alice, '30-tour-pending-request');

    // 3. Bob: the badge counts what waits, the approvals list says who, what, why and until when.
    const bobContext = await newContext(browser, broker.base);
    const bob = await devSignIn(bobContext, 'bob');
    assert.deepEqual(await menu(bob), ['My access', 'New request', 'Approvals']);
    assert.equal((await bob.locator('#waiting-badge').textContent()).replace(/\D+/g, ''), '1');
    await Promise.all([bob.waitForURL(`${broker.base}/approvals`), bob.locator('#nav-approvals').click()]);
    const headers = await bob.locator('#pending-h ~ .scroll th').allTextContents();
    assert.deepEqual(headers, ['Requester', 'Entitlement', 'Why', 'Duration', 'Filed', 'Times out', 'Approvals',
      'Others who may approve']);
    const row = bob.locator('#pending-h ~ .scroll tbody tr').first();
    const cells = (await row.locator('td').allTextContents()).map((c) => c.replace(/\s+/g, ' ').trim());
    assert.equal(cells[0], 'alice@example.com');
    assert.match(cells[1], /^AWS production — administrator\s*aws-prod-admin/);
    assert.match(cells[2], /rotate the TLS certificate for INC-4711/);
    assert.equal(cells[3], '1h');
    assert.match(cells[4], /^(just now|\d+ min ago)$/);
    assert.match(cells[5], /^in (59|60) min$/);
    assert.equal(cells[6], '0 of 1');
    assert.equal(cells[7], 'sre-leads@example.com');
    await accessible(bob, '31-tour-approvals');
    await Promise.all([bob.waitForURL(requestUrl), row.getByRole('link').click()]);
    await bob.getByLabel('Comment (optional)').fill('ok for INC-4711');
    await Promise.all([bob.waitForURL(`${requestUrl}?done=approve`), bob.locator('#approve').click()]);
    assert.equal((await bob.locator('#done').textContent()).trim(), 'You approved this request.');
    assert.match(await bob.locator('.timeline').textContent(), /bob@example\.com approved: “ok for INC-4711”/);
    assert.equal(await bob.locator('#waiting-badge').count(), 0, 'the badge still counts a decided request');

    // 4. Alice's page, never reloaded, now shows the active grant with its time left in minutes.
    await waitFor('alice\'s open page to show the grant', async () => (await stateOf(alice)) === 'active');
    assert.equal(alice.url(), requestUrl);
    assert.match(await alice.locator('#live').textContent(), /The request is now active/);
    // The end's date shows only when it falls on another day than the grant (past 23:00 UTC).
    await waitFor('the timeline to say access was granted', async () =>
      /Access granted until (\d{4}-\d\d-\d\d )?\d\d:\d\d UTC/.test(await alice.locator('.timeline').textContent()));
    assert.match(await alice.locator('dl.facts').textContent(), /1 of 1: bob@example\.com/);
    assert.match(await alice.locator('#left').textContent(), /^(59 min|1 h)$/);
    assert.match(await alice.locator('dl.facts').textContent(), /UTC \(.+ your time\)/);
    await alice.locator('#get-credentials').waitFor();
    await alice.locator('#open-console').waitFor();
    assert.equal(await alice.locator('button.copy[data-copy=cp-command]').isVisible(), true);
    await accessible(alice, '32-tour-active-grant');
    await alice.goto(`${broker.base}/`);
    const grantCard = alice.locator('.cards .card').first();
    assert.match(await grantCard.textContent(), /Approved by bob@example\.com/);
    assert.match(await grantCard.locator('.countdown').textContent(), /^(59 min|1 h)$/);
    assert.doesNotMatch(await alice.locator('#recent-h ~ *').first().textContent(), /None yet/);
    await accessible(alice, '33-tour-my-access');

    // 5. Carol: the audit log, verified, with every step; filters narrow it.
    const carolContext = await newContext(browser, broker.base);
    const carol = await devSignIn(carolContext, 'carol', '/audit');
    assert.ok((await menu(carol)).includes('Audit'));
    assert.match(await carol.locator('#verify-status').textContent(), /chain verified/);
    const actions = await carol.locator('tbody.events tr td:nth-child(4)').allTextContents();
    for (const step of ['request.created', 'request.approval', 'request.approved', 'grant.activated']) {
      assert.ok(actions.includes(step), `the audit page lacks ${step}: ${actions}`);
    }
    const width = await carol.locator('table').evaluate((t) => t.getBoundingClientRect().width);
    assert.ok(width > 1100, `the audit table is ${width}px wide at 1280px`);
    await accessible(carol, '34-tour-audit');

    const filtered = async (query) => {
      await carol.goto(`${broker.base}/audit?${new URLSearchParams(query)}`);
      return carol.locator('tbody.events tr').evaluateAll((rows) => rows.map((r) => ({
        actor: r.children[2].textContent.trim(),
        action: r.children[3].textContent.trim(),
        entitlement: r.children[4].textContent.trim(),
        request: r.children[5].querySelector('a')?.getAttribute('href') ?? '',
      })));
    };
    let rows = await filtered({ actor: 'bob@example.com' });
    assert.ok(rows.length > 0 && rows.every((r) => r.actor === 'bob@example.com'), JSON.stringify(rows));
    rows = await filtered({ action: 'request.' });
    assert.ok(rows.length >= 3 && rows.every((r) => r.action.startsWith('request.')), JSON.stringify(rows));
    rows = await filtered({ entitlement: 'aws-prod-admin' });
    assert.ok(rows.length >= 4 && rows.every((r) => r.entitlement === 'aws-prod-admin'), JSON.stringify(rows));
    rows = await filtered({ request: id });
    assert.ok(rows.length >= 4 && rows.every((r) => r.request === `/requests/${id}`), JSON.stringify(rows));
    const today = new Date().toISOString().slice(0, 10);
    rows = await filtered({ request: id, since: today, until: today });
    assert.ok(rows.length >= 4, 'today holds the request\'s events');
    rows = await filtered({ request: id, until: '2000-01-01 00:00' });
    assert.equal(rows.length, 0, 'a range before the request holds none of its events');
    // The filters show as typed, and each row tells its details.
    await filtered({ request: id, action: 'request.approval' });
    assert.equal(await carol.locator('#f-request').inputValue(), id);
    assert.match(await carol.locator('tbody.events').textContent(), /bob@example\.com approved: “ok for INC-4711”/);
    await accessible(carol, '35-audit-filtered', { phone: false });

    for (const context of [aliceContext, bobContext, carolContext]) {
      assert.deepEqual(context.problems, [], 'the browser reported CSP violations or inline code');
      await context.close();
    }
  });

  it('shows each role only what it may do', async () => {
    const cases = [
      ['mallory', ['My access', 'New request']],
      ['bob', ['My access', 'New request', 'Approvals']],
      ['carol', ['My access', 'New request', 'Approvals', 'Audit', 'Admin']],
    ];
    for (const [user, want] of cases) {
      const context = await newContext(browser, broker.base);
      const page = await devSignIn(context, user);
      assert.deepEqual(await menu(page), want, `${user}'s menu`);
      await accessible(page, `36-menu-${user}`, { phone: false });
      await context.close();
    }
    const icon = await fetch(`${broker.base}/favicon.ico`);
    assert.equal(icon.status, 200);
    assert.equal(icon.headers.get('content-type'), 'image/x-icon');
    assert.ok((await icon.arrayBuffer()).byteLength > 0);
  });

  it('updates an expiring grant\'s open page by itself, and offers a refresh link without JavaScript', async () => {
    const context = await newContext(browser, broker.base);
    const page = await devSignIn(context, 'alice');
    await fileRequest(page, 'aws-sandbox', '20s', 'watch a grant expire');
    const url = page.url();
    await waitFor('the auto-approved grant to become active', async () => (await stateOf(page)) === 'active');
    assert.match(await page.locator('.timeline').textContent(), /Auto-approved: this entitlement needs no approval/);
    await page.locator('#get-credentials').waitFor();

    // The same page without JavaScript: a refresh link, no copy buttons.
    const noScript = await newContext(browser, broker.base, { javaScriptEnabled: false });
    const still = await devSignIn(noScript, 'alice');
    await still.goto(url);
    assert.equal(await stateOf(still), 'active');
    assert.match(await still.locator('#live').textContent(), /This page shows the request as it was at .* UTC/);
    assert.equal(await still.locator('button.copy').first().isVisible(), false);
    await accessible(still, '37-grant-no-script', { phone: false });

    await waitFor('the open page to show the grant expired', async () => (await stateOf(page)) === 'expired', 60_000);
    assert.equal(page.url(), url);
    assert.equal(await page.locator('#get-credentials').count(), 0, 'the expired grant still offers credentials');
    assert.equal(await page.locator('#revoke').count(), 0, 'the expired grant still offers revoke');
    assert.equal(await page.locator('.countdown').count(), 0);
    assert.match(await page.locator('.timeline').textContent(), /Access expired/);
    await accessible(page, '38-grant-expired-live', { phone: false });

    // Without JavaScript nothing changed until the reader follows the link.
    assert.equal(await stateOf(still), 'active');
    await Promise.all([still.waitForURL(url), still.locator('#refresh').click()]);
    assert.equal(await stateOf(still), 'expired');
    assert.equal(await still.locator('#live').count(), 0, 'an ended request still offers a refresh');
    for (const c of [context, noScript]) {
      assert.deepEqual(c.problems, [], 'the browser reported CSP violations or inline code');
      await c.close();
    }
  });
});
