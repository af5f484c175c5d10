// One session: its status and phase (polled), the `lap attach` command, a terminal in the browser
// for TUI harnesses (xterm.js on the same /tty WebSocket and protocol as the CLI), a message
// composer with streamed replies for API harnesses, and the live egress log of its vault.

import { Terminal } from './vendor/xterm.mjs';
import { FitAddon } from './vendor/addon-fit.mjs';
import { PREFIX, api, clear, h, link, every, badge, ago, copyText, confirmAction, toast, navigate } from './lib.js';
import { filesPanel } from './files.js';

/// How often the session and its egress log are polled.
const SESSION_POLL_MS = 1500;
const EGRESS_POLL_MS = 1000;
/// Largest input frame sent (the server refuses frames over 64 KiB).
const MAX_INPUT_FRAME = 16 * 1024;
/// The subprotocol that adds typed server messages (repaint, viewers, exit).
const SUBPROTOCOL = 'lap.tty.v1';

export function sessionPage(main, _ctx, id) {
  const stops = [];
  const title = h('h1', {}, 'Session ', h('span', { class: 'mono' }, id.slice(0, 8)));
  const state = h('div', { class: 'row', id: 'session-state' });
  // The CLI's way in: a terminal for TUI harnesses, the chat for API ones.
  let command = `lap attach ${id}`;
  const commandEl = h('code', { id: 'attach-command' }, command);
  const attach = h(
    'div',
    { class: 'attach' },
    h('span', { class: 'muted' }, 'From a terminal:'),
    commandEl,
    h('button', { type: 'button', id: 'copy-attach', onclick: () => copyText(command) }, 'Copy'),
  );
  const actions = h(
    'div',
    { class: 'row' },
    h(
      'button',
      {
        type: 'button',
        onclick: async () => {
          toast('restarting…');
          try {
            await api('POST', `${PREFIX}/sessions/${id}/restart`);
            navigate(`/sessions/${id}`, true);
          } catch (err) {
            toast(String(err));
          }
        },
      },
      'Restart',
    ),
    // Workspaces (issue 16): pause, resume, hibernate, fork.
    ...[
      ['pause', 'Pause', 'paused'],
      ['resume', 'Resume', 'resumed'],
      ['hibernate', 'Hibernate', 'hibernated'],
    ].map(([action, label, done]) =>
      h(
        'button',
        {
          type: 'button',
          id: `${action}-session`,
          onclick: async () => {
            try {
              await api('POST', `${PREFIX}/sessions/${id}/${action}`);
              toast(done);
            } catch (err) {
              toast(String(err));
            }
          },
        },
        label,
      ),
    ),
    h(
      'button',
      {
        type: 'button',
        id: 'fork-session',
        onclick: async () => {
          toast('forking…');
          try {
            const fork = await api('POST', `${PREFIX}/sessions/${id}/fork`, {});
            navigate(`/sessions/${fork.id}`);
          } catch (err) {
            toast(String(err));
          }
        },
      },
      'Fork',
    ),
    h(
      'button',
      {
        type: 'button',
        class: 'danger',
        id: 'stop-session',
        onclick: async () => {
          if (!(await confirmAction('Stop this session? Its sandbox and its workspace are deleted.', 'Stop'))) return;
          await api('DELETE', `${PREFIX}/sessions/${id}`);
          toast('stopped');
        },
      },
      'Stop',
    ),
  );
  const work = h('section', { id: 'session-work' }, h('p', { class: 'muted' }, 'Waiting for the session…'));
  const egressBody = h('tbody');
  const egress = h(
    'section',
    {},
    h('h2', {}, 'Egress log ', h('span', { class: 'muted' }, '— every request through the vault; blocked ones in red')),
    h(
      'div',
      { class: 'egress card', style: 'padding:0' },
      h(
        'table',
        { id: 'egress' },
        h('thead', {}, h('tr', {}, ['Time', 'Request', 'Status', 'Credentials', 'Blocked'].map((t) => h('th', {}, t)))),
        egressBody,
      ),
    ),
  );
  // Files in and out (issue 17): shown once the session is ready.
  const files = filesPanel(id);
  files.panel.hidden = true;
  clear(
    main,
    h('div', { class: 'row spread' }, title, actions),
    h('div', { class: 'row spread', style: 'margin-bottom:1rem' }, state, attach),
    h('div', { class: 'session-grid' }, h('div', {}, work, execPanel(id), files.panel), egress),
  );

  // Issue 17 part 1: the ports the sandbox listens on, each with an Open link (a preview URL).
  const ports = portsPanel(id);
  work.parentNode.append(ports.el);
  stops.push(ports.stop);

  // The credentials the sandbox holds stubs for: what the egress log can show being swapped.
  const credentials = h('p', { class: 'muted', id: 'session-credentials' });
  egress.insertBefore(credentials, egress.children[1]);
  let keysShown = false;
  let mounted = null;
  stops.push(
    every(SESSION_POLL_MS, async () => {
      let s;
      try {
        s = await api('GET', `${PREFIX}/sessions/${id}`);
      } catch (err) {
        clear(state, h('span', { class: 'error' }, String(err)));
        return;
      }
      command = s.supports_tui ? `lap attach ${id}` : `lap chat ${id}`;
      commandEl.textContent = command;
      clear(
        state,
        link(`/agents/${encodeURIComponent(s.agent_name)}`, s.agent_name),
        badge(s.status),
        s.phase ? h('span', { id: 'session-phase' }, s.phase, s.phase_detail ? ` (${s.phase_detail})` : '') : '',
        h('span', { class: 'muted' }, `started ${ago(s.created_at)}, active ${ago(s.last_seen_at)}`),
        s.failure_reason ? h('span', { class: 'error' }, s.failure_reason) : '',
      );
      if (s.status === 'ready' && !keysShown) {
        keysShown = true;
        Promise.all([
          api('GET', `${PREFIX}/sessions/${id}/vault-keys`),
          // Where each may go, as the agent says now (the session's binding was made from it).
          api('GET', `${PREFIX}/agents/${encodeURIComponent(s.agent_name)}`).catch(() => null),
        ])
          .then(([keys, agent]) => {
            const where = (key) => {
              const c = agent?.credentials?.find((x) => x.name === key);
              if (!c) return key;
              const rules = c.rules?.length ? `; rules ${c.rules.join(', ')}` : '';
              return `${key} (in ${(c.inject || []).join(', ')}${rules})`;
            };
            credentials.textContent = keys.length
              ? `Credentials in this sandbox (as stubs; the vault swaps in the real values toward their hosts, only at their injection points): ${keys.map(where).join('; ')}`
              : 'No credentials in this sandbox.';
          })
          .catch(() => (keysShown = false));
      }
      if (s.status === 'ready' && files.panel.hidden) {
        files.panel.hidden = false;
        files.show();
      }
      if (s.status === 'ready' && !mounted) {
        mounted = s.supports_tui ? mountTerminal(work, s) : mountChat(work, s);
        stops.push(() => mounted.stop());
      } else if (s.status !== 'ready' && !mounted) {
        clear(work, h('p', { class: 'muted' }, s.status === 'creating' ? `Starting: ${s.phase || 'creating'}…` : `This session is ${s.status}.`));
      } else if (s.status !== 'ready' && mounted) {
        mounted.ended?.(s);
      }
    }),
  );

  let after = 0;
  stops.push(
    every(EGRESS_POLL_MS, async () => {
      const records = await api('GET', `${PREFIX}/sessions/${id}/interceptions?after=${after}&limit=500`);
      for (const r of records) {
        after = Math.max(after, r.id);
        egressBody.prepend(egressRow(r));
      }
      if (!egressBody.children.length) {
        egressBody.appendChild(h('tr', { class: 'empty' }, h('td', { colspan: 5, class: 'muted' }, 'no requests yet')));
      } else if (records.length) {
        egressBody.querySelector('tr.empty')?.remove();
      }
    }),
  );
  return () => stops.forEach((stop) => stop());
}

