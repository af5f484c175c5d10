// tests/it/ports.rs: the web UI lists a sandbox's ports and opens one on the preview origin; a page
// served from the sandbox there, in a browser signed in to the UI, can neither read nor call the
// UI's API (the preview has an origin of its own).
//
// Env (besides common.mjs's): LAP_SESSION, a ready session whose port 8000 serves attack.html.

import { open, signIn, ok, expect, url, WAIT, PREFIX } from './common.mjs';

const session = process.env.LAP_SESSION;
if (!session) throw new Error('LAP_SESSION must be set');

const { browser, context, page } = await open();
try {
  await signIn(page);
  // The control: on the UI's own origin, the cookie does read the API.
  const status = await page.evaluate(
    async (api) => (await fetch(api, { credentials: 'include' })).status,
    `${url}${PREFIX}/agents`,
  );
  expect(status === 200, `the UI's page reads the API with its cookie (got ${status})`);
  ok('signed in to the web UI');

  await page.goto(`${url}/sessions/${session}`);
  const button = page.locator('#session-ports tr[data-port="8000"] button.open-port');
  await button.waitFor({ timeout: WAIT });
  const [preview] = await Promise.all([context.waitForEvent('page', { timeout: WAIT }), button.click()]);
  await preview.waitForLoadState();
  const origin = new URL(preview.url()).origin;
  expect(origin !== new URL(url).origin, `the preview has an origin of its own (got ${origin})`);
  expect((await preview.textContent('body')).includes('attack.html'), 'the sandbox\'s directory listing is shown');
  expect(await preview.evaluate(() => window.opener === null), 'the preview has no handle on the UI window');
  ok('the web UI lists the port and opens it on the preview origin');

  await preview.goto(`${origin}/attack.html#ui=${encodeURIComponent(url)}`);
  await preview.waitForFunction(() => document.title === 'done', null, { timeout: WAIT });
  const r = JSON.parse(await preview.textContent('#out'));
  console.log(`attack page: ${JSON.stringify(r)}`);
  expect(r.origin === origin, `the attack page runs on the preview origin (got ${r.origin})`);
  expect(r.read.startsWith('blocked'), `reading the API is blocked (got ${r.read})`);
  ok('the page cannot read the API');
  expect(r.call.startsWith('blocked'), `calling the API is blocked (got ${r.call})`);
  ok('the page cannot call the API');
  expect(!r.cookie.includes('lap_ui_session') && !r.cookie.includes('lap_preview'), `no lap cookie is readable (got ${r.cookie})`);
  ok('the page sees no cookie of the UI');
} finally {
  await browser.close();
}
