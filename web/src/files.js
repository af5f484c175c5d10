// The session page's file browser: a directory of the sandbox (/work and /tmp only), its entries
// with size, mode and time; directories open, files download (a directory as a .tar), and files
// upload into the directory shown. Everything goes through the REST routes under
// …/sessions/{id}/files with the page's cookie; downloads are attachments the browser saves, never
// pages it renders (a sandbox's content is hostile).

import { PREFIX, ApiError, api, clear, h, toast, confirmAction } from './lib.js';

/// Where the browser starts.
const START = '/work';

function sizeText(n) {
  const units = ['B', 'KiB', 'MiB', 'GiB', 'TiB'];
  let value = n;
  let unit = 0;
  while (value >= 1024 && unit < units.length - 1) {
    value /= 1024;
    unit += 1;
  }
  return unit === 0 ? `${n} B` : `${value.toFixed(1)} ${units[unit]}`;
}

function parent(path) {
  const cut = path.replace(/\/+$/, '').lastIndexOf('/');
  return cut <= 0 ? '/' : path.slice(0, cut);
}

function join(dir, name) {
  return `${dir.replace(/\/+$/, '')}/${name}`;
}

export function filesPanel(id) {
  const base = `${PREFIX}/sessions/${id}/files`;
  const contentUrl = (path, archive) =>
    `${base}/content?path=${encodeURIComponent(path)}${archive ? '&archive=true' : ''}`;
  let current = START;
  const pathInput = h('input', { id: 'files-path', value: START, style: 'flex:1', 'aria-label': 'directory' });
  const error = h('p', { class: 'error', id: 'files-error', hidden: true });
  const body = h('tbody');
  const picker = h('input', { type: 'file', id: 'files-upload', multiple: true });
  const uploadButton = h('button', { type: 'button', id: 'files-upload-button' }, 'Upload');

  const fail = (err) => {
    error.hidden = false;
    error.textContent = String(err);
  };

  async function show(path) {
    error.hidden = true;
    let listing;
    try {
      listing = await api('GET', `${base}?path=${encodeURIComponent(path)}`);
    } catch (err) {
      fail(err);
      return;
    }
    if (listing.entry.type !== 'directory') {
      // A file: show its directory instead.
      return show(parent(listing.path));
    }
    current = listing.path;
    pathInput.value = current;
    const rows = listing.entries.map((e) => {
      const isDir = e.type === 'directory';
      const name = isDir
        ? h('button', { type: 'button', class: 'link', onclick: () => show(e.path) }, `${e.name}/`)
        : h('span', {}, e.type === 'symlink' ? `${e.name} → ${e.target || ''}` : e.name);
      const download = e.type === 'file' || isDir
        ? h(
            'a',
            { href: contentUrl(e.path, isDir), download: isDir ? `${e.name}.tar` : e.name, 'data-download': e.name },
            isDir ? 'Download .tar' : 'Download',
          )
        : '';
      const remove = h(
        'button',
        {
          type: 'button',
          class: 'link danger',
          onclick: async () => {
            if (!(await confirmAction(`Delete ${e.path}${isDir ? ' and everything in it' : ''}?`, 'Delete'))) return;
            try {
              await api('DELETE', `${base}?path=${encodeURIComponent(e.path)}${isDir ? '&recursive=true' : ''}`);
              toast(`deleted ${e.name}`);
              show(current);
            } catch (err) {
              fail(err);
            }
          },
        },
        'Delete',
      );
      return h(
        'tr',
        { 'data-file': e.name, 'data-type': e.type },
        h('td', { class: 'mono' }, name),
        h('td', {}, isDir ? '' : sizeText(e.size)),
        h('td', { class: 'mono' }, e.mode),
        h('td', { class: 'muted' }, new Date(e.modified).toLocaleString()),
        h('td', {}, download, ' ', remove),
      );
    });
    if (!rows.length) rows.push(h('tr', { class: 'empty' }, h('td', { colspan: 5, class: 'muted' }, 'empty directory')));
    if (listing.truncated) {
      rows.push(h('tr', {}, h('td', { colspan: 5, class: 'muted' }, `${listing.truncated} more entries not shown`)));
    }
    clear(body, rows);
  }

  async function upload() {
    const files = [...picker.files];
    if (!files.length) {
      toast('choose a file first');
      return;
    }
    uploadButton.disabled = true;
    try {
      for (const file of files) {
        const res = await fetch(contentUrl(join(current, file.name), false), {
          method: 'PUT',
          credentials: 'same-origin',
          headers: { 'content-type': 'application/octet-stream', 'x-lap-ui': '1' },
          body: file,
        });
        if (!res.ok) {
          const detail = await res.json().catch(() => ({ error: `${res.status} ${res.statusText}` }));
          throw new ApiError(res.status, detail.error, detail.hint);
        }
        toast(`uploaded ${file.name}`);
      }
      picker.value = '';
      await show(current);
    } catch (err) {
      fail(err);
    } finally {
      uploadButton.disabled = false;
    }
  }
  uploadButton.addEventListener('click', upload);

  const panel = h(
    'section',
    { id: 'files', style: 'margin-top:1rem' },
    h('h2', {}, 'Files ', h('span', { class: 'muted' }, '— /work and /tmp, as the sandbox user')),
    h(
      'form',
      {
        class: 'row',
        onsubmit: (event) => {
          event.preventDefault();
          show(pathInput.value.trim() || START);
        },
      },
      h('button', { type: 'button', id: 'files-up', onclick: () => show(parent(current)) }, 'Up'),
      pathInput,
      h('button', { type: 'submit', id: 'files-go' }, 'Open'),
    ),
    error,
    h(
      'div',
      { class: 'card', style: 'padding:0;max-height:40vh;overflow:auto;margin:.5rem 0' },
      h(
        'table',
        { id: 'files-table' },
        h('thead', {}, h('tr', {}, ['Name', 'Size', 'Mode', 'Modified', ''].map((t) => h('th', {}, t)))),
        body,
      ),
    ),
    h('div', { class: 'row' }, h('strong', {}, 'Upload here'), picker, uploadButton),
  );
  return { panel, show: () => show(current) };
}
