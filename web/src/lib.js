// What every page shares: the API client (cookie session, CSRF header), DOM building without
// innerHTML (all text is inserted as text), navigation and small helpers.

export const PREFIX = '/api/v1/managed_agents';

export class ApiError extends Error {
  constructor(status, error, hint) {
    super(error);
    this.status = status;
    this.hint = hint;
  }
  toString() {
    return this.hint ? `${this.message} (hint: ${this.hint})` : this.message;
  }
}

let onUnauthorized = () => {};
export function setUnauthorizedHandler(fn) {
  onUnauthorized = fn;
}

// A request with the session cookie. `x-lap-ui` is the header the server wants on every
// cookie-authenticated request that changes something (its CSRF rule); it is sent on all.
export async function api(method, path, body, extraHeaders = {}) {
  const headers = { accept: 'application/json', 'x-lap-ui': '1', ...extraHeaders };
  const init = { method, headers, credentials: 'same-origin' };
  if (body !== undefined) {
    headers['content-type'] = 'application/json';
    init.body = JSON.stringify(body);
  }
  const res = await fetch(path, init);
  if (res.status === 401 && !extraHeaders.authorization) {
    onUnauthorized();
  }
  if (!res.ok) {
    let detail = { error: `${res.status} ${res.statusText}` };
    try {
      detail = await res.json();
    } catch {
      // not JSON: keep the status line
    }
    throw new ApiError(res.status, detail.error || res.statusText, detail.hint);
  }
  if (res.status === 204) return null;
  const type = res.headers.get('content-type') || '';
  return type.includes('json') ? res.json() : res.text();
}

// h('div', {class: 'x', onclick: fn}, 'text', child, [more]) — text is always a text node.
export function h(tag, attrs = {}, ...children) {
  const el = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs || {})) {
    if (value === undefined || value === null || value === false) continue;
    if (key.startsWith('on') && typeof value === 'function') {
      el.addEventListener(key.slice(2), value);
    } else if (key === 'value') {
      el.value = value;
    } else if (key === 'checked') {
      el.checked = Boolean(value);
    } else {
      el.setAttribute(key, value === true ? '' : String(value));
    }
  }
  append(el, children);
  return el;
}

function append(el, children) {
  for (const child of children) {
    if (child === undefined || child === null || child === false) continue;
    if (Array.isArray(child)) append(el, child);
    else if (child instanceof Node) el.appendChild(child);
    else el.appendChild(document.createTextNode(String(child)));
  }
}

export function clear(el, ...children) {
  el.replaceChildren();
  append(el, children);
  return el;
}

let navigateFn = () => {};
export function setNavigate(fn) {
  navigateFn = fn;
}
export function navigate(path, replace = false) {
  navigateFn(path, replace);
}

export function link(path, ...children) {
  return h('a', { href: path, 'data-link': true }, ...children);
}

export function toast(text) {
  const el = document.getElementById('toast');
  el.textContent = text;
  el.hidden = false;
  clearTimeout(toast.timer);
  toast.timer = setTimeout(() => (el.hidden = true), 2500);
}

// Asks before a destructive action; resolves to true when the person confirmed.
export function confirmAction(text, ok = 'Delete') {
  const dialog = document.getElementById('confirm');
  document.getElementById('confirm-text').textContent = text;
  document.getElementById('confirm-ok').textContent = ok;
  return new Promise((resolve) => {
    dialog.addEventListener('close', () => resolve(dialog.returnValue === 'ok'), { once: true });
    dialog.returnValue = '';
    dialog.showModal();
  });
}

export function badge(status) {
  return h('span', { class: `badge ${status}`, 'data-status': status }, status);
}

export function ago(iso) {
  if (!iso) return '';
  const s = Math.max(0, Math.round((Date.now() - Date.parse(iso)) / 1000));
  if (s < 60) return `${s}s ago`;
  if (s < 3600) return `${Math.floor(s / 60)}m ago`;
  if (s < 86400) return `${Math.floor(s / 3600)}h ago`;
  return `${Math.floor(s / 86400)}d ago`;
}

// Runs `fn` now and every `ms` until the returned stop function is called; never overlaps.
export function every(ms, fn) {
  let stopped = false;
  let timer;
  const tick = async () => {
    try {
      await fn();
    } catch (err) {
      console.warn(err);
    }
    if (!stopped) timer = setTimeout(tick, ms);
  };
  tick();
  return () => {
    stopped = true;
    clearTimeout(timer);
  };
}

export async function copyText(text) {
  try {
    await navigator.clipboard.writeText(text);
  } catch {
    const area = h('textarea', { value: text });
    document.body.appendChild(area);
    area.select();
    document.execCommand('copy');
    area.remove();
  }
  toast('copied');
}

export function lines(text) {
  return text
    .split(/[\s,]+/)
    .map((s) => s.trim())
    .filter(Boolean);
}