// `lap exec`: one command in the sandbox, as the sandbox user, its output streamed back.
function execPanel(id) {
  const input = h('input', { id: 'exec-command', placeholder: 'a shell command, e.g. ls -la /work', style: 'flex:1' });
  const output = h('pre', { id: 'exec-output', class: 'card', hidden: true, style: 'white-space:pre-wrap;max-height:30vh;overflow:auto' });
  const run = h('button', { type: 'submit', id: 'exec-run' }, 'Run');
  const decode = (b64) => new TextDecoder().decode(Uint8Array.from(atob(b64), (c) => c.charCodeAt(0)));
  const form = h(
    'form',
    {
      class: 'row',
      style: 'margin-top:.8rem',
      onsubmit: async (event) => {
        event.preventDefault();
        const command = input.value.trim();
        if (!command) return;
        run.disabled = true;
        output.hidden = false;
        output.textContent = '';
        try {
          const res = await fetch(`${PREFIX}/sessions/${id}/exec`, {
            method: 'POST',
            credentials: 'same-origin',
            headers: { 'content-type': 'application/json', 'x-lap-ui': '1' },
            body: JSON.stringify({ command: ['sh', '-c', command] }),
          });
          if (!res.ok) {
            const body = await res.json().catch(() => ({ error: res.statusText }));
            throw new Error(body.hint ? `${body.error} (hint: ${body.hint})` : body.error);
          }
          const reader = res.body.pipeThrough(new TextDecoderStream()).getReader();
          let buffer = '';
          for (;;) {
            const { value, done } = await reader.read();
            if (done) break;
            buffer += value;
            let cut;
            while ((cut = buffer.indexOf('\n')) >= 0) {
              const event = JSON.parse(buffer.slice(0, cut));
              buffer = buffer.slice(cut + 1);
              if (event.stdout) output.append(decode(event.stdout));
              else if (event.stderr) output.append(h('span', { class: 'error' }, decode(event.stderr)));
              else if ('exit_code' in event) output.append(h('span', { class: 'muted', 'data-exit': event.exit_code }, `[exit ${event.exit_code}]`));
              else if (event.error) output.append(h('span', { class: 'error' }, `[error: ${event.error}]`));
            }
          }
        } catch (err) {
          output.append(h('span', { class: 'error' }, String(err)));
        } finally {
          run.disabled = false;
        }
      },
    },
    h('strong', {}, 'Run in the sandbox'),
    input,
    run,
  );
  return h('div', {}, form, output);
}

