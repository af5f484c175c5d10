// Shared by the browser scripts: the environment tests/it/ui.rs sets, Chromium, and assertions.
//
// Env: LAP_URL, LAP_MASTER_KEY, LAP_SCREENSHOT (where to save a screenshot), LAP_CHROMIUM.

import { chromium } from 'playwright-core';

export const url = process.env.LAP_URL;
export const key = process.env.LAP_MASTER_KEY;
export const screenshot = process.env.LAP_SCREENSHOT;
if (!url || !key) throw new Error('LAP_URL and LAP_MASTER_KEY must be set');

/// How long one expectation may take.
export const WAIT = 20_000;
export const PREFIX = '/api/v1/managed_agents';

export function ok(step) {
  console.log(`ok: ${step}`);
}

export function expect(cond, what) {
  if (!cond) throw new Error(`expected ${what}`);
}

// Debian's Chromium, headless, and one page of a 1400×900 window. `consoleErrors` collects script
// errors (a refused request logs `Failed to load resource`; those are expected and left out).
export async function open() {
  const browser = await chromium.launch({
    executablePath: process.env.LAP_CHROMIUM || '/usr/bin/chromium',
    headless: true,
    // Root in a container: Chromium's own sandbox needs user namespaces it may not get.
    args: ['--no-sandbox', '--disable-dev-shm-usage', '--disable-gpu'],
  });
  const context = await browser.newContext({ viewport: { width: 1400, height: 900 } });
  const page = await context.newPage();
  page.setDefaultTimeout(WAIT);
  const consoleErrors = [];
  page.on('pageerror', (err) => consoleErrors.push(String(err)));
  page.on('console', (msg) => {
    if (msg.type() === 'error' && !/Failed to load resource/.test(msg.text())) consoleErrors.push(msg.text());
  });
  return { browser, context, page, consoleErrors };
}

// Signs in through the sign-in page, from wherever `path` sends a signed-out browser.
export async function signIn(page, path = '/') {
  await page.goto(`${url}${path}`);
  await page.waitForURL(/\/sign-in\?next=/);
  await page.fill('#master-key', key);
  await page.click('button[type=submit]');
  await page.waitForURL((u) => !u.pathname.startsWith('/sign-in'));
}
