// Sessions: every session with its status and phase, polled while the page is open; start one of
// an agent, open one, stop one.

import { PREFIX, api, clear, h, link, every, badge, ago, confirmAction, toast } from './lib.js';
import { startSession } from './agents.js';

/// How often the list is refreshed.
const POLL_MS = 2000;

export function sessionsPage(main) {
  const body = h('tbody');
  const error = h('p', { class: 'error' });
  const agentSelect = h('select', { id: 'session-agent' });
  const start = h(
    'button',
    {
      class: 'primary',
      onclick: () => agentSelect.value && startSession(agentSelect.value).catch((e) => (error.textContent = String(e))),
    },
    'Start session',
  );
  clear(
    main,
    h('div', { class: 'row spread' }, h('h1', {}, 'Sessions'), h('div', { class: 'row' }, agentSelect, start)),
    error,
    h(
      'table',
      { id: 'sessions' },
      h('thead', {}, h('tr', {}, ['Session', 'Agent', 'Status', 'Phase', 'Created', 'Last seen', ''].map((t) => h('th', {}, t)))),
      body,
    ),
  );
  api('GET', `${PREFIX}/agents?limit=200`)
    .then((list) => clear(agentSelect, list.data.map((a) => h('option', { value: a.name }, a.name))))
    .catch(() => {});
  const row = (s) =>
    h(
      'tr',
      { 'data-session': s.id },
      h('td', { class: 'mono' }, link(`/sessions/${s.id}`, s.id.slice(0, 8))),
      h('td', {}, link(`/agents/${encodeURIComponent(s.agent_name)}`, s.agent_name)),
      h('td', {}, badge(s.status)),
      h('td', {}, s.phase || '', s.failure_reason ? h('div', { class: 'error' }, s.failure_reason) : ''),
      h('td', { class: 'muted' }, ago(s.created_at)),
      h('td', { class: 'muted' }, ago(s.last_seen_at)),
      h(
        'td',
        {},
        s.status === 'ready' || s.status === 'creating'
          ? h(
              'button',
              {
                class: 'danger',
                onclick: async () => {
                  if (!(await confirmAction(`Stop session ${s.id.slice(0, 8)} of ${s.agent_name}? Its sandbox is deleted.`, 'Stop'))) return;
                  await api('DELETE', `${PREFIX}/sessions/${s.id}`);
                  toast('stopped');
                },
              },
              'Stop',
            )
          : '',
      ),
    );
  return every(POLL_MS, async () => {
    try {
      const list = await api('GET', `${PREFIX}/sessions?limit=100`);
      error.textContent = '';
      clear(body, list.length === 0 ? h('tr', {}, h('td', { colspan: 7, class: 'muted' }, 'no sessions yet')) : list.map(row));
    } catch (err) {
      error.textContent = String(err);
    }
  });
}
