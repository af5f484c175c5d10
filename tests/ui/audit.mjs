// tests/it/ui.rs: the admin page of the audit log. A person signed in to the web UI opens it, finds
// their own sign-in there, and sees an action made elsewhere (a user created with the master key)
// appear without reloading.

import { open, signIn, ok, expect, url, key, WAIT } from './common.mjs';

const { browser, page, consoleErrors } = await open();
try {
  await signIn(page, '/audit');
  await page.waitForURL(/\/audit$/);
  await page.locator('#audit tr[data-action="sign-in to the web UI"][data-actor="master"]').first().waitFor({ timeout: WAIT });
  ok('the audit page lists the sign-in of the web UI');

  const made = await fetch(`${url}/api/v1/admin/users`, {
    method: 'POST',
    headers: { authorization: `Bearer ${key}`, 'content-type': 'application/json' },
    body: JSON.stringify({ name: 'ada' }),
  });
  expect(made.status === 201, `a user is created with the master key (got ${made.status})`);
  const row = page.locator('#audit tr[data-action="POST /api/v1/admin/users"]');
  await row.first().waitFor({ timeout: WAIT });
  const cells = await row.first().locator('td').allTextContents();
  expect(cells[1] === 'master' && cells[4] === '201', `the row names who and the status (got ${JSON.stringify(cells)})`);
  expect(page.url().endsWith('/audit'), 'the page was not reloaded');
  ok('an action made elsewhere appears without a reload');

  expect(consoleErrors.length === 0, `no script errors (got ${consoleErrors.join('; ')})`);
} finally {
  await browser.close();
}