function egressRow(r) {
  const time = new Date(r.timestamp).toLocaleTimeString();
  const target = `${r.method} ${r.host}${r.port === 443 ? '' : `:${r.port}`}${r.path || ''}`;
  return h(
    'tr',
    { class: r.blocked ? 'blocked' : '', 'data-host': r.host, 'data-blocked': r.blocked ? r.block_kind || 'yes' : undefined },
    h('td', { class: 'muted' }, time),
    h('td', { class: 'mono' }, target),
    h('td', {}, r.status == null ? '' : String(r.status)),
    h('td', {}, r.swapped.length ? `swapped ${r.swapped.join(', ')}` : '', r.scrubbed.length ? ` · scrubbed ${r.scrubbed.join(', ')}` : ''),
    h('td', { class: 'why' }, r.blocked ? `${r.alert ? '⚠ ' : ''}${r.block_kind || 'blocked'}: ${r.blocked}` : ''),
  );
}

// The agent's terminal: xterm.js on the session's /tty WebSocket, sized to its box.
function mountTerminal(work, session) {
  const box = h('div', { class: 'terminal-box', id: 'terminal' });
  const size = h('span', { id: 'term-size', class: 'mono' });
  const viewers = h('span', { class: 'muted', id: 'term-viewers' });
  const status = h('span', { id: 'term-status', class: 'muted' }, 'connecting…');
  const reconnect = h('button', { type: 'button', hidden: true, onclick: () => connect() }, 'Reconnect');
  clear(work, h('div', { class: 'row', style: 'margin-bottom:.4rem' }, h('strong', {}, 'Terminal'), size, viewers, status, reconnect), box);

  const term = new Terminal({
    cursorBlink: true,
    fontFamily: 'ui-monospace, "DejaVu Sans Mono", monospace',
    fontSize: 14,
    scrollback: 5000,
    theme: { background: '#111111' },
  });
  const fit = new FitAddon();
  term.loadAddon(fit);
  term.open(box);
  const encoder = new TextEncoder();
  let ws = null;
  let closedByUs = false;

  const send = (bytes) => {
    if (!ws || ws.readyState !== WebSocket.OPEN) return;
    for (let i = 0; i < bytes.length; i += MAX_INPUT_FRAME) ws.send(bytes.subarray(i, i + MAX_INPUT_FRAME));
  };
  const sendResize = () => {
    size.textContent = `${term.cols}×${term.rows}`;
    if (ws && ws.readyState === WebSocket.OPEN) ws.send(JSON.stringify({ type: 'resize', cols: term.cols, rows: term.rows }));
  };
  term.onData((data) => send(encoder.encode(data)));
  term.onBinary((data) => send(Uint8Array.from(data, (c) => c.charCodeAt(0))));
  term.onResize(sendResize);

  const refit = () => {
    try {
      fit.fit();
    } catch {
      // not laid out yet
    }
  };
  const observer = new ResizeObserver(refit);
  observer.observe(box);
  window.addEventListener('resize', refit);

  function connect() {
    reconnect.hidden = true;
    status.textContent = 'connecting…';
    const scheme = location.protocol === 'https:' ? 'wss' : 'ws';
    // Browsers cannot set headers on a WebSocket: the session's own token goes in the query.
    const url = `${scheme}://${location.host}${PREFIX}/sessions/${session.id}/tty?token=${encodeURIComponent(session.tty_token)}`;
    ws = new WebSocket(url, [SUBPROTOCOL]);
    ws.binaryType = 'arraybuffer';
    ws.onopen = () => {
      status.textContent = 'connected';
      refit();
      sendResize();
      term.focus();
    };
    ws.onmessage = (event) => {
      if (typeof event.data !== 'string') {
        term.write(new Uint8Array(event.data));
        return;
      }
      let msg;
      try {
        msg = JSON.parse(event.data);
      } catch {
        term.write(event.data);
        return;
      }
      if (msg.type === 'repaint') term.reset();
      else if (msg.type === 'viewers') viewers.textContent = msg.count > 1 ? `${msg.count} viewers` : '';
      else if (msg.type === 'exit') status.textContent = `the agent exited with code ${msg.code}`;
      else if (msg.type === 'error') status.textContent = msg.message;
    };
    ws.onclose = (event) => {
      if (closedByUs) return;
      if (!/exited/.test(status.textContent)) status.textContent = `disconnected${event.reason ? `: ${event.reason}` : ''}`;
      reconnect.hidden = false;
    };
  }
  connect();

  return {
    stop() {
      closedByUs = true;
      observer.disconnect();
      window.removeEventListener('resize', refit);
      ws?.close();
      term.dispose();
    },
    ended(s) {
      reconnect.hidden = true;
      if (!/exited/.test(status.textContent)) status.textContent = `the session is ${s.status}`;
    },
  };
}

