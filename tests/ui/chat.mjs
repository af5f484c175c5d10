// A person talks to an API-harness agent from the web UI: the session page shows a message
// composer instead of a terminal, a reply streams into the thread, and the conversation is still
// there after a reload. Run by tests/it/ui.rs, whose agent `sdk` runs the real `claude` in a real
// local sandbox, against the echoing fake Anthropic API of tests/it/support/anthropic.rs.
//
// Env: see common.mjs. Prints one `ok: …` line per step; any failed expectation throws.

import { PREFIX, screenshot, ok, expect, open, signIn } from './common.mjs';

const { browser, page, consoleErrors } = await open();

try {
  await signIn(page, '/agents/sdk');
  await page.waitForURL(/\/agents\/sdk$/);
  await page.click('#start-session');
  await page.waitForURL(/\/sessions\/[0-9a-f-]{36}$/);
  await page.waitForSelector('#message-input', { timeout: 60_000 });
  expect(!(await page.$('#terminal')), 'no terminal for an API harness');
  const id = page.url().split('/').pop();
  await page.waitForFunction((want) => document.querySelector('#attach-command')?.textContent === want, `lap chat ${id}`);
  ok('the session of an API harness shows a message composer, and `lap chat` as its command');

  // The fake model answers HOLD-THE-LINE with a first piece, `working`, then stalls until the turn
  // is interrupted: the piece in the thread while the turn still runs is the stream at work.
  await page.fill('#message-input', 'HOLD-THE-LINE');
  await page.click('#message-send');
  await page.waitForFunction(() => /working/.test([...document.querySelectorAll('#thread .msg.assistant')].pop()?.textContent || ''));
  expect(await page.isEnabled('#message-abort'), 'the turn still running (Stop reply enabled) while its first piece shows');
  ok('a reply streams into the thread while the turn runs');
  await page.click('#message-abort');
  await page.waitForFunction(() => !document.querySelector('#message-send').disabled);
  ok('Stop reply ends the running turn');

  await page.fill('#message-input', 'hello there');
  await page.click('#message-send');
  await page.waitForFunction(() => /echo: hello there/.test([...document.querySelectorAll('#thread .msg.assistant')].pop()?.textContent || ''));
  // The reply shows piece by piece before it is stored; the turn is over (and its reply kept) when
  // Send is enabled again, which the `done` frame does after the store has it.
  await page.waitForFunction(() => !document.querySelector('#message-send').disabled);
  const users = await page.$$eval('#thread .msg.user', (els) => els.map((e) => e.textContent));
  expect(JSON.stringify(users) === '["HOLD-THE-LINE","hello there"]', `the user's messages in the thread, got ${JSON.stringify(users)}`);
  ok('the next message gets its whole reply');

  await page.reload();
  await page.waitForFunction(() => /echo: hello there/.test(document.querySelector('#thread')?.textContent || ''));
  const thread = await page.textContent('#thread');
  expect(/hello there/.test(thread) && /echo: hello there/.test(thread), `the conversation after a reload, got ${thread}`);
  ok('the conversation is still there after a reload');
  if (screenshot) await page.screenshot({ path: screenshot });

  await page.fill('#exec-command', 'echo "exec-$((2+3))"; echo oops >&2; exit 3');
  await page.click('#exec-run');
  await page.waitForSelector('#exec-output [data-exit="3"]');
  const execOut = await page.textContent('#exec-output');
  expect(/exec-5/.test(execOut) && /oops/.test(execOut), `the command's stdout and stderr, got ${execOut}`);
  ok('a command run in the sandbox from the page shows its output and exit code');

  const sessionId = page.url().split('/').pop();
  const history = await page.evaluate(async ([prefix, id]) => (await fetch(`${prefix}/sessions/${id}/messages`)).json(), [PREFIX, sessionId]);
  expect(history.length >= 3 && history[history.length - 1].info.role === 'assistant', `the conversation in the store, got ${JSON.stringify(history)}`);

  expect(consoleErrors.length === 0, `no script errors, got:\n${consoleErrors.join('\n')}`);
  ok('no script errors');
} finally {
  await browser.close();
}
