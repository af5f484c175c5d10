// Agents: the list with search, start a session, delete with confirmation; the create/edit form
// (harness, repo, branch, prompt, model, env, credentials with bound hosts and presets, egress).

import { PREFIX, api, clear, h, link, navigate, toast, confirmAction, lines, badge, ago } from './lib.js';

export async function startSession(agent) {
  const session = await api('POST', `${PREFIX}/agents/${encodeURIComponent(agent)}/session`, { title: 'web' });
  navigate(`/sessions/${session.id}`);
}

export function agentsPage(main, _ctx) {
  const search = h('input', { type: 'search', id: 'agent-search', placeholder: 'Search by name, id or harness' });
  const body = h('tbody');
  const error = h('p', { class: 'error' });
  let seq = 0;
  const load = async () => {
    const mine = ++seq;
    const q = search.value.trim();
    const url = `${PREFIX}/agents?limit=200${q ? `&search=${encodeURIComponent(q)}` : ''}`;
    try {
      const list = await api('GET', url);
      if (mine !== seq) return;
      error.textContent = '';
      clear(
        body,
        list.data.length === 0
          ? h('tr', {}, h('td', { colspan: 6, class: 'muted' }, q ? 'no agent matches' : 'no agents yet'))
          : list.data.map(row),
      );
    } catch (err) {
      error.textContent = String(err);
    }
  };
  const row = (agent) =>
    h(
      'tr',
      { 'data-agent': agent.name },
      h('td', {}, link(`/agents/${encodeURIComponent(agent.name)}`, agent.name)),
      h('td', {}, agent.harness_id),
      h('td', { class: 'mono' }, agent.repo_url || ''),
      h('td', {}, String(agent.session_count ?? 0), agent.has_active_session ? h('span', {}, ' · ', badge('ready')) : ''),
      h('td', { class: 'muted' }, ago(agent.created_at)),
      h(
        'td',
        {},
        h(
          'div',
          { class: 'row' },
        h('button', { class: 'primary', onclick: () => startSession(agent.name).catch((e) => (error.textContent = String(e))) }, 'Start session'),
        h('button', { onclick: () => navigate(`/agents/${encodeURIComponent(agent.name)}`) }, 'Edit'),
        h(
          'button',
          {
            class: 'danger',
            onclick: async () => {
              if (!(await confirmAction(`Delete agent ${agent.name}? Its live sessions are stopped and its sessions removed.`))) return;
              try {
                await api('DELETE', `${PREFIX}/agents/${agent.id}`);
                toast(`deleted ${agent.name}`);
                load();
              } catch (err) {
                error.textContent = String(err);
              }
            },
          },
          'Delete',
        ),
        ),
      ),
    );
  let debounce;
  search.addEventListener('input', () => {
    clearTimeout(debounce);
    debounce = setTimeout(load, 200);
  });
  clear(
    main,
    h('div', { class: 'row spread' }, h('h1', {}, 'Agents'), h('div', { class: 'row' }, search, link('/agents/new', h('span', { class: 'button primary' }, 'New agent')))),
    error,
    h(
      'table',
      { id: 'agents' },
      h('thead', {}, h('tr', {}, ['Name', 'Harness', 'Repo', 'Sessions', 'Created', ''].map((t) => h('th', {}, t)))),
      body,
    ),
  );
  load();
  return () => clearTimeout(debounce);
}