// The message composer of an API harness: the conversation so far, then each reply streamed.
function mountChat(work, session) {
  const thread = h('div', { class: 'thread', id: 'thread' });
  const input = h('textarea', { id: 'message-input', placeholder: 'Message the agent (Ctrl+Enter sends)' });
  const sendButton = h('button', { type: 'submit', class: 'primary', id: 'message-send' }, 'Send');
  const abortButton = h(
    'button',
    { type: 'button', id: 'message-abort', disabled: true, onclick: () => api('POST', `${PREFIX}/sessions/${session.id}/abort`, {}).catch((e) => (error.textContent = String(e))) },
    'Stop reply',
  );
  const error = h('p', { class: 'error' });
  let controller = null;
  const form = h(
    'form',
    {
      onsubmit: (event) => {
        event.preventDefault();
        const text = input.value.trim();
        if (text && !controller) sendMessage(text);
      },
    },
    input,
    error,
    h('div', { class: 'row' }, sendButton, abortButton),
  );
  input.addEventListener('keydown', (event) => {
    if (event.key === 'Enter' && (event.ctrlKey || event.metaKey)) form.requestSubmit();
  });
  clear(work, h('strong', {}, 'Messages'), thread, form);

  const bubble = (role) => {
    const el = h('div', { class: `msg ${role}` });
    thread.appendChild(el);
    thread.scrollTop = thread.scrollHeight;
    return el;
  };
  const partEl = (part) => {
    if (part.type === 'text') return h('div', { 'data-part': part.id }, part.text);
    if (part.type === 'reasoning') return h('div', { class: 'reasoning', 'data-part': part.id }, part.text);
    const st = part.state || {};
    return h('div', { class: 'tool', 'data-part': part.id }, `⚙ ${part.tool} ${st.status || ''}`, st.output ? `\n${String(st.output).slice(0, 2000)}` : '', st.error ? `\n${st.error}` : '');
  };
  const render = (el, message) => clear(el, message.parts.map(partEl));

  api('GET', `${PREFIX}/sessions/${session.id}/messages`)
    .then((history) => {
      for (const m of history) render(bubble(m.info.role), m);
    })
    .catch((err) => (error.textContent = String(err)));

  async function sendMessage(text) {
    error.textContent = '';
    input.value = '';
    bubble('user').textContent = text;
    const reply = bubble('assistant');
    reply.textContent = '…';
    const parts = new Map();
    controller = new AbortController();
    sendButton.disabled = true;
    abortButton.disabled = false;
    try {
      const res = await fetch(`${PREFIX}/sessions/${session.id}/message_stream`, {
        method: 'POST',
        credentials: 'same-origin',
        headers: { 'content-type': 'application/json', accept: 'text/event-stream', 'x-lap-ui': '1' },
        body: JSON.stringify({ text }),
        signal: controller.signal,
      });
      if (!res.ok) {
        const body = await res.json().catch(() => ({ error: res.statusText }));
        throw new Error(body.hint ? `${body.error} (hint: ${body.hint})` : body.error);
      }
      const reader = res.body.pipeThrough(new TextDecoderStream()).getReader();
      let buffer = '';
      for (;;) {
        const { value, done } = await reader.read();
        if (done) break;
        buffer += value;
        let cut;
        while ((cut = buffer.indexOf('\n\n')) >= 0) {
          const block = buffer.slice(0, cut);
          buffer = buffer.slice(cut + 2);
          const data = block
            .split('\n')
            .filter((l) => l.startsWith('data:'))
            .map((l) => l.slice(5).trimStart())
            .join('\n');
          if (data) onFrame(JSON.parse(data));
        }
      }
    } catch (err) {
      if (err.name !== 'AbortError') error.textContent = String(err);
    } finally {
      controller = null;
      sendButton.disabled = false;
      abortButton.disabled = true;
    }

    function onFrame(frame) {
      if (frame.type === 'harness_event') {
        const ev = frame.event;
        if (reply.textContent === '…') reply.textContent = '';
        if (ev.type === 'item.started' || ev.type === 'item.completed') {
          const el = partEl(ev.data.item);
          const old = parts.get(ev.data.item.id);
          if (old) old.replaceWith(el);
          else reply.appendChild(el);
          parts.set(ev.data.item.id, el);
        } else if (ev.type === 'item.delta' && ev.data.field !== 'tool_input') {
          const el = parts.get(ev.data.item_id);
          if (el) el.textContent += ev.data.delta;
        } else if (ev.type === 'turn.completed' && ev.data.error) {
          error.textContent = ev.data.error.message;
        }
        thread.scrollTop = thread.scrollHeight;
      } else if (frame.type === 'done' && frame.message) {
        render(reply, frame.message);
      } else if (frame.type === 'error') {
        error.textContent = frame.message;
        if (reply.textContent === '…') reply.remove();
      }
    }
  }

  return {
    stop() {
      controller?.abort();
    },
    ended(s) {
      sendButton.disabled = true;
      error.textContent = `the session is ${s.status}`;
    },
  };
}

