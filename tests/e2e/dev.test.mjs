// The broker's own sign-in page, which only development mode shows (production signs in at the
// identity provider): screenshots, accessibility, the development banner, and its CSRF check; the
// way out to the signed-out page and back in; the AWS console of a simulated grant, a page that
// says so; the request form's start field (a past start refused with the draft kept, a later one
// scheduled, then cancelled); a bundle on the form and its request page; last, that the session
// cookies are in neither the broker log nor the audit table.

import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';

import { problems } from './lib/a11y.mjs';
import { everyView, launchBrowser, newContext, startDevBroker, waitFor } from './lib/harness.mjs';
import { selfCheck } from './lib/secrets.mjs';

let broker;
let browser;

describe('development mode sign-in page', { timeout: 120_000 }, () => {
  before(async () => {
    browser = await launchBrowser();
    broker = await startDevBroker();
  });

  after(async () => {
    await browser?.close();
    await broker?.stop();
  });

  it('shows the demo users with the banner, refuses a forged sign-in, and signs in by keyboard', async () => {
    const context = await newContext(browser, broker.base);
    const page = await context.newPage();
    await page.goto(`${broker.base}/requests/new`);
    assert.equal(new URL(page.url()).pathname, '/login');
    await page.getByRole('heading', { level: 1, name: 'Sign in to jit' }).waitFor();
    assert.match(await page.locator('.dev-banner').textContent(), /Development mode/);
    const found = await everyView(page, '00-sign-in-dev', { check: problems });
    assert.deepEqual(found, [], 'accessibility problems on the sign-in page');

    // A forged sign-in without the form's token is refused; so is the token from another origin.
    const token = await page.locator('input[name=csrf]').inputValue();
    for (const [form, origin] of [[{ user: 'carol' }, broker.base], [{ user: 'carol', csrf: token }, 'https://evil.example']]) {
      const res = await context.request.post(`${broker.base}/login/dev`, { form, headers: { origin }, maxRedirects: 0 });
      assert.equal(res.status(), 403, `forged dev sign-in answered ${res.status()}`);
    }

    // Keyboard only: the radio group takes arrow keys, Enter submits.
    await page.locator('input[name=user]').first().focus();
    await page.keyboard.press('ArrowDown'); // bob
    await Promise.all([page.waitForURL(`${broker.base}/requests/new`), page.keyboard.press('Enter')]);
    assert.match(await page.locator('header .who').textContent(), /Bob Approver/);
    assert.match(await page.locator('.dev-banner').textContent(), /Development mode/);
    assert.deepEqual(context.problems, [], 'the browser reported CSP violations or inline code');
    await broker.secrets.addCookies(context, 'bob');

    // Signing out ends on a page of its own (not a new sign-in); signing in again is one link away.
    await Promise.all([page.waitForURL(`${broker.base}/signed-out`), page.getByRole('button', { name: 'Sign out' }).click()]);
    await page.getByRole('heading', { level: 1, name: 'You are signed out' }).waitFor();
    assert.equal(await page.locator('header .who').count(), 0, 'the signed-out page shows a user');
    const signedOut = await everyView(page, '01-signed-out-dev', { check: problems });
    assert.deepEqual(signedOut, [], 'accessibility problems on the signed-out page');
    await Promise.all([page.waitForURL(`${broker.base}/login`), page.getByRole('link', { name: 'Sign in again' }).click()]);
    await page.getByRole('heading', { level: 1, name: 'Sign in to jit' }).waitFor();
    assert.deepEqual(context.problems, [], 'the browser reported CSP violations or inline code');
    await context.close();
  });

  it('opens the "console" of a simulated grant on a page that says it is simulated', async () => {
    const context = await newContext(browser, broker.base);
    const page = await context.newPage();
    await page.goto(`${broker.base}/login?next=/requests/new`);
    await page.locator('input[name=user][value=alice]').check();
    await Promise.all([page.waitForURL(`${broker.base}/requests/new`), page.locator('#sign-in').click()]);
    await page.locator('input[name=entitlement][value=aws-sandbox]').check();
    await page.getByLabel('Justification').fill('try the console');
    await Promise.all([page.waitForURL(/\/requests\/[0-9a-f-]{36}$/), page.locator('#submit-request').click()]);
    const requestUrl = page.url();
    await waitFor('the simulated grant to become active', async () => {
      await page.reload();
      return (await page.locator('#state').textContent()).trim() === 'active';
    });
    await Promise.all([
      page.waitForURL(`${broker.base}/simulated/console/${requestUrl.split('/').pop()}`),
      page.locator('#open-console').click(),
    ]);
    await page.getByRole('heading', { level: 1, name: 'Simulated AWS console' }).waitFor();
    assert.match(await page.locator('main').textContent(), /no console session was opened/);
    const found = await everyView(page, '02-simulated-console-dev', { check: problems, phone: false });
    assert.deepEqual(found, [], 'accessibility problems on the simulated console page');
    assert.deepEqual(context.problems, [], 'the browser reported CSP violations or inline code');
    await broker.secrets.addCookies(context, 'alice');
    await context.close();
  });

  it('says in words what an Azure role grants: the role and the scope', async () => {
    const context = await newContext(browser, broker.base);
    const page = await context.newPage();
    await page.goto(`${broker.base}/login?next=/requests/new`);
    await page.locator('input[name=user][value=alice]').check();
    await Promise.all([page.waitForURL(`${broker.base}/requests/new`), page.locator('#sign-in').click()]);
    const reader = page.locator('input[name=entitlement][value=azure-platform-reader]');
    const option = page.locator('label', { has: reader });
    assert.match(await option.textContent(), /Reader at management group mg-platform/);
    const contributor = page.locator('label', { has: page.locator('input[name=entitlement][value=azure-prod-contributor]') });
    assert.match(await contributor.textContent(), /Contributor at subscription 6e0a1d7c-3b52-4f1e-9c8d-2a4b6c8e0f13/);
    await reader.check();
    await page.getByLabel('Justification').fill('read the platform policies');
    await Promise.all([page.waitForURL(/\/requests\/[0-9a-f-]{36}$/), page.locator('#submit-request').click()]);
    assert.equal((await page.locator('#target').textContent()).trim(), 'Reader at management group mg-platform');
    await waitFor('the simulated Azure grant to become active', async () => {
      await page.reload();
      return (await page.locator('#state').textContent()).trim() === 'active';
    });
    const found = await everyView(page, '03-azure-grant-dev', { check: problems, phone: false });
    assert.deepEqual(found, [], 'accessibility problems on the Azure request page');
    await page.goto(`${broker.base}/`);
    assert.match(await page.locator('.cards').textContent(), /Reader at management group mg-platform/);
    assert.deepEqual(context.problems, [], 'the browser reported CSP violations or inline code');
    await broker.secrets.addCookies(context, 'alice');
    await context.close();
  });

  it('schedules a request from the form\'s start field, refuses a past start keeping the draft, and cancels it', async () => {
    const context = await newContext(browser, broker.base);
    const page = await context.newPage();
    await page.goto(`${broker.base}/login?next=/requests/new`);
    await page.locator('input[name=user][value=oscar]').check();
    await Promise.all([page.waitForURL(`${broker.base}/requests/new`), page.locator('#sign-in').click()]);
    const field = page.getByLabel('Start at, UTC (optional)');
    assert.equal(await field.getAttribute('type'), 'datetime-local');
    // datetime-local takes `YYYY-MM-DDTHH:MM`; the form reads it as UTC.
    const utc = (ms) => new Date(ms).toISOString().slice(0, 16);

    // A start in the past: refused on the form, with what was typed kept.
    const past = utc(Date.now() - 3_600_000);
    await page.locator('input[name=entitlement][value=aws-sandbox]').check();
    await page.getByLabel('Justification').fill('change window tonight');
    await field.fill(past);
    await Promise.all([page.waitForURL(`${broker.base}/requests`), page.locator('#submit-request').click()]);
    assert.match(await page.locator('p.error[role=alert]').textContent(), /is not in the future: leave it out to start once approved/);
    assert.equal(await page.getByLabel('Justification').inputValue(), 'change window tonight');
    assert.equal(await page.getByLabel('Start at, UTC (optional)').inputValue(), past);
    assert.equal(await page.locator('input[name=entitlement][value=aws-sandbox]').isChecked(), true);

    // Two hours ahead: approved in advance (auto-approved here) and scheduled, not granted.
    const start = utc(Date.now() + 2 * 3_600_000);
    await page.getByLabel('Start at, UTC (optional)').fill(start);
    await page.locator('#submit-request').click();
    await page.waitForURL(/\/requests\/[0-9a-f-]{36}$/);
    assert.equal((await page.locator('#state').textContent()).trim(), 'scheduled');
    assert.equal((await page.locator('#starts').textContent()).trim(), `${start.replace('T', ' ')}:00 UTC (scheduled: granted then)`);
    const found = await everyView(page, '04-scheduled-request-dev', { check: problems, phone: false });
    assert.deepEqual(found, [], 'accessibility problems on the scheduled request page');

    // Cancelled before it starts: nothing was granted.
    await Promise.all([page.waitForURL(/done=cancel$/), page.locator('#cancel').click()]);
    assert.equal((await page.locator('#state').textContent()).trim(), 'cancelled');
    assert.deepEqual(context.problems, [], 'the browser reported CSP violations or inline code');
    await broker.secrets.addCookies(context, 'oscar');
    await context.close();
  });

  it('offers a bundle on the form with what each member grants, and files it as one request', async () => {
    const context = await newContext(browser, broker.base);
    const page = await context.newPage();
    await page.goto(`${broker.base}/login?next=/requests/new`);
    await page.locator('input[name=user][value=oscar]').check();
    await Promise.all([page.waitForURL(`${broker.base}/requests/new`), page.locator('#sign-in').click()]);
    const bundle = page.locator('input[name=entitlement][value=oncall-sandbox]');
    const option = page.locator('label', { has: bundle });
    const text = await option.textContent();
    assert.match(text, /aws-sandbox \(role arn:aws:iam::222222222222:role\/JitSandbox\) \+ entra-sec-ops-group \(member of group 3f1c2a4e-7b6d-4e8f-9a0b-1c2d3e4f5a6b\)/);
    assert.match(text, /bundle · up to 2h · 1 approval/);
    await bundle.check();
    await page.getByLabel('Duration').fill('1h');
    await page.getByLabel('Justification').fill('on call tonight');
    await Promise.all([page.waitForURL(/\/requests\/[0-9a-f-]{36}$/), page.locator('#submit-request').click()]);
    assert.equal((await page.locator('#state').textContent()).trim(), 'pending');
    assert.match(await page.locator('#target').textContent(), /aws-sandbox \(role .*\) \+ entra-sec-ops-group \(member of group /);
    const found = await everyView(page, '05-bundle-request-dev', { check: problems, phone: false });
    assert.deepEqual(found, [], 'accessibility problems on the bundle request page');
    assert.deepEqual(context.problems, [], 'the browser reported CSP violations or inline code');
    await broker.secrets.addCookies(context, 'oscar');
    await context.close();
  });

  it('kept the session cookie out of the broker log and the audit table', async () => {
    selfCheck();
    assert.ok(broker.secrets.items.length > 0, 'no session cookie was collected');
    const audit = await broker.auditExport();
    assert.ok(audit.includes('auth.signed_in'), 'the audit table has no sign-in');
    broker.secrets.assertAbsent(broker.serverLog(), 'the broker log');
    broker.secrets.assertAbsent(audit, 'the audit table');
  });
});