// The form for a new agent (name null) or an existing one.
export function agentFormPage(main, ctx, name) {
  const harnesses = ctx.config?.harnesses || [];
  const presets = ctx.config?.credential_presets || [];
  // Where a credential's stub may be swapped when it is given nothing else: its preset's points.
  const injectionPresets = ctx.config?.injection_presets || [];
  const defaultInject = (credName) =>
    (injectionPresets.find(([n]) => n === credName) || [null, ctx.config?.default_injection || ['authorization']])[1];
  const error = h('p', { class: 'error', id: 'agent-error' });
  const f = {
    name: h('input', { id: 'agent-name', required: true, pattern: '[a-z0-9][a-z0-9\\-]{0,62}', placeholder: 'my-agent' }),
    harness: h(
      'select',
      { id: 'agent-harness' },
      harnesses.map((x) => h('option', { value: x.id }, `${x.id}${x.supports_tui ? ' (terminal)' : ' (messages)'}`)),
    ),
    command: h('input', { id: 'agent-command', placeholder: 'default: the harness’s own' }),
    repo: h('input', { id: 'agent-repo', placeholder: 'https://github.com/owner/repo.git' }),
    branch: h('input', { id: 'agent-branch', placeholder: 'main' }),
    model: h('input', { id: 'agent-model', placeholder: 'default: the tool’s own' }),
    prompt: h('textarea', { id: 'agent-prompt', placeholder: 'System prompt' }),
    allow: h('textarea', { id: 'agent-allow', placeholder: 'one per line: pypi.org, *.npmjs.org, 10.0.0.0/8 (empty: anywhere)' }),
    deny: h('textarea', { id: 'agent-deny', placeholder: 'one per line' }),
    memory: h('input', { id: 'agent-memory', type: 'number', min: 16, placeholder: '4096' }),
    pids: h('input', { id: 'agent-pids', type: 'number', min: 16, placeholder: '1024' }),
    cpus: h('input', { id: 'agent-cpus', type: 'number', step: '0.01', min: 0.01, placeholder: '2' }),
  };
  // What the chosen harness needs: its credentials and where its tool comes from.
  const harnessHint = h('p', { class: 'muted', id: 'harness-hint' });
  const showHarness = () => {
    const x = harnesses.find((x) => x.id === f.harness.value);
    if (!x) return;
    const needs = x.needs_env.length ? `needs ${x.needs_env.join(', ')} (add it under Credentials); ` : '';
    harnessHint.textContent = `${x.supports_tui ? 'a terminal in the browser' : 'driven by messages'}; ${needs}tool: ${x.install_hint}`;
  };
  f.harness.addEventListener('change', showHarness);
  const envRows = h('div', { id: 'agent-env' });
  const credRows = h('div', { id: 'agent-credentials' });
  let existing = null;

  const envRow = (key = '', value = '') => {
    const r = h(
      'div',
      { class: 'kv env' },
      h('input', { placeholder: 'NAME', value: key, 'data-field': 'key' }),
      h('input', { placeholder: 'value', value, 'data-field': 'value' }),
      h('button', { type: 'button', onclick: () => r.remove() }, 'Remove'),
    );
    envRows.appendChild(r);
  };
  // A credential row; `known` is set for a credential the agent already holds (value write-only).
  // Under it: where its stub may be swapped (injection points, the preset's by default) and the
  // requests it may go into (rules, one a line; none: any).
  const credRow = (cred = {}, known = false) => {
    const nameInput = h('input', { placeholder: 'NAME', value: cred.name || '', 'data-field': 'name', readonly: known });
    const inject = h('input', {
      'data-field': 'inject',
      value: (cred.inject || (cred.name ? defaultInject(cred.name) : [])).join(' '),
      placeholder: `injection points: ${defaultInject(cred.name || '').join(' ')}`,
      title: 'authorization, header:NAME, query:NAME or body, separated by spaces',
    });
    const rules = h('textarea', {
      'data-field': 'rules',
      rows: 1,
      placeholder: 'rules, one a line: GET,POST /repos/acme/** (empty: any request)',
    });
    rules.value = (cred.rules || []).join('\n');
    // A new row shows the points its name gets by default until they are edited.
    nameInput.addEventListener('input', () => {
      const points = defaultInject(nameInput.value.trim()).join(' ');
      inject.placeholder = `injection points: ${points}`;
      if (!inject.dataset.edited) inject.value = nameInput.value.trim() ? points : '';
    });
    inject.addEventListener('input', () => (inject.dataset.edited = '1'));
    const r = h(
      'div',
      { class: 'cred-block', 'data-known': known ? cred.name : undefined, 'data-name': cred.name || undefined },
      h(
        'div',
        { class: 'kv cred' },
        nameInput,
        h('input', {
          type: 'password',
          placeholder: known ? `unchanged (fingerprint ${cred.fingerprint})` : 'real value',
          'data-field': 'value',
          autocomplete: 'off',
        }),
        h('input', { placeholder: 'bound hosts: api.example.com *.example.com', value: (cred.hosts || []).join(' '), 'data-field': 'hosts' }),
        h('button', { type: 'button', onclick: () => r.remove() }, 'Remove'),
      ),
      h('div', { class: 'kv cred-where' }, h('span', { class: 'muted' }, 'goes in'), inject, rules),
    );
    credRows.appendChild(r);
  };
  const presetSelect = h(
    'select',
    {
      id: 'credential-preset',
      onchange: () => {
        const preset = presets.find(([n]) => n === presetSelect.value);
        if (preset) credRow({ name: preset[0], hosts: preset[1] });
        presetSelect.value = '';
      },
    },
    h('option', { value: '' }, 'Add a preset…'),
    presets.map(([n, hosts]) => h('option', { value: n }, `${n} → ${hosts.join(', ')}`)),
  );

  const field = (label, input, hint) => [h('label', { for: input.id }, label, hint ? h('span', { class: 'muted' }, ` — ${hint}`) : ''), input];

  const save = async (event) => {
    event.preventDefault();
    error.textContent = '';
    const env = {};
    for (const r of envRows.children) {
      const k = r.querySelector('[data-field=key]').value.trim();
      if (k) env[k] = r.querySelector('[data-field=value]').value;
    }
    const creds = [...credRows.children].map((r) => {
      const name = r.querySelector('[data-field=name]').value.trim();
      const inject = lines(r.querySelector('[data-field=inject]').value);
      return {
        known: r.dataset.known,
        name,
        value: r.querySelector('[data-field=value]').value,
        hosts: lines(r.querySelector('[data-field=hosts]').value),
        // Left empty: the name's default points.
        inject: inject.length ? inject : defaultInject(name),
        rules: r
          .querySelector('[data-field=rules]')
          .value.split('\n')
          .map((x) => x.trim())
          .filter(Boolean),
      };
    });
    const entry = ({ name, value, hosts, inject, rules }) => ({ name, value, hosts, inject, rules });
    const limits = {};
    if (f.memory.value) limits.memory_mb = Number(f.memory.value);
    if (f.pids.value) limits.pids = Number(f.pids.value);
    if (f.cpus.value) limits.cpus = Number(f.cpus.value);
    const common = {
      harness_id: f.harness.value,
      command: f.command.value.trim(),
      repo_url: f.repo.value.trim(),
      branch: f.branch.value.trim(),
      prompt: f.prompt.value,
      model: f.model.value.trim(),
      env,
      allow_out: lines(f.allow.value),
      deny_out: lines(f.deny.value),
    };
    try {
      let saved;
      if (!existing) {
        const body = { name: f.name.value.trim(), ...common, limits };
        for (const k of ['command', 'repo_url', 'branch', 'prompt', 'model']) if (!body[k]) delete body[k];
        body.credentials = creds.filter((c) => c.name).map(entry);
        saved = await api('POST', `${PREFIX}/agents`, body);
        toast(`created ${saved.name}`);
      } else {
        const body = { name: f.name.value.trim(), ...common, limits };
        if (!body.branch) delete body.branch;
        body.credentials = creds.filter((c) => c.name && c.value).map(entry);
        const rebind = {};
        const reinject = {};
        const rerule = {};
        for (const c of creds.filter((c) => c.known && !c.value)) {
          const before = existing.credentials.find((x) => x.name === c.known);
          if (!before) continue;
          if (before.hosts.join(' ') !== c.hosts.join(' ')) rebind[c.known] = c.hosts;
          if ((before.inject || []).join(' ') !== c.inject.join(' ')) reinject[c.known] = c.inject;
          if ((before.rules || []).join('\n') !== c.rules.join('\n')) rerule[c.known] = c.rules;
        }
        if (Object.keys(rebind).length) body.env_var_hosts = rebind;
        if (Object.keys(reinject).length) body.env_var_inject = reinject;
        if (Object.keys(rerule).length) body.env_var_rules = rerule;
        const kept = new Set(creds.map((c) => c.known).filter(Boolean));
        body.remove_credentials = existing.credentials.map((c) => c.name).filter((n) => !kept.has(n));
        saved = await api('PATCH', `${PREFIX}/agents/${existing.id}`, body);
        toast(`saved ${saved.name}`);
      }
      navigate(`/agents/${encodeURIComponent(saved.name)}`, true);
    } catch (err) {
      error.textContent = String(err);
    }
  };

  const sessions = h('tbody');
  const form = h(
    'form',
    { class: 'card', id: 'agent-form', onsubmit: save },
    h('div', { class: 'grid2' }, h('div', {}, field('Name', f.name, 'lowercase letters, digits, dashes')), h('div', {}, field('Harness', f.harness), harnessHint)),
    h('div', { class: 'grid2' }, h('div', {}, field('Repository', f.repo, 'cloned at bring-up')), h('div', {}, field('Branch', f.branch))),
    h('div', { class: 'grid2' }, h('div', {}, field('Model', f.model)), h('div', {}, field('Command', f.command, 'optional'))),
    field('Prompt', f.prompt),
    h('label', {}, 'Environment', h('span', { class: 'muted' }, ' — plain, non-secret variables')),
    envRows,
    h('button', { type: 'button', onclick: () => envRow() }, 'Add variable'),
    h(
      'label',
      {},
      'Credentials',
      h(
        'span',
        { class: 'muted' },
        ' — the sandbox sees a stub; the vault swaps in the real value only toward the bound hosts, only at its injection points (authorization, header:NAME, query:NAME, body) and only in requests its rules allow',
      ),
    ),
    credRows,
    h('div', { class: 'row' }, h('button', { type: 'button', onclick: () => credRow() }, 'Add credential'), presetSelect),
    h('div', { class: 'grid2' }, h('div', {}, field('Allowed egress', f.allow, 'empty allows any public host')), h('div', {}, field('Denied egress', f.deny, 'wins over allowed'))),
    h('div', { class: 'grid2' }, h('div', {}, field('Memory (MiB)', f.memory)), h('div', {}, field('Processes', f.pids))),
    h('div', { class: 'grid2' }, h('div', {}, field('CPUs', f.cpus)), h('div')),
    error,
    h('div', { class: 'row', style: 'margin-top:1rem' }, h('button', { type: 'submit', class: 'primary', id: 'agent-save' }, name ? 'Save' : 'Create agent'), link('/agents', 'Cancel')),
  );
  const title = h('h1', {}, name ? `Agent ${name}` : 'New agent');
  const actions = h('div', { class: 'row' });
  clear(main, h('div', { class: 'row spread' }, title, actions), form);

  if (!name) {
    f.harness.value = harnesses.some((x) => x.id === 'shell') ? 'shell' : harnesses[0]?.id || '';
    showHarness();
    return () => {};
  }
  (async () => {
    try {
      existing = await api('GET', `${PREFIX}/agents/${encodeURIComponent(name)}`);
    } catch (err) {
      clear(main, h('h1', {}, 'Agent'), h('p', { class: 'error' }, String(err)));
      return;
    }
    const a = existing;
    f.name.value = a.name;
    f.harness.value = a.harness_id;
    showHarness();
    f.command.value = a.command || '';
    f.repo.value = a.repo_url || '';
    f.branch.value = a.branch || '';
    f.model.value = a.model || '';
    f.prompt.value = a.prompt || '';
    f.allow.value = a.allow_out.join('\n');
    f.deny.value = a.deny_out.join('\n');
    f.memory.value = a.limits?.memory_mb ?? '';
    f.pids.value = a.limits?.pids ?? '';
    f.cpus.value = a.limits?.cpus ?? '';
    for (const [k, v] of Object.entries(a.env)) envRow(k, v);
    for (const c of a.credentials) credRow(c, true);
    clear(
      actions,
      h('button', { class: 'primary', id: 'start-session', onclick: () => startSession(a.id).catch((e) => (error.textContent = String(e))) }, 'Start session'),
      h(
        'button',
        {
          class: 'danger',
          onclick: async () => {
            if (!(await confirmAction(`Delete agent ${a.name}? Its live sessions are stopped and its sessions removed.`))) return;
            await api('DELETE', `${PREFIX}/agents/${a.id}`);
            toast(`deleted ${a.name}`);
            navigate('/agents', true);
          },
        },
        'Delete',
      ),
    );
    main.appendChild(h('h2', {}, 'Sessions'));
    main.appendChild(h('table', {}, h('thead', {}, h('tr', {}, ['Session', 'Status', 'Phase', 'Created'].map((t) => h('th', {}, t)))), sessions));
    const list = await api('GET', `${PREFIX}/sessions?agent_id=${a.id}&limit=20`);
    clear(
      sessions,
      list.length === 0
        ? h('tr', {}, h('td', { colspan: 4, class: 'muted' }, 'no sessions yet'))
        : list.map((s) =>
            h('tr', {}, h('td', { class: 'mono' }, link(`/sessions/${s.id}`, s.id.slice(0, 8))), h('td', {}, badge(s.status)), h('td', {}, s.phase || ''), h('td', { class: 'muted' }, ago(s.created_at))),
          ),
    );
  })();
  return () => {};
}
