// tests/it/oidc.rs: people signing in with the test OpenID provider (tests/ui/oidc_provider.mjs).
//
// OIDC_MODE=web: single sign-on to the web UI as ada (a member), grace (an admin), mallory and eve,
// who are refused, and lin, let in by group. OIDC_MODE=cli-approve or cli-deny: the link
// `lap login --oidc` printed (OIDC_LINK), signed in as ada, the code the terminal shows (OIDC_CODE)
// checked, then the sign-in approved or denied.

import { open, ok, expect, url, WAIT } from './common.mjs';

const mode = process.env.OIDC_MODE;

// At the provider's own pages: its login form (any password), then its consent page the first time
// an account meets this client; until the browser is back at lap.
async function signInAt(page, account) {
  await page.locator('input[name=login]').waitFor({ timeout: WAIT });
  await page.fill('input[name=login]', account);
  await page.fill('input[name=password]', 'any password');
  await Promise.all([page.waitForNavigation(), page.click('button[type=submit]')]);
  for (let i = 0; i < 3 && !page.url().startsWith(url); i++) {
    await Promise.all([page.waitForNavigation(), page.click('button[type=submit]')]);
  }
  expect(page.url().startsWith(url), `the browser is back at lap (it is at ${page.url()})`);
}

// The provider's pages ask for web fonts from the Internet: nothing may leave this machine, so every
// request to a host other than this one is refused in the browser.
async function loopbackOnly(context) {
  await context.route(
    (u) => !['localhost', '127.0.0.1'].includes(u.hostname),
    (route) => route.abort(),
  );
}

// A person of their own: a fresh browser context, so no provider session is shared.
async function person(browser) {
  const context = await browser.newContext();
  await loopbackOnly(context);
  const page = await context.newPage();
  page.setDefaultTimeout(WAIT);
  return page;
}

async function whoami(page, expected) {
  await page.waitForFunction((text) => document.querySelector('#whoami')?.textContent === text, expected, {
    timeout: WAIT,
  });
}

const { browser, context, page } = await open();
await loopbackOnly(context);
try {
  if (mode === 'web') {
    await page.goto(`${url}/agents`);
    await page.waitForURL(/\/sign-in\?next=/);
    await page.locator('#sso').waitFor({ state: 'visible' });
    ok('the sign-in page offers single sign-on');

    await page.click('#sso-link');
    await signInAt(page, 'ada');
    await page.waitForURL(/\/agents$/);
    await whoami(page, 'ada@example.com (member)');
    ok('ada signed in at the provider and came back signed in as a member');

    expect(await page.locator('#nav-audit').isHidden(), 'no Audit link for a member');
    const admin = await page.evaluate(async () => (await fetch('/api/v1/admin/users')).status);
    expect(admin === 403, `the admin API refuses a member's cookie (got ${admin})`);
    ok("a member's page has no Audit link, and the admin API refuses the cookie");

    await page.click('#sign-out');
    await page.waitForURL(/\/sign-in/);
    const after = await page.evaluate(async () => (await fetch('/api/ui/auth/cookie')).status);
    expect(after === 401, `signed out (got ${after})`);
    ok('signing out ends the session');

    const grace = await person(browser);
    await grace.goto(`${url}/auth/oidc/login?next=/sessions`);
    await signInAt(grace, 'grace');
    await grace.waitForURL(/\/sessions$/);
    await whoami(grace, 'grace@example.com (admin)');
    expect(await grace.locator('#nav-audit').isVisible(), 'an admin has the Audit link');
    ok('grace of the admins group signs in as an admin');

    const mallory = await person(browser);
    await mallory.goto(`${url}/sign-in`);
    await mallory.click('#sso-link');
    await signInAt(mallory, 'mallory');
    const refused = await mallory.textContent('#oidc-error');
    expect(/not a user of this lap server/.test(refused), `a page that says why (got ${refused})`);
    ok('mallory of another domain is refused with a page that says why');

    const eve = await person(browser);
    await eve.goto(`${url}/auth/oidc/login`);
    await signInAt(eve, 'eve');
    const unverified = await eve.textContent('#oidc-error');
    expect(/no verified email/.test(unverified), `a page that says why (got ${unverified})`);
    ok('eve, whose email is not verified, is refused');

    const lin = await person(browser);
    await lin.goto(`${url}/auth/oidc/login`);
    await signInAt(lin, 'lin');
    await whoami(lin, 'lin@partner.test (member)');
    ok('lin of another domain but the contractors group signs in as a member');
  } else if (mode === 'cli-approve' || mode === 'cli-deny') {
    await page.goto(process.env.OIDC_LINK);
    await signInAt(page, 'ada');
    const code = await page.textContent('#oidc-code');
    expect(code === process.env.OIDC_CODE, `the page shows the terminal's code ${process.env.OIDC_CODE} (got ${code})`);
    ok("the approval page shows the terminal's code");
    if (mode === 'cli-approve') {
      await page.click('#approve');
      await page.locator('#oidc-approved').waitFor();
      ok('the sign-in was approved');
    } else {
      await page.click('#deny');
      await page.locator('#oidc-denied').waitFor();
      ok('the sign-in was denied');
    }
  } else {
    throw new Error(`OIDC_MODE must be web, cli-approve or cli-deny, not ${mode}`);
  }
} finally {
  await browser.close();
}