/// How often the ports the sandbox listens on are polled.
const PORTS_POLL_MS = 3000;

// The ports the sandbox listens on. "Open" mints a signed preview URL and opens it in a new tab
// with no opener: what the sandbox serves is hostile, so it is shown on the preview origin, never
// this one, and gets no handle on this window.
function portsPanel(id) {
  const body = h('tbody');
  const el = h(
    'section',
    { id: 'session-ports', style: 'margin-top:1rem' },
    h('h2', {}, 'Ports ', h('span', { class: 'muted' }, '— what the sandbox listens on; opened on a preview origin of their own')),
    h('table', { class: 'card' }, h('thead', {}, h('tr', {}, ['Port', 'Address', ''].map((t) => h('th', {}, t)))), body),
  );
  const open = async (port) => {
    try {
      const preview = await api('POST', `${PREFIX}/sessions/${id}/preview_urls`, { port });
      window.open(preview.url, '_blank', 'noopener,noreferrer');
    } catch (err) {
      toast(String(err));
    }
  };
  let shown = '';
  const stop = every(PORTS_POLL_MS, async () => {
    let listed;
    try {
      listed = (await api('GET', `${PREFIX}/sessions/${id}/ports`)).ports;
    } catch {
      listed = null;
    }
    const key = JSON.stringify(listed);
    if (key === shown) return;
    shown = key;
    if (!listed || !listed.length) {
      clear(body, h('tr', { class: 'empty' }, h('td', { colspan: 3, class: 'muted' }, listed ? 'no port open' : 'the sandbox is not running')));
      return;
    }
    clear(
      body,
      ...listed.map((p) =>
        h(
          'tr',
          { 'data-port': String(p.port) },
          h('td', { class: 'mono' }, String(p.port)),
          h('td', { class: 'mono muted' }, p.address),
          h('td', {}, h('button', { type: 'button', class: 'open-port', onclick: () => open(p.port) }, 'Open')),
        ),
      ),
    );
  });
  return { el, stop };
}
