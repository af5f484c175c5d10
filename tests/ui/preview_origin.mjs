// tests/ports.rs: a page served from a sandbox through a preview URL, in a browser signed in to the
// web UI, can neither read nor call the UI's API (the preview has an origin of its own).
//
// Env (besides common.mjs's): LAP_PREVIEW, a preview URL of a sandbox port serving attack.html.

import { open, signIn, ok, expect, url, WAIT, PREFIX } from './common.mjs';

const preview = process.env.LAP_PREVIEW;
if (!preview) throw new Error('LAP_PREVIEW must be set');

const { browser, page } = await open();
try {
  await signIn(page);
  // The control: on the UI's own origin, the cookie does read the API.
  const status = await page.evaluate(
    async (api) => (await fetch(api, { credentials: 'include' })).status,
    `${url}${PREFIX}/agents`,
  );
  expect(status === 200, `the UI's page reads the API with its cookie (got ${status})`);
  ok('signed in to the web UI');

  await page.goto(preview);
  const origin = new URL(page.url()).origin;
  expect(origin !== new URL(url).origin, `the preview has an origin of its own (got ${origin})`);
  ok('the preview is served from its own origin');

  await page.goto(`${origin}/attack.html#ui=${encodeURIComponent(url)}`);
  await page.waitForFunction(() => document.title === 'done', null, { timeout: WAIT });
  const r = JSON.parse(await page.textContent('#out'));
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
