// A person moves files through the session page's file browser in headless Chromium: signs in,
// opens a ready session (made by tests/it/ui_files.rs), uploads a file into /work, sees it listed with
// its size, downloads it back (the browser saves it: an attachment, not a page), opens a directory,
// and sees a path outside /work and /tmp refused with the server's hint. Run by tests/it/ui_files.rs
// against a real `lap serve --backend local`.
//
// Env: see common.mjs, plus LAP_SESSION (the session's id) and LAP_UPLOAD (bytes to upload, base64).

import { readFile } from 'node:fs/promises';
import { url, screenshot, ok, expect, open, signIn } from './common.mjs';

const session = process.env.LAP_SESSION;
const upload = Buffer.from(process.env.LAP_UPLOAD || '', 'base64');
if (!session || !upload.length) throw new Error('LAP_SESSION and LAP_UPLOAD must be set');

const { browser, page, consoleErrors } = await open();

try {
  await signIn(page, `/sessions/${session}`);
  await page.waitForURL(new RegExp(`/sessions/${session}$`));
  await page.waitForSelector('#files:not([hidden]) #files-table tr[data-file="home"]');
  ok('the session page lists /work in its file browser');

  await page.setInputFiles('#files-upload', { name: 'report.bin', mimeType: 'application/octet-stream', buffer: upload });
  await page.click('#files-upload-button');
  const row = await page.waitForSelector('#files-table tr[data-file="report.bin"]');
  const size = await row.evaluate((tr) => tr.children[1].textContent);
  expect(/KiB/.test(size), `the uploaded file listed with its size, got ${size}`);
  ok(`uploaded report.bin (${upload.length} bytes) through the browser; listed as ${size}`);

  const [download] = await Promise.all([
    page.waitForEvent('download'),
    page.click('#files-table tr[data-file="report.bin"] a[data-download]'),
  ]);
  expect(download.suggestedFilename() === 'report.bin', `the download named report.bin, got ${download.suggestedFilename()}`);
  const saved = await readFile(await download.path());
  expect(Buffer.compare(saved, upload) === 0, `the downloaded bytes equal the uploaded ones (${saved.length} vs ${upload.length})`);
  ok('downloaded report.bin back: the browser saved it, byte for byte');

  await page.click('#files-table tr[data-file="home"] button');
  await page.waitForFunction(() => document.querySelector('#files-path').value === '/work/home');
  await page.click('#files-up');
  await page.waitForFunction(() => document.querySelector('#files-path').value === '/work');
  ok('opened a directory and went back up');

  await page.fill('#files-path', '/etc');
  await page.click('#files-go');
  await page.waitForSelector('#files-error:not([hidden])');
  const refused = await page.textContent('#files-error');
  expect(/outside \/work and \/tmp/.test(refused) && /hint:/.test(refused), `/etc refused with a hint, got ${refused}`);
  ok(`a path outside /work and /tmp is refused: ${refused}`);

  if (screenshot) await page.screenshot({ path: screenshot, fullPage: true });
  expect(consoleErrors.length === 0, `no script errors, got ${JSON.stringify(consoleErrors)}`);
  ok('no script errors on the page');
} finally {
  await browser.close();
}
