// The single page: routes paths to pages, keeps the signed-in state, and tears a page down
// (its polling, its terminal) before the next one is drawn.

import { api, clear, h, setNavigate, setUnauthorizedHandler, ApiError } from './lib.js';
import { agentsPage, agentFormPage } from './agents.js';
import { sessionsPage } from './sessions.js';
import { sessionPage } from './session.js';
import { auditPage } from './audit.js';

const main = document.getElementById('main');
const nav = document.getElementById('nav');
let teardown = null;
let config = null;

const routes = [
  [/^\/sign-in$/, () => signInPage()],
  [/^\/$/, () => redirect('/agents')],
  [/^\/agents$/, () => agentsPage(main, ctx())],
  [/^\/agents\/new$/, () => agentFormPage(main, ctx(), null)],
  [/^\/agents\/([^/]+)$/, (m) => agentFormPage(main, ctx(), decodeURIComponent(m[1]))],
  [/^\/sessions$/, () => sessionsPage(main, ctx())],
  [/^\/sessions\/([0-9a-f-]{36})$/, (m) => sessionPage(main, ctx(), m[1])],
  [/^\/audit$/, () => auditPage(main)],
];

function ctx() {
  return { config };
}

function redirect(path) {
  go(path, true);
}

async function render() {
  if (teardown) {
    try {
      teardown();
    } catch (err) {
      console.warn(err);
    }
    teardown = null;
  }
  const path = location.pathname;
  if (path !== '/sign-in' && !config) {
    try {
      config = await api('GET', '/api/ui/config');
    } catch (err) {
      if (err instanceof ApiError && err.status === 401) return;
      clear(main, h('p', { class: 'error' }, `cannot reach lap serve: ${err}`));
      return;
    }
  }
  nav.hidden = path === '/sign-in';
  if (config) {
    document.getElementById('whoami').textContent = `${config.signed_in_as} (${config.role})`;
    document.getElementById('nav-audit').hidden = config.role !== 'admin';
  }
  for (const [pattern, page] of routes) {
    const m = path.match(pattern);
    if (m) {
      const result = page(m);
      teardown = typeof result === 'function' ? result : null;
      return;
    }
  }
  clear(main, h('h1', {}, 'Not found'), h('p', {}, `no page at ${path}`));
}

function go(path, replace = false) {
  if (replace) history.replaceState({}, '', path);
  else history.pushState({}, '', path);
  render();
}

function signInPage() {
  const next = new URLSearchParams(location.search).get('next') || '/agents';
  const safeNext = /^\/(?![/\\])/.test(next) ? next : '/agents';
  const key = h('input', {
    type: 'password',
    id: 'master-key',
    name: 'master-key',
    autocomplete: 'current-password',
    required: true,
    autofocus: true,
  });
  const error = h('p', { class: 'error', id: 'sign-in-error' });
  // Shown when the server has an OpenID provider: a plain navigation to it and back.
  const sso = h(
    'p',
    { id: 'sso', hidden: true },
    h('a', { class: 'button primary', id: 'sso-link', href: `/auth/oidc/login?next=${encodeURIComponent(safeNext)}` }, 'Sign in with single sign-on'),
  );
  api('GET', '/api/ui/auth/methods')
    .then((methods) => {
      sso.hidden = !methods.oidc;
    })
    .catch(() => {});
  const form = h(
    'form',
    {
      class: 'card sign-in',
      onsubmit: async (event) => {
        event.preventDefault();
        error.textContent = '';
        try {
          // The key goes out once, as a bearer; what comes back is an HttpOnly cookie of a
          // server-side session. The key itself is kept nowhere in the browser.
          await api('POST', '/api/ui/auth/cookie', undefined, { authorization: `Bearer ${key.value}` });
          key.value = '';
          config = null;
          go(safeNext, true);
        } catch (err) {
          key.value = '';
          error.textContent =
            err.status === 401
              ? `that is not the master key of this server, nor an API key it lets in${err.hint ? ` (${err.hint})` : ''}`
              : String(err);
        }
      },
    },
    h('h1', {}, 'Sign in to lap'),
    sso,
    h('label', { for: 'master-key' }, 'Master key or API key'),
    key,
    h(
      'p',
      { class: 'muted' },
      'lap serve prints where it keeps the master key (master.key in its data directory); an admin makes API keys with lap keys create.',
    ),
    error,
    h('button', { type: 'submit', class: 'primary' }, 'Sign in'),
  );
  clear(main, form);
}

setNavigate(go);
setUnauthorizedHandler(() => {
  config = null;
  if (location.pathname !== '/sign-in') {
    const next = encodeURIComponent(location.pathname + location.search);
    go(`/sign-in?next=${next}`, true);
  }
});

document.addEventListener('click', (event) => {
  const a = event.target.closest('a[data-link]');
  if (!a || event.metaKey || event.ctrlKey || event.shiftKey || event.button !== 0) return;
  event.preventDefault();
  go(a.getAttribute('href'));
});
window.addEventListener('popstate', render);
document.getElementById('sign-out').addEventListener('click', async () => {
  try {
    await api('DELETE', '/api/ui/auth/cookie');
  } finally {
    config = null;
    go('/sign-in', true);
  }
});

render();
