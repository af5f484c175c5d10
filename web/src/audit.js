// The audit log (admin): every control-plane action with who did it, when, from where and how it
// ended, newest first; new ones are added as they happen.

import { api, clear, h, every } from './lib.js';

/// How often new entries are asked for.
const POLL_MS = 2000;
/// How many rows the page keeps.
const KEEP = 500;

export function auditPage(main) {
  const body = h('tbody');
  const error = h('p', { class: 'error' });
  clear(
    main,
    h('h1', {}, 'Audit log'),
    h('p', { class: 'muted' }, 'Every change, terminal attached, port-forward and sign-in; never a request body. `lap audit -f` follows it from a terminal.'),
    error,
    h(
      'table',
      { id: 'audit' },
      h('thead', {}, h('tr', {}, ['When', 'Who', 'Action', 'Target', 'Status', 'From'].map((t) => h('th', {}, t)))),
      body,
    ),
  );
  let last = null;
  const row = (e) =>
    h(
      'tr',
      { 'data-entry': String(e.id), 'data-action': e.action, 'data-actor': e.actor },
      h('td', { class: 'muted', title: e.at }, e.at.replace('T', ' ').replace(/\.\d+Z$/, 'Z')),
      h('td', {}, e.actor),
      h('td', { class: 'mono' }, e.action),
      h('td', { class: 'mono' }, e.target || ''),
      h('td', { class: e.status >= 400 ? 'error' : '' }, String(e.status)),
      h('td', { class: 'muted' }, e.peer || ''),
    );
  return every(POLL_MS, async () => {
    try {
      const query = last === null ? '?limit=200' : `?after=${last}&limit=1000`;
      const { entries } = await api('GET', `/api/v1/admin/audit${query}`);
      error.textContent = '';
      if (entries.length > 0) last = entries[entries.length - 1].id;
      if (last === null && entries.length === 0) {
        clear(body, h('tr', {}, h('td', { colspan: 6, class: 'muted' }, 'nothing yet')));
        last = 0;
        return;
      }
      if (body.querySelector('td[colspan]')) clear(body);
      for (const e of entries) body.insertBefore(row(e), body.firstChild);
      while (body.children.length > KEEP) body.lastChild.remove();
    } catch (err) {
      error.textContent = String(err);
    }
  });
}
