// A person uses lap's web UI in headless Chromium (Debian's, driven by playwright-core; no browser
// download): signs in, creates a shell agent through the form, opens a session, types in the
// browser terminal, resizes the window and sees `stty size` follow, sees a blocked request in the
// egress log, edits and deletes the agent, signs out. Run by tests/it/ui.rs against a real `lap serve --backend local`.
//
// Env: see common.mjs. Prints one `ok: …` line per step; any failed expectation throws and exits non-zero.

import { url, key, screenshot, WAIT, PREFIX, ok, expect, open } from './common.mjs';

const { browser, context, page, consoleErrors } = await open();

try {
  // --- sign in -------------------------------------------------------------------------------
  await page.goto(`${url}/`);
  await page.waitForURL(/\/sign-in\?next=/);
  await page.fill('#master-key', 'not-the-key');
  await page.click('button[type=submit]');
  await page.waitForFunction(() => /not the master key/.test(document.querySelector('#sign-in-error')?.textContent || ''));
  ok('a wrong key is refused on the sign-in page');

  await page.fill('#master-key', key);
  await page.click('button[type=submit]');
  await page.waitForURL(/\/agents$/);
  await page.waitForSelector('#agents');
  const cookies = await context.cookies();
  const session = cookies.find((c) => c.name === 'lap_ui_session');
  expect(session, `a lap_ui_session cookie, got ${JSON.stringify(cookies)}`);
  expect(session.httpOnly && session.sameSite === 'Strict', `an HttpOnly SameSite=Strict cookie, got ${JSON.stringify(session)}`);
  expect(!session.value.includes(key), 'a cookie that is not the master key');
  const stored = await page.evaluate(() => JSON.stringify({ ...localStorage }) + JSON.stringify({ ...sessionStorage }) + document.cookie);
  expect(!stored.includes(key), `no master key in web storage or script-visible cookies, got ${stored}`);
  ok('signed in: an HttpOnly SameSite=Strict session cookie, the key stored nowhere in the page');

  const csrf = await page.evaluate(async (prefix) => {
    const res = await fetch(`${prefix}/agents`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: '{"name":"csrf-test","harness_id":"shell"}' });
    return res.status;
  }, PREFIX);
  expect(csrf === 403, `a cookie POST without x-lap-ui to be refused with 403, got ${csrf}`);
  ok('a cookie request that changes state without the CSRF header is refused');

  // --- create an agent --------------------------------------------------------------------------
  await page.click('text=New agent');
  await page.waitForURL(/\/agents\/new$/);
  await page.fill('#agent-name', 'web-demo');
  await page.selectOption('#agent-harness', 'shell');
  await page.fill('#agent-deny', 'blocked.test');
  await page.click('text=Add variable');
  await page.fill('#agent-env [data-field=key]', 'GREETING');
  await page.fill('#agent-env [data-field=value]', 'hello-from-env');
  await page.selectOption('#credential-preset', 'GITHUB_TOKEN');
  const shownPoints = await page.inputValue('#agent-credentials [data-field=inject]');
  expect(shownPoints === 'authorization', `the preset's injection points shown, got ${shownPoints}`);
  await page.fill('#agent-credentials [data-field=value]', 'ghp_not_a_real_token_0000');
  await page.click('#agent-save');
  await page.waitForURL(/\/agents\/web-demo$/);
  await page.waitForSelector('#start-session');
  const agent = await page.evaluate(async (prefix) => (await fetch(`${prefix}/agents/web-demo`)).json(), PREFIX);
  expect(agent.harness_id === 'shell', `harness shell, got ${agent.harness_id}`);
  expect(JSON.stringify(agent.deny_out) === '["blocked.test"]', `deny_out [blocked.test], got ${JSON.stringify(agent.deny_out)}`);
  expect(agent.env.GREETING === 'hello-from-env', `env GREETING, got ${JSON.stringify(agent.env)}`);
  const gh = agent.credentials.find((c) => c.name === 'GITHUB_TOKEN');
  expect(gh && gh.hosts.includes('api.github.com'), `GITHUB_TOKEN bound to its preset hosts, got ${JSON.stringify(agent.credentials)}`);
  expect(JSON.stringify(gh.inject) === '["authorization"]', `GITHUB_TOKEN at its preset's injection point, got ${JSON.stringify(gh.inject)}`);
  ok('created agent web-demo (shell, deny blocked.test, an env var, a preset credential at its preset injection point) through the form');

  await page.click('nav >> text=Agents');
  await page.waitForSelector('tr[data-agent="web-demo"]');
  await page.fill('#agent-search', 'zzz-nothing');
  await page.waitForFunction(() => /no agent matches/.test(document.querySelector('#agents tbody')?.textContent || ''));
  await page.fill('#agent-search', 'web-de');
  await page.waitForSelector('tr[data-agent="web-demo"]');
  ok('the agent list searches');

  // --- open a session ---------------------------------------------------------------------------
  await page.click('tr[data-agent="web-demo"] >> text=Start session');
  await page.waitForURL(/\/sessions\/[0-9a-f-]{36}$/);
  const sessionId = page.url().split('/').pop();
  await page.waitForFunction(() => document.querySelector('#term-status')?.textContent === 'connected', null, { timeout: 60_000 });
  const attach = await page.textContent('#attach-command');
  expect(attach === `lap attach ${sessionId}`, `the attach command, got ${attach}`);
  await context.grantPermissions(['clipboard-read', 'clipboard-write'], { origin: url });
  await page.click('#copy-attach');
  const copied = await page.evaluate(() => navigator.clipboard.readText());
  expect(copied === `lap attach ${sessionId}`, `the copy button to copy the attach command, got ${copied}`);
  ok(`session ${sessionId} is ready and its terminal connected; Copy copies \`${copied}\``);
  await page.waitForFunction(() => /GITHUB_TOKEN \(in authorization\)/.test(document.querySelector('#session-credentials')?.textContent || ''));
  ok('the session page names the credentials its sandbox holds stubs for, with their injection points');

  const screen = () => page.evaluate(() => document.querySelector('#terminal .xterm-rows')?.innerText || '');
  const waitScreen = async (pattern, what) => {
    const deadline = Date.now() + WAIT;
    for (;;) {
      const text = await screen();
      const m = text.match(pattern);
      if (m) return m;
      if (Date.now() > deadline) throw new Error(`expected the terminal to show ${what}; it shows:\n${text}`);
      await page.waitForTimeout(100);
    }
  };

  await page.click('#terminal');
  await page.keyboard.type('echo "hello-$((6*7))-$GREETING"\n');
  await waitScreen(/hello-42-hello-from-env/, 'the output of echo');
  ok('typed in the browser terminal and saw the output');

  const sizeLabel = async () => {
    const [cols, rows] = (await page.textContent('#term-size')).split('×').map(Number);
    return { cols, rows };
  };
  const sttySize = async (tag) => {
    await page.keyboard.type(`printf '${tag}=%s\\n' "$(stty size)"\n`);
    const m = await waitScreen(new RegExp(`${tag}=(\\d+) (\\d+)`), `stty size (${tag})`);
    return { rows: Number(m[1]), cols: Number(m[2]) };
  };
  const before = await sizeLabel();
  const first = await sttySize('first');
  expect(first.cols === before.cols && first.rows === before.rows, `stty size ${JSON.stringify(first)} to match the terminal ${JSON.stringify(before)}`);
  await page.setViewportSize({ width: 1100, height: 640 });
  await page.waitForFunction(
    (b) => {
      const [c, r] = (document.querySelector('#term-size')?.textContent || '').split('×').map(Number);
      return c !== b.cols && r !== b.rows;
    },
    before,
  );
  const after = await sizeLabel();
  await page.keyboard.type('clear\n');
  const second = await sttySize('second');
  expect(second.cols === after.cols && second.rows === after.rows, `stty size ${JSON.stringify(second)} to follow the resized terminal ${JSON.stringify(after)}`);
  expect(second.cols < first.cols && second.rows < first.rows, `a smaller terminal after the window shrank: ${JSON.stringify(first)} → ${JSON.stringify(second)}`);
  ok(`resized the window: stty size followed ${first.cols}x${first.rows} → ${second.cols}x${second.rows}`);
  await page.setViewportSize({ width: 1400, height: 900 });

  // --- a blocked request in the egress log -----------------------------------------------------
  // blocked.test is on the agent's deny list: the vault refuses the CONNECT by name, before any
  // lookup or dial, so nothing leaves the machine.
  await page.click('#terminal');
  await page.keyboard.type('clear; echo "$(whoami)@$(hostname) in a lap sandbox"; curl -sS -o /dev/null -w "curl-code=%{http_code}\\n" https://blocked.test/\n');
  await waitScreen(/curl-code=\d+/, 'curl finishing');
  const blocked = await page.waitForSelector('#egress tr.blocked[data-host="blocked.test"]');
  const blockedText = await blocked.textContent();
  expect(/egress-policy/.test(blockedText), `the blocked row to name the egress policy, got ${blockedText}`);
  ok(`the blocked request appeared in the egress log: ${blockedText.replace(/\s+/g, ' ').trim()}`);

  if (screenshot) {
    await page.waitForSelector('#toast', { state: 'hidden' });
    await page.screenshot({ path: screenshot });
    ok(`screenshot of the session page saved to ${screenshot}`);
  }

  // --- the sessions list ------------------------------------------------------------------------
  await page.click('nav >> text=Sessions');
  await page.waitForURL(/\/sessions$/);
  await page.waitForSelector(`tr[data-session="${sessionId}"] [data-status="ready"]`);
  ok('the sessions list shows the session ready');

  // --- edit the agent, then delete it ----------------------------------------------------------
  await page.click('nav >> text=Agents');
  await page.click('tr[data-agent="web-demo"] >> text=Edit');
  await page.waitForURL(/\/agents\/web-demo$/);
  await page.waitForSelector('#agent-credentials [data-known="GITHUB_TOKEN"]');
  await page.fill('#agent-prompt', 'be brief');
  await page.fill('#agent-allow', '*.example.org');
  await page.click('#agent-env >> text=Remove');
  await page.fill('#agent-credentials [data-known="GITHUB_TOKEN"] [data-field=inject]', 'authorization header:X-GitHub-Token');
  await page.fill('#agent-credentials [data-known="GITHUB_TOKEN"] [data-field=rules]', 'GET,POST /repos/acme/**');
  await page.click('#agent-save');
  await page.waitForFunction(() => /saved web-demo/.test(document.querySelector('#toast')?.textContent || ''));
  const edited = await page.evaluate(async (prefix) => (await fetch(`${prefix}/agents/web-demo`)).json(), PREFIX);
  expect(edited.prompt === 'be brief', `the new prompt, got ${edited.prompt}`);
  expect(JSON.stringify(edited.allow_out) === '["*.example.org"]', `allow_out, got ${JSON.stringify(edited.allow_out)}`);
  expect(JSON.stringify(edited.env) === '{}', `the env var removed, got ${JSON.stringify(edited.env)}`);
  const kept = edited.credentials.find((c) => c.name === 'GITHUB_TOKEN');
  expect(kept && kept.fingerprint === gh.fingerprint, `the credential kept as it was, got ${JSON.stringify(edited.credentials)}`);
  expect(
    JSON.stringify(kept.inject) === '["authorization","header:x-github-token"]' && JSON.stringify(kept.rules) === '["GET,POST /repos/acme/**"]',
    `the credential's new injection point and rule saved, got ${JSON.stringify(kept)}`,
  );
  await page.waitForFunction(() => document.querySelector('#agent-credentials [data-known="GITHUB_TOKEN"] [data-field=inject]')?.value === 'authorization header:x-github-token');
  ok('edited the agent: prompt and egress changed, an env var removed, the credential kept with a new injection point and rule, shown again after saving');

  await page.click('nav >> text=Agents');
  await page.click('tr[data-agent="web-demo"] >> text=Delete');
  await page.waitForSelector('#confirm[open]');
  expect(/Delete agent web-demo\?/.test(await page.textContent('#confirm-text')), 'a confirmation that names the agent');
  await page.click('#confirm >> text=Cancel');
  await page.waitForSelector('tr[data-agent="web-demo"]');
  await page.click('tr[data-agent="web-demo"] >> text=Delete');
  await page.click('#confirm-ok');
  await page.waitForFunction(() => !document.querySelector('tr[data-agent="web-demo"]'));
  const gone = await page.evaluate(async (prefix) => (await fetch(`${prefix}/agents/web-demo`)).status, PREFIX);
  expect(gone === 404, `the agent gone, got ${gone}`);
  ok('deleted the agent after confirming (cancel kept it)');

  // --- sign out ---------------------------------------------------------------------------------
  const cookieHeader = `lap_ui_session=${session.value}`;
  const replayBefore = await fetch(`${url}${PREFIX}/agents`, { headers: { cookie: cookieHeader } });
  expect(replayBefore.status === 200, `the cookie to open the API from outside the browser too, got ${replayBefore.status}`);
  await page.click('#sign-out');
  await page.waitForURL(/\/sign-in$/);
  const afterSignOut = await page.evaluate(async () => (await fetch('/api/ui/auth/cookie')).status);
  expect(afterSignOut === 401, `signed out (401), got ${afterSignOut}`);
  const replay = await fetch(`${url}${PREFIX}/agents`, { headers: { cookie: cookieHeader } });
  expect(replay.status === 401, `the old cookie to be dead on the server, got ${replay.status}`);
  await page.goto(`${url}/agents`);
  await page.waitForURL(/\/sign-in\?next=/);
  ok('signed out: the session is over on the server, and pages ask to sign in again');

  expect(consoleErrors.length === 0, `no script errors, got:\n${consoleErrors.join('\n')}`);
  ok('no script errors');
} finally {
  await browser.close();
}
