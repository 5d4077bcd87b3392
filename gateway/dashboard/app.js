// The dashboard: one page, no build step, no network beyond this gateway's own API.
//
// The API key lives in sessionStorage (this tab only) and travels as an Authorization header, never in
// a URL: live views therefore read server-sent events with fetch rather than EventSource, which cannot
// send headers, and downloads are fetched and handed to the browser as a blob. Everything shown comes
// from the API, which answers only what the key may see; text from it is set as text, never as HTML.
'use strict';

const API = '/api/v1';
const KEY_ITEM = 'artifacts.key';
const DOCKERFILES_ITEM = 'artifacts.dockerfiles'; // the Dockerfiles this tab submitted, by build id, for Rebuild
const PAGE_SIZE = 50;
const FINISHED = ['succeeded', 'failed', 'cancelled'];

let me = null; // the whoami answer of the signed-in key
let leaving = new AbortController(); // aborted when the view changes: ends its streams

// ---- small DOM helpers ----------------------------------------------------------------------------

function h(tag, attrs, ...children) {
  const element = document.createElement(tag);
  for (const [name, value] of Object.entries(attrs || {})) {
    if (value === false || value === null || value === undefined) continue;
    if (name.startsWith('on')) element.addEventListener(name.slice(2), value);
    else element.setAttribute(name, value === true ? '' : value);
  }
  for (const child of children.flat(Infinity)) {
    if (child === null || child === undefined || child === false) continue;
    element.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return element;
}

const $ = (selector) => document.querySelector(selector);

function when(timestamp) {
  if (!timestamp) return '';
  const date = new Date(timestamp);
  return Number.isNaN(date.getTime()) ? timestamp : date.toLocaleString();
}

function bytes(size) {
  if (size === null || size === undefined) return '';
  const units = ['B', 'KiB', 'MiB', 'GiB', 'TiB'];
  let value = size;
  let unit = 0;
  while (value >= 1024 && unit < units.length - 1) { value /= 1024; unit += 1; }
  return `${unit ? value.toFixed(1) : value} ${units[unit]}`;
}

const shortArch = (architecture) => architecture.replace(/^linux\//, '').replace('/', '-');
const shortDigest = (digest) => (digest || '').replace(/^sha256:/, '').slice(0, 12);

// Build ids begin with their time (UUIDv7), so ids made close together share a long prefix: shown by
// their last 8 hex digits instead, marked by a leading ellipsis, the full id in the tooltip and links.
const idTail = (buildId) => `…${buildId.slice(-8)}`;

function buildLink(buildId, hash = `#/builds/${buildId}`) {
  return h('a', { href: hash, class: 'build-id', title: buildId }, idTail(buildId));
}

function statusBadge(status) {
  return h('span', { class: `status status-${status}` }, status);
}

function say(message) {
  const live = $('#announce');
  live.textContent = '';
  window.setTimeout(() => { live.textContent = message; }, 50);
}

function copyButton(text, what) {
  return h('button', {
    type: 'button',
    class: 'copy',
    'aria-label': `Copy ${what}`,
    onclick: async () => {
      try {
        await navigator.clipboard.writeText(text);
      } catch {
        const area = h('textarea', { class: 'offscreen', 'aria-hidden': 'true' }, text);
        document.body.append(area);
        area.select();
        document.execCommand('copy');
        area.remove();
      }
      say(`${what} copied`);
    },
  }, 'Copy');
}

// Each cell is labelled with its column's name, which narrow screens show beside it (a card per row).
function labelled(row, headings) {
  [...row.children].forEach((cell, index) => cell.setAttribute('data-label', headings[index] || ''));
  return row;
}

function table(caption, headings, rows, empty) {
  if (!rows.length) return h('p', { class: 'empty' }, empty);
  rows.forEach((row) => labelled(row, headings));
  return h('div', { class: 'scroll', role: 'region', 'aria-label': caption, tabindex: '0' },
    h('table', {},
      h('caption', {}, caption),
      h('thead', {}, h('tr', {}, headings.map((heading) => h('th', { scope: 'col' }, heading)))),
      h('tbody', {}, rows)));
}

// ---- the API ----------------------------------------------------------------------------------------

class ApiError extends Error {
  constructor(status, message) { super(message); this.status = status; }
}

// A read answered 503 (a JetStream hiccup, a process restarting) is tried again a few times, shortly, before
// the page shows the error.
const RETRIES_MS = [150, 400, 1000, 2000];

async function api(path, options = {}) {
  for (let attempt = 0; ; attempt += 1) {
    try {
      return await apiOnce(path, options);
    } catch (error) {
      const read = !options.method || options.method === 'GET';
      if (!read || error.status !== 503 || attempt >= RETRIES_MS.length || options.signal?.aborted) throw error;
      await new Promise((resolve) => { window.setTimeout(resolve, RETRIES_MS[attempt]); });
    }
  }
}

async function apiOnce(path, options) {
  const headers = { Authorization: `Bearer ${sessionStorage.getItem(KEY_ITEM) || ''}`, ...options.headers };
  if (options.json !== undefined) headers['Content-Type'] = 'application/json';
  const response = await fetch(API + path, {
    method: options.method || 'GET',
    headers,
    body: options.json !== undefined ? JSON.stringify(options.json) : undefined,
    signal: options.signal,
  });
  if (options.raw && !(response.status === 503 && !options.method)) return response;
  const body = await response.json().catch(() => ({}));
  if (response.status === 401) { signOut('Your key was refused (revoked or expired?): sign in again.'); }
  if (!response.ok && !(options.accept || []).includes(response.status)) {
    throw new ApiError(response.status, body.errorMessage || `${response.status} ${response.statusText}`);
  }
  return body;
}

function query(params) {
  const search = new URLSearchParams();
  for (const [name, value] of Object.entries(params)) if (value) search.set(name, value);
  const text = search.toString();
  return text ? `?${text}` : '';
}

// Server-sent events read with fetch (so the key goes in a header): calls onOpen once the stream is
// open (what happens from then on arrives), then onEvent(type, data) per event until the stream ends or
// the view changes.
async function events(path, onEvent, signal, onOpen) {
  const response = await api(path, { raw: true, signal, headers: { Accept: 'text/event-stream' } });
  if (!response.ok) {
    const body = await response.json().catch(() => ({}));
    throw new ApiError(response.status, body.errorMessage || response.statusText);
  }
  if (onOpen) onOpen();
  const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
  let buffer = '';
  for (;;) {
    const { value, done } = await reader.read();
    if (done) return;
    buffer += value;
    let end;
    while ((end = buffer.indexOf('\n\n')) >= 0) {
      const block = buffer.slice(0, end);
      buffer = buffer.slice(end + 2);
      let type = 'message';
      const data = [];
      for (const line of block.split('\n')) {
        if (line.startsWith('event:')) type = line.slice(6).trim();
        else if (line.startsWith('data:')) data.push(line.slice(5).replace(/^ /, ''));
      }
      if (data.length) onEvent(type, data.join('\n'));
    }
  }
}

// ---- signing in ---------------------------------------------------------------------------------------

async function signIn(key) {
  sessionStorage.setItem(KEY_ITEM, key);
  try {
    me = await api('/whoami');
  } catch (error) {
    sessionStorage.removeItem(KEY_ITEM);
    me = null;
    throw error;
  }
}

function signOut(message) {
  sessionStorage.removeItem(KEY_ITEM);
  sessionStorage.removeItem(DOCKERFILES_ITEM);
  me = null;
  leaving.abort();
  $('#sign-in-error').textContent = message || '';
  render();
}

// ---- views --------------------------------------------------------------------------------------------

function page(title, ...content) {
  const view = $('#view');
  view.replaceChildren(h('h1', { tabindex: '-1' }, title), ...content.filter(Boolean));
  document.title = `${title} · artifact storage`;
  view.querySelector('h1').focus();
}

function failure(error) {
  return h('p', { class: 'error', role: 'alert' }, error.message);
}

const BUILD_HEADINGS = ['Build', 'Component', 'Kind', 'Branch or tag', 'Architecture', 'Status', 'Created'];

function buildRow(record) {
  const request = record.request || {};
  const target = record.kind === 'image' ? request.branch : request.tag;
  return labelled(h('tr', { 'data-build': record.buildId },
    h('td', {}, buildLink(record.buildId)),
    h('td', {}, request.component || ''),
    h('td', {}, record.kind),
    h('td', {}, target || ''),
    h('td', {}, request.architecture || ''),
    h('td', {}, statusBadge(record.status)),
    h('td', {}, when(record.createdAt))), BUILD_HEADINGS);
}

function matches(record, filters) {
  return (!filters.component || record.request?.component === filters.component)
    && (!filters.kind || record.kind === filters.kind)
    && (!filters.status || record.status === filters.status);
}

function filterForm(filters, fields, onChange) {
  const form = h('form', { class: 'filters', role: 'search', 'aria-label': 'Filters' });
  for (const field of fields) {
    const id = `filter-${field.name}`;
    const control = field.options
      ? h('select', { id, name: field.name },
        h('option', { value: '' }, 'any'),
        field.options.map((option) => h('option', { value: option, selected: filters[field.name] === option }, option)))
      : h('input', { id, name: field.name, value: filters[field.name] || '', placeholder: 'any', spellcheck: 'false' });
    form.append(h('div', {}, h('label', { for: id }, field.label), control));
  }
  form.append(h('button', { type: 'submit' }, 'Filter'));
  form.addEventListener('submit', (event) => {
    event.preventDefault();
    const chosen = Object.fromEntries(new FormData(form).entries());
    onChange(chosen);
  });
  form.addEventListener('change', (event) => {
    if (event.target.tagName === 'SELECT') form.requestSubmit();
  });
  return form;
}

async function buildsView(params, signal) {
  const filters = { component: params.get('component'), kind: params.get('kind'), status: params.get('status') };
  const cursors = [null]; // the cursor of each page shown so far; the last is this page's
  const body = h('tbody', {});
  const pager = h('div', { class: 'pager' });
  const problem = h('div', {});
  const live = h('p', { class: 'live' }, 'Connecting to live updates…');
  page('Builds',
    filterForm(filters, [
      { name: 'component', label: 'Component' },
      { name: 'kind', label: 'Kind', options: ['image', 'component'] },
      { name: 'status', label: 'Status', options: ['queued', 'running', 'succeeded', 'failed', 'cancelled'] },
    ], (chosen) => { location.hash = `#/builds${query(chosen)}`; }),
    live, problem,
    h('div', { class: 'scroll', role: 'region', 'aria-label': 'Builds', tabindex: '0' },
      h('table', {},
        h('caption', {}, 'Builds, newest first (ids by their last 8 digits)'),
        h('thead', {}, h('tr', {}, BUILD_HEADINGS.map((heading) => h('th', { scope: 'col' }, heading)))),
        body)),
    pager);

  async function show(cursor) {
    try {
      const list = await api(`/builds${query({ ...filters, limit: PAGE_SIZE, cursor })}`, { signal });
      body.replaceChildren(...list.builds.map(buildRow));
      if (!list.builds.length) body.append(h('tr', {}, h('td', { colspan: '7', class: 'empty' }, 'No builds match.')));
      const newer = cursors.length > 1
        ? h('button', { type: 'button', onclick: () => { cursors.pop(); show(cursors[cursors.length - 1]); } }, 'Newer')
        : null;
      const older = list.nextCursor
        ? h('button', { type: 'button', onclick: () => { cursors.push(list.nextCursor); show(list.nextCursor); } }, 'Older')
        : null;
      pager.replaceChildren(...[newer, older].filter(Boolean),
        h('span', {}, `Page ${cursors.length}`));
      problem.replaceChildren();
    } catch (error) {
      if (!signal.aborted) problem.replaceChildren(failure(error));
    }
  }
  await show(null);

  const follow = async () => {
    const stream = `/builds/events${query({ component: filters.component, kind: filters.kind })}`;
    while (!signal.aborted) {
      try {
        await events(stream, (type, data) => {
          if (type !== 'build') return;
          const record = JSON.parse(data);
          const row = body.querySelector(`tr[data-build="${CSS.escape(record.buildId)}"]`);
          if (row) {
            if (matches(record, filters)) row.replaceWith(buildRow(record));
            else row.remove();
          } else if (cursors.length === 1 && matches(record, filters)) {
            body.querySelector('td.empty')?.parentElement.remove();
            body.prepend(buildRow(record));
            while (body.children.length > PAGE_SIZE) body.lastElementChild.remove();
          }
        }, signal, () => { live.textContent = 'Live: new builds and changes appear as they happen.'; });
      } catch (error) {
        if (signal.aborted) return;
        live.textContent = `Live updates paused (${error.message}); retrying…`;
      }
      await new Promise((resolve) => { window.setTimeout(resolve, 2000); });
    }
  };
  follow();
}

function recordList(entries) {
  return h('dl', { class: 'record' }, entries.filter(([, value]) => value !== null && value !== undefined && value !== '')
    .map(([name, value]) => [h('dt', {}, name), h('dd', {}, value)]));
}

// A failed build's errorMessage is its reason, then `last log lines:` and the log's tail, which the page
// shows in the log itself: the reason alone (its first line if it is long).
function failureReason(message) {
  const reason = message.split(/\n\s*last log lines:/)[0].trim();
  const lines = reason.split('\n');
  return lines.length > 3 ? lines[0] : reason;
}

// The log line that says why a build failed, among those before the worker's own `failed: …` summary:
// the first `ERROR` line whose message the reason repeats (BuildKit's failing step, not a cache miss),
// else the last `ERROR` line, else the last naming an error or an exit code, else the last line.
function failingLine(nodes, reason) {
  const all = Array.from(nodes);
  const summary = all.findIndex((line) => line.textContent.startsWith('failed: '));
  const lines = summary > 0 ? all.slice(0, summary) : all;
  const text = (line) => line.textContent.trim();
  const errors = lines.filter((line) => /\bERROR\b/.test(text(line)));
  return errors.find((line) => reason.includes(text(line).replace(/^.*?\bERROR:?\s*/, '')))
    || errors[errors.length - 1]
    || lines.slice().reverse().find((line) => /error|exit code|failed/i.test(text(line)))
    || lines[lines.length - 1];
}

const remembered = () => JSON.parse(sessionStorage.getItem(DOCKERFILES_ITEM) || '{}');

function remember(buildId, dockerfile) {
  const known = Object.entries(remembered()).slice(-19);
  known.push([buildId, dockerfile]);
  sessionStorage.setItem(DOCKERFILES_ITEM, JSON.stringify(Object.fromEntries(known)));
}

// Starts a build (POST /images or /components) and goes to its page.
async function submitBuild(kind, request) {
  const answer = await api(kind === 'image' ? '/images' : '/components', { method: 'POST', json: request });
  if (kind === 'image') remember(answer.buildId, request.dockerfile);
  say(answer.status === 'succeeded' ? 'Built before: showing that build' : 'Build started');
  location.hash = `#/builds/${answer.buildId}`;
  return answer;
}

// Rebuild: the record's request again, forced. An image's record keeps only its Dockerfile's digest, so
// the Dockerfile comes from this tab when it submitted the build; otherwise (or with an uploaded context)
// the form opens filled in.
async function rebuild(record) {
  const request = record.request || {};
  if (record.kind === 'component') {
    return submitBuild('component', {
      url: request.url, component: request.component, tag: request.tag, architecture: request.architecture, force: true,
    });
  }
  const dockerfile = remembered()[record.buildId];
  if (dockerfile === undefined || request.contextDigest) {
    location.hash = `#/new${query({
      kind: 'image', component: request.component, branch: request.branch, architecture: request.architecture,
      target: request.target, from: record.buildId,
    })}`;
    return null;
  }
  const again = {
    dockerfile, component: request.component, branch: request.branch, architecture: request.architecture, force: true,
  };
  if (request.buildArgs && Object.keys(request.buildArgs).length) again.buildArgs = request.buildArgs;
  if (request.target) again.target = request.target;
  return submitBuild('image', again);
}

// ---- provenance -----------------------------------------------------------------------------------------
// The page checks a build's provenance itself, as `artifacts verify` does: the DSSE signature over PAE
// with the service's Ed25519 key (WebCrypto), the subject against the build's artifact and the build id.
// WebCrypto exists only in secure contexts (https, or the gateway on localhost).

function base64Bytes(text) {
  const plain = text.replace(/-/g, '+').replace(/_/g, '/');
  return Uint8Array.from(atob(plain + '='.repeat((4 - (plain.length % 4)) % 4)), (c) => c.charCodeAt(0));
}

function pae(payloadType, payload) {
  const type = new TextEncoder().encode(payloadType);
  const head = new TextEncoder().encode(`DSSEv1 ${type.length} ${payloadType} ${payload.length} `);
  const message = new Uint8Array(head.length + payload.length);
  message.set(head);
  message.set(payload, head.length);
  return message;
}

async function checkProvenance(record, signal) {
  if (!globalThis.crypto?.subtle) {
    return { verified: null, reason: 'this page is not served over https, so the browser offers no signature check: use `artifacts verify`' };
  }
  const [key, envelope] = await Promise.all([
    api('/provenance/key', { signal }),
    api(`/builds/${encodeURIComponent(record.buildId)}/provenance`, { signal }),
  ]);
  const der = base64Bytes(key.publicKeyPem.replace(/-----[A-Z ]+-----/g, '').replace(/\s+/g, ''));
  const publicKey = await crypto.subtle.importKey('spki', der, { name: 'Ed25519' }, false, ['verify']);
  const payload = base64Bytes(envelope.payload);
  const signature = (envelope.signatures || []).find((s) => s.keyid === key.keyid);
  if (!signature) return { verified: false, reason: `no signature by the service's key ${key.keyid.slice(0, 16)}` };
  const valid = await crypto.subtle.verify({ name: 'Ed25519' }, publicKey, base64Bytes(signature.sig), pae(envelope.payloadType, payload));
  if (!valid) return { verified: false, reason: 'the signature does not verify' };
  const statement = JSON.parse(new TextDecoder().decode(payload));
  const digest = (record.result?.digest || '').replace(/^sha256:/, '');
  if (!statement.subject?.some((subject) => subject.digest?.sha256 === digest)) {
    return { verified: false, reason: 'the provenance is about another artifact', statement };
  }
  if (statement.predicate?.runDetails?.metadata?.invocationId !== record.buildId) {
    return { verified: false, reason: 'the provenance is of another build', statement };
  }
  return { verified: true, reason: `signed by ${key.keyid.slice(0, 16)}…, about this artifact`, statement };
}

// A commit as a link to the forge's page of it, when the source is a forge's https URL.
function commitLink(uri, commit) {
  const web = /^https:\/\//.test(uri || '') ? uri.replace(/\.git$/, '') : null;
  return web ? h('a', { href: `${web}/commit/${commit}`, rel: 'noreferrer' }, commit) : h('code', {}, commit);
}

function dependencyLink(dependency, architecture) {
  const digest = dependency.digest?.sha256 ? `sha256:${dependency.digest.sha256.slice(0, 12)}` : '';
  if (dependency.name) {
    const [component, tag] = dependency.name.split('@');
    return h('li', {}, h('a', { href: `#/components/${encodeURIComponent(component)}/${encodeURIComponent(tag)}/${encodeURIComponent(architecture)}` }, dependency.name), ` ${digest}`);
  }
  return h('li', {}, h('code', {}, (dependency.uri || '').replace(/^docker:\/\//, '')), ` ${digest}`);
}

function provenanceSection(record, signal) {
  const section = h('section', { class: 'provenance', 'aria-live': 'polite' }, h('h2', {}, 'Provenance'), h('p', {}, 'Checking the signature…'));
  checkProvenance(record, signal).then(({ verified, reason, statement }) => {
    const badge = verified === true ? h('span', { class: 'status status-succeeded' }, 'verifies')
      : verified === false ? h('span', { class: 'status status-failed' }, 'does not verify') : h('span', { class: 'status status-cancelled' }, 'not checked');
    const resolved = statement?.predicate?.buildDefinition?.resolvedDependencies || [];
    const source = resolved.find((d) => d.digest?.gitCommit);
    const others = resolved.filter((d) => !d.digest?.gitCommit);
    section.replaceChildren(h('h2', {}, 'Provenance'), h('p', { id: 'provenance-status' }, badge, ` ${reason}`),
      ...(source ? [h('p', {}, 'Built from ', h('code', {}, source.uri), ' at ', commitLink(source.uri, source.digest.gitCommit))] : []),
      ...(others.length ? [h('p', {}, 'Used:'), h('ul', {}, ...others.map((d) => dependencyLink(d, record.request?.architecture)))] : []),
      h('p', {}, h('a', { href: `/api/v1/builds/${encodeURIComponent(record.buildId)}/sbom`, onclick: (event) => {
        event.preventDefault();
        api(`/builds/${encodeURIComponent(record.buildId)}/sbom`).then((sbom) => {
          const url = URL.createObjectURL(new Blob([JSON.stringify(sbom, null, 2)], { type: 'application/json' }));
          window.open(url, '_blank', 'noopener');
        }).catch((error) => section.append(failure(error)));
      } }, 'SBOM (SPDX)')));
  }).catch((error) => {
    if (!signal.aborted) section.replaceChildren(h('h2', {}, 'Provenance'), h('p', { id: 'provenance-status' }, h('span', { class: 'status status-failed' }, 'cannot be checked'), ` ${error.message}`));
  });
  return section;
}

async function buildView(buildId, params, signal) {
  let record;
  try {
    record = await api(`/builds/${encodeURIComponent(buildId)}`, { signal });
  } catch (error) {
    page('Build', failure(error));
    return;
  }
  const details = h('div', {});
  const actions = h('div', { class: 'actions' });
  const log = h('pre', { class: 'log', tabindex: '0', 'aria-label': 'Build log' });
  const logState = h('p', { class: 'live', 'aria-live': 'polite' }, 'Reading the log…');
  let logEnded = false;
  let wantFailing = params.get('at') === 'failure';
  const provenance = h('div', {});
  page(`Build ${idTail(buildId)}`, details, actions, provenance,
    h('h2', {}, 'Log'), logState, log);

  // Marks the failing line and moves to it (once the log has been read to its end).
  const showFailing = () => {
    if (!logEnded) { wantFailing = true; return; }
    const lines = log.querySelectorAll('.line');
    if (!lines.length) return;
    const line = failingLine(lines, failureReason(record.errorMessage || ''));
    line.classList.add('failing');
    line.setAttribute('tabindex', '-1');
    line.scrollIntoView({ block: 'center' });
    line.focus({ preventScroll: true });
  };

  const showRecord = (current) => {
    if (current.status === 'succeeded' && !provenance.childElementCount) provenance.append(provenanceSection(current, signal));
    record = current;
    const request = current.request || {};
    const result = current.result || {};
    details.replaceChildren(recordList([
      ['Build id', current.buildId],
      ['Status', statusBadge(current.status)],
      ['Kind', current.kind],
      ['Component', request.component],
      [current.kind === 'image' ? 'Branch' : 'Tag', current.kind === 'image' ? request.branch : request.tag],
      ['Architecture', request.architecture],
      ['Source', request.url],
      ['Commit', request.commit],
      ['Requested by', current.requestedBy?.apiKeyId],
      ['Created', when(current.createdAt)],
      ['Started', when(current.startedAt)],
      ['Finished', when(current.finishedAt)],
      ['Attempts', current.attempts],
      ['Pinned', current.pinned ? 'yes' : null],
      ['Error', current.errorMessage ? h('div', { class: 'failure' },
        h('p', {}, failureReason(current.errorMessage)),
        h('a', {
          href: `#/builds/${buildId}?at=failure`,
          onclick: (event) => {
            event.preventDefault();
            history.replaceState(null, '', `#/builds/${buildId}?at=failure`);
            showFailing();
          },
        }, 'Go to the failing line of the log')) : null],
      ['Image', result.imageName],
      ['Digest', result.digest],
      ['Pull command', result.pullCommand
        ? h('span', { class: 'command' }, h('code', {}, result.pullCommand), copyButton(result.pullCommand, 'pull command'))
        : null],
      ['Size', result.size !== undefined ? bytes(result.size) : null],
    ]));
    const mayBuild = ['build', 'admin'].includes(me.scope);
    const mayCancel = !FINISHED.includes(current.status) && mayBuild;
    const again = FINISHED.includes(current.status) && mayBuild ? h('button', {
      type: 'button',
      id: 'rebuild',
      onclick: async (event) => {
        event.target.disabled = true;
        try {
          await rebuild(current);
        } catch (error) {
          actions.append(failure(error));
          event.target.disabled = false;
        }
      },
    }, 'Rebuild') : null;
    actions.replaceChildren(...(again ? [again] : []), ...(mayCancel ? [h('button', {
      type: 'button',
      class: 'danger',
      onclick: async (event) => {
        event.target.disabled = true;
        try {
          showRecord(await api(`/builds/${encodeURIComponent(buildId)}/cancel`, { method: 'POST', json: {} }));
          say('Build cancelled');
        } catch (error) {
          actions.append(failure(error));
          event.target.disabled = false;
        }
      },
    }, 'Cancel build')] : []));
  };
  showRecord(record);

  // The record follows the build's events; the log follows its own stream, from the first line.
  (async () => {
    while (!signal.aborted && !FINISHED.includes(record.status)) {
      try {
        await events(`/builds/events${query({ component: record.request?.component })}`, (type, data) => {
          const changed = JSON.parse(data);
          if (type === 'build' && changed.buildId === buildId) showRecord(changed);
        }, signal);
      } catch {
        if (signal.aborted) return;
      }
      await new Promise((resolve) => { window.setTimeout(resolve, 2000); });
    }
  })();
  try {
    await events(`/builds/${encodeURIComponent(buildId)}/logs`, (type, data) => {
      if (type === 'end') {
        logState.textContent = `The build ${data}.`;
        logEnded = true;
        if (wantFailing || data === 'failed') {
          const lines = log.querySelectorAll('.line');
          if (lines.length) failingLine(lines, failureReason(record.errorMessage || '')).classList.add('failing');
        }
        if (wantFailing) showFailing();
        api(`/builds/${encodeURIComponent(buildId)}`, { signal }).then(showRecord).catch(() => {});
      } else if (type === 'error') {
        logState.textContent = `The log stopped: ${data}`;
      } else {
        const atBottom = log.scrollTop + log.clientHeight >= log.scrollHeight - 4;
        log.append(h('span', { class: 'line' }, `${data}\n`));
        if (atBottom) log.scrollTop = log.scrollHeight;
        logState.textContent = 'Live: lines appear as the build writes them.';
      }
    }, signal);
  } catch (error) {
    if (!signal.aborted) logState.textContent = `The log cannot be read: ${error.message}`;
  }
}

const ARCHITECTURES = ['amd64', 'arm64', 'arm/v7', '386'];

function field(id, label, control, wide) {
  return h('div', { class: wide ? 'wide' : null }, h('label', { for: id }, label), control);
}

function architectureSelect(id, chosen) {
  return h('select', { id, name: 'architecture' },
    ARCHITECTURES.map((architecture) => h('option', { value: architecture, selected: architecture === chosen }, architecture)));
}

function forceBox(id) {
  return h('div', { class: 'check' }, h('input', { id, name: 'force', type: 'checkbox' }),
    h('label', { for: id }, 'Build again even if built before (force)'));
}

// `#/new`: an image from a Dockerfile (POST /images; a build context needs the client) or a component from
// a git repository (POST /components). `?kind=image&component=…` fills the form in, as Rebuild does.
function newBuildView(params) {
  const said = h('div', { 'aria-live': 'polite' });
  const image = h('form', { id: 'image-form', class: 'build-form', 'aria-labelledby': 'image-title' },
    field('image-component', 'Component', h('input', {
      id: 'image-component', name: 'component', required: true, spellcheck: 'false', value: params.get('component') || '',
    })),
    field('image-branch', 'Branch', h('input', {
      id: 'image-branch', name: 'branch', required: true, spellcheck: 'false', value: params.get('branch') || 'main',
    })),
    field('image-architecture', 'Architecture', architectureSelect('image-architecture', params.get('architecture') || 'amd64')),
    field('image-target', 'Stage (empty: the last)', h('input', {
      id: 'image-target', name: 'target', spellcheck: 'false', value: params.get('target') || '',
    })),
    field('image-dockerfile', 'Dockerfile', h('textarea', {
      id: 'image-dockerfile', name: 'dockerfile', required: true, rows: 8, spellcheck: 'false',
      placeholder: 'FROM busybox\nRUN echo hello > /hello',
    }), true),
    forceBox('image-force'),
    h('div', { class: 'wide' }, h('button', { type: 'submit' }, 'Build image')));
  const component = h('form', { id: 'component-form', class: 'build-form', 'aria-labelledby': 'component-title' },
    field('component-url', 'Git URL', h('input', {
      id: 'component-url', name: 'url', required: true, spellcheck: 'false', placeholder: 'https://github.com/acme/libfoo.git',
    }), true),
    field('component-component', 'Component', h('input', { id: 'component-component', name: 'component', required: true, spellcheck: 'false' })),
    field('component-tag', 'Tag', h('input', { id: 'component-tag', name: 'tag', required: true, spellcheck: 'false', placeholder: 'v1.0.0' })),
    field('component-architecture', 'Architecture', architectureSelect('component-architecture', 'amd64')),
    forceBox('component-force'),
    h('div', { class: 'wide' }, h('button', { type: 'submit' }, 'Build component')));

  const send = (form, kind, request) => async (event) => {
    event.preventDefault();
    const button = form.querySelector('button[type="submit"]');
    button.disabled = true;
    try {
      await submitBuild(kind, request(Object.fromEntries(new FormData(form).entries())));
    } catch (error) {
      said.replaceChildren(failure(error));
      button.disabled = false;
    }
  };
  image.addEventListener('submit', send(image, 'image', (fields) => {
    const request = {
      dockerfile: fields.dockerfile, component: fields.component.trim(), branch: fields.branch.trim(),
      architecture: fields.architecture, force: Boolean(fields.force),
    };
    if (fields.target.trim()) request.target = fields.target.trim();
    return request;
  }));
  component.addEventListener('submit', send(component, 'component', (fields) => ({
    url: fields.url.trim(), component: fields.component.trim(), tag: fields.tag.trim(),
    architecture: fields.architecture, force: Boolean(fields.force),
  })));
  const from = params.get('from');
  if (from) image.querySelector('#image-force').checked = true;
  page('New build', said,
    from ? h('p', { class: 'note' }, 'Rebuilding ', buildLink(from), ': its record keeps only the Dockerfile\'s digest, so paste ',
      'the Dockerfile again (a build with an uploaded context is rebuilt with the client, ', h('code', {}, 'artifacts image build'), ').')
      : null,
    h('h2', { id: 'image-title' }, 'An image, from a Dockerfile'),
    h('p', { class: 'note' }, 'For a build context (files to COPY), use the client: ', h('code', {}, 'artifacts image build'), '.'),
    image,
    h('h2', { id: 'component-title' }, 'A component, from a git repository'),
    component);
  if (from) image.querySelector('#image-dockerfile').focus();
}

async function catalog(path, filters, signal) {
  const items = [];
  let cursor = null;
  do {
    // A catalog is one entry per target; a few pages at most for a dashboard's list.
    const list = await api(`${path}${query({ ...filters, cursor, limit: 500 })}`, { signal });
    items.push(...list.items);
    cursor = list.nextCursor;
  } while (cursor && items.length < 5000);
  return items;
}

async function imagesView(params, signal) {
  const filters = { component: params.get('component') };
  const form = filterForm(filters, [{ name: 'component', label: 'Component' }],
    (chosen) => { location.hash = `#/images${query(chosen)}`; });
  try {
    const items = await catalog('/catalog/images', filters, signal);
    const groups = new Map();
    for (const item of items) {
      const name = `${item.component}/${item.branch}`;
      if (!groups.has(name)) groups.set(name, []);
      groups.get(name).push(item);
    }
    const rows = [...groups.values()].map((group) => {
      const [component, branch] = [group[0].component, group[0].branch];
      return h('tr', {},
        h('td', {}, h('a', { href: `#/images/${encodeURIComponent(component)}/${encodeURIComponent(branch)}` }, component)),
        h('td', {}, branch),
        h('td', {}, group.map((item) => item.architecture).join(', ')),
        h('td', {}, when(group.map((item) => item.builtAt).sort().pop())));
    });
    page('Images', form, table('Images by component and branch', ['Component', 'Branch', 'Architectures', 'Last built'], rows,
      'No images yet, or none this key may see.'));
  } catch (error) {
    page('Images', form, failure(error));
  }
}

async function imageView(component, branch, signal) {
  try {
    const items = (await catalog('/catalog/images', { component }, signal)).filter((item) => item.branch === branch);
    const sections = [];
    for (const item of items) {
      const found = await api(`/images${query({ component, branch, architecture: item.architecture })}`, { signal });
      sections.push(h('section', { 'aria-label': item.architecture },
        h('h2', {}, item.architecture),
        recordList([
          ['Image', found.imageName],
          ['Digest', h('span', { class: 'command' }, h('code', {}, found.digest), copyButton(found.digest, 'digest'))],
          ['Built', when(found.builtAt || item.builtAt)],
          ['Build', h('a', { href: `#/builds/${found.buildId}` }, found.buildId)],
          ['Pull command', h('span', { class: 'command' }, h('code', { class: 'pull' }, found.pullCommand),
            copyButton(found.pullCommand, 'pull command'))],
          ['Log in first', found.loginCommand
            ? h('span', { class: 'command' }, h('code', {}, found.loginCommand), copyButton(found.loginCommand, 'login command'))
            : null],
        ])));
    }
    page(`Image ${component} on ${branch}`,
      ...(sections.length ? sections : [h('p', { class: 'empty' }, 'No image of this branch is stored.')]));
  } catch (error) {
    page(`Image ${component} on ${branch}`, failure(error));
  }
}

async function download(item, button) {
  const path = `/components/${encodeURIComponent(item.component)}/${encodeURIComponent(item.tag)}/${shortArch(item.architecture)}/archive`;
  button.disabled = true;
  say('Download started');
  try {
    const response = await api(path, { raw: true });
    if (!response.ok) throw new ApiError(response.status, (await response.json().catch(() => ({}))).errorMessage || response.statusText);
    const url = URL.createObjectURL(await response.blob());
    const link = h('a', { href: url, download: `${item.component}-${item.tag}-${shortArch(item.architecture)}.tar.gz` });
    document.body.append(link);
    link.click();
    link.remove();
    window.setTimeout(() => URL.revokeObjectURL(url), 60000);
    say('Download ready');
  } catch (error) {
    say(`Download failed: ${error.message}`);
  } finally {
    button.disabled = false;
  }
}

async function componentsView(params, signal) {
  const filters = { component: params.get('component') };
  const form = filterForm(filters, [{ name: 'component', label: 'Component' }],
    (chosen) => { location.hash = `#/components${query(chosen)}`; });
  try {
    const items = await catalog('/catalog/components', filters, signal);
    const rows = items.map((item) => h('tr', {},
      h('td', {}, h('a', {
        href: `#/components/${encodeURIComponent(item.component)}/${encodeURIComponent(item.tag)}/${shortArch(item.architecture)}`,
      }, item.component)),
      h('td', {}, item.tag),
      h('td', {}, item.architecture),
      h('td', {}, bytes(item.size)),
      h('td', {}, h('code', { title: item.digest }, shortDigest(item.digest))),
      h('td', {}, when(item.builtAt)),
      h('td', {}, h('button', { type: 'button', onclick: (event) => download(item, event.target),
        'aria-label': `Download ${item.component} ${item.tag} for ${item.architecture}` }, 'Download'))));
    page('Components', form, table('Components by version and architecture',
      ['Component', 'Version', 'Architecture', 'Size', 'Digest', 'Built', ''], rows,
      'No components yet, or none this key may see.'));
  } catch (error) {
    page('Components', form, failure(error));
  }
}

async function componentView(component, tag, architecture, signal) {
  try {
    const items = (await catalog('/catalog/components', { component }, signal))
      .filter((item) => item.tag === tag && shortArch(item.architecture) === architecture);
    if (!items.length) {
      page(`${component} ${tag}`, h('p', { class: 'empty' }, 'This version is not stored.'));
      return;
    }
    const item = items[0];
    const build = await api(`/builds/${encodeURIComponent(item.buildId)}`, { signal }).catch(() => null);
    const dependencies = build?.result?.dependencies || [];
    const button = h('button', { type: 'button', onclick: () => download(item, button) }, 'Download the archive');
    page(`${component} ${tag}`,
      recordList([
        ['Architecture', item.architecture],
        ['Size', bytes(item.size)],
        ['Digest', h('span', { class: 'command' }, h('code', {}, item.digest), copyButton(item.digest, 'digest'))],
        ['Built', when(item.builtAt)],
        ['Build', h('a', { href: `#/builds/${item.buildId}` }, item.buildId)],
        ['Source', build?.result?.url],
        ['Commit', build?.result?.commit],
      ]),
      button,
      h('h2', {}, 'Dependencies'),
      dependencies.length
        ? h('ul', {}, dependencies.map((dependency) => h('li', {},
          h('a', { href: `#/components/${encodeURIComponent(dependency.component)}/${encodeURIComponent(dependency.tag)}/${architecture}` },
            `${dependency.component} ${dependency.tag}`), ' ', h('code', {}, shortDigest(dependency.digest)))))
        : h('p', { class: 'empty' }, 'None.'));
  } catch (error) {
    page(`${component} ${tag}`, failure(error));
  }
}

async function keysView(signal) {
  const created = h('div', { 'aria-live': 'polite' });
  const listing = h('div', {});
  const form = h('form', { class: 'key-form', 'aria-label': 'Create a key' },
    h('div', {}, h('label', { for: 'key-name' }, 'Name'), h('input', { id: 'key-name', name: 'name', required: true })),
    h('div', {}, h('label', { for: 'key-scope' }, 'Scope'),
      h('select', { id: 'key-scope', name: 'scope' }, ['read', 'build', 'admin'].map((scope) => h('option', { value: scope }, scope)))),
    h('div', {}, h('label', { for: 'key-components' }, 'Components (patterns, comma-separated; empty: all)'),
      h('input', { id: 'key-components', name: 'components', placeholder: 'team-a-*, libfoo' })),
    h('div', {}, h('label', { for: 'key-expires' }, 'Expires (empty: never)'),
      h('input', { id: 'key-expires', name: 'expires', type: 'datetime-local' })),
    h('button', { type: 'submit' }, 'Create key'));

  async function list() {
    try {
      const answer = await api('/keys', { signal });
      const rows = answer.keys.map((key) => h('tr', {},
        h('td', {}, key.name),
        h('td', {}, h('code', {}, key.keyId)),
        h('td', {}, (key.scopes || []).join(', ')),
        h('td', {}, key.components ? key.components.join(', ') : 'all'),
        h('td', {}, key.expiresAt ? when(key.expiresAt) : 'never'),
        h('td', {}, h('button', {
          type: 'button',
          class: 'danger',
          'aria-label': `Revoke ${key.name}`,
          onclick: async () => {
            if (!window.confirm(`Revoke the key ${key.name}? Every request with it is refused from now on.`)) return;
            try {
              await api(`/keys/${encodeURIComponent(key.keyId)}`, { method: 'DELETE' });
              say(`Key ${key.name} revoked`);
              list();
            } catch (error) {
              listing.prepend(failure(error));
            }
          },
        }, 'Revoke'))));
      listing.replaceChildren(table('API keys', ['Name', 'Key id', 'Scopes', 'Components', 'Expires', ''], rows, 'No keys yet.'));
    } catch (error) {
      // A list shown before stays, under the error (reads are retried on a 503 first).
      if (signal.aborted) return;
      const shown = listing.querySelector('table');
      listing.replaceChildren(failure(new Error(`The list could not be read again: ${error.message}`)), ...(shown ? [shown.closest('.scroll')] : []));
    }
  }

  form.addEventListener('submit', async (event) => {
    event.preventDefault();
    const fields = Object.fromEntries(new FormData(form).entries());
    const components = fields.components.split(',').map((pattern) => pattern.trim()).filter(Boolean);
    const request = { name: fields.name, scopes: [fields.scope] };
    if (components.length) request.components = components;
    if (fields.expires) request.expiresAt = new Date(fields.expires).toISOString().replace(/\.\d{3}Z$/, 'Z');
    try {
      const answer = await api('/keys', { method: 'POST', json: request });
      created.replaceChildren(h('div', { class: 'secret' },
        h('h2', {}, `Key ${answer.key?.name || fields.name} created`),
        h('p', {}, 'Its secret is shown this once: copy it now.'),
        h('p', { class: 'command' }, h('code', { id: 'new-secret' }, answer.secret), copyButton(answer.secret, 'secret'))));
      form.reset();
      created.querySelector('h2').setAttribute('tabindex', '-1');
      created.querySelector('h2').focus();
      list();
    } catch (error) {
      created.replaceChildren(failure(error));
    }
  });
  page('Keys', created, h('h2', {}, 'Create a key'), form, h('h2', {}, 'Keys'), listing);
  await list();
}

async function secretsView(signal) {
  const said = h('div', { 'aria-live': 'polite' });
  const listing = h('div', {});
  const form = h('form', { class: 'key-form', 'aria-label': 'Set a secret', autocomplete: 'off' },
    h('div', {}, h('label', { for: 'secret-name' }, 'Name (a-z, 0-9, . _ -)'),
      h('input', { id: 'secret-name', name: 'name', required: true })),
    h('div', {}, h('label', { for: 'secret-value' }, 'Value (at most 64 KiB; never shown again)'),
      h('textarea', { id: 'secret-value', name: 'value', required: true, rows: 3, spellcheck: 'false' })),
    h('div', {}, h('label', { for: 'secret-components' }, 'Components whose builds may read it (patterns, comma-separated)'),
      h('input', { id: 'secret-components', name: 'components', required: true, placeholder: 'web-*, libfoo' })),
    h('button', { type: 'submit' }, 'Set secret'));

  async function list() {
    try {
      const answer = await api('/secrets', { signal });
      const rows = answer.secrets.map((secret) => h('tr', {},
        h('td', {}, h('code', {}, secret.name)),
        h('td', {}, secret.components.join(', ')),
        h('td', {}, when(secret.updatedAt)),
        h('td', {}, h('button', {
          type: 'button',
          class: 'danger',
          'aria-label': `Remove ${secret.name}`,
          onclick: async () => {
            if (!window.confirm(`Remove the secret ${secret.name}? Builds no longer get it.`)) return;
            try {
              await api(`/secrets/${encodeURIComponent(secret.name)}`, { method: 'DELETE' });
              say(`Secret ${secret.name} removed`);
              list();
            } catch (error) {
              listing.prepend(failure(error));
            }
          },
        }, 'Remove'))));
      listing.replaceChildren(table('Build secrets', ['Name', 'Components', 'Changed', ''], rows, 'No secrets yet.'));
    } catch (error) {
      listing.replaceChildren(failure(error));
    }
  }

  form.addEventListener('submit', async (event) => {
    event.preventDefault();
    const fields = Object.fromEntries(new FormData(form).entries());
    const components = fields.components.split(',').map((pattern) => pattern.trim()).filter(Boolean);
    try {
      const answer = await api('/secrets', { method: 'POST', json: { name: fields.name, value: fields.value, components } });
      form.reset();
      said.replaceChildren(h('p', {}, `Secret ${answer.name} ${answer.status}.`));
      say(`Secret ${answer.name} ${answer.status}`);
      list();
    } catch (error) {
      said.replaceChildren(failure(error));
    }
  });
  page('Secrets', said, h('h2', {}, 'Set a secret'), form, h('h2', {}, 'Secrets'), listing);
  await list();
}

// ---- routing ------------------------------------------------------------------------------------------

function route() {
  const [path, search] = location.hash.replace(/^#/, '').split('?');
  const parts = path.split('/').filter(Boolean).map(decodeURIComponent);
  return { parts, params: new URLSearchParams(search || '') };
}

async function render() {
  leaving.abort();
  leaving = new AbortController();
  const { signal } = leaving;
  const signedIn = Boolean(sessionStorage.getItem(KEY_ITEM));
  $('#sign-in').hidden = signedIn;
  $('#view').hidden = !signedIn;
  $('#nav').hidden = !signedIn;
  if (!signedIn) {
    document.title = 'Sign in · artifact storage';
    $('#view').replaceChildren();
    $('#key').focus();
    return;
  }
  if (!me) {
    try {
      me = await api('/whoami');
    } catch (error) {
      signOut(error.message);
      return;
    }
  }
  $('#who').textContent = `Signed in as ${me.key?.name || me.keyId} (${me.scope})`;
  $('#nav-keys').hidden = me.scope !== 'admin';
  $('#nav-new').hidden = !['build', 'admin'].includes(me.scope);
  $('#nav-secrets').hidden = me.scope !== 'admin';
  const { parts, params } = route();
  const section = parts[0] || 'builds';
  for (const link of document.querySelectorAll('#nav a')) {
    if (link.dataset.section === section) link.setAttribute('aria-current', 'page');
    else link.removeAttribute('aria-current');
  }
  if (section === 'builds' && parts[1]) await buildView(parts[1], params, signal);
  else if (section === 'new' && ['build', 'admin'].includes(me.scope)) newBuildView(params);
  else if (section === 'new') page('New build', h('p', {}, 'Starting builds takes a key with the build or admin scope.'));
  else if (section === 'images' && parts.length === 3) await imageView(parts[1], parts[2], signal);
  else if (section === 'images') await imagesView(params, signal);
  else if (section === 'components' && parts.length === 4) await componentView(parts[1], parts[2], parts[3], signal);
  else if (section === 'components') await componentsView(params, signal);
  else if (section === 'keys' && me.scope === 'admin') await keysView(signal);
  else if (section === 'keys') page('Keys', h('p', {}, 'Only admin keys manage keys.'));
  else if (section === 'secrets' && me.scope === 'admin') await secretsView(signal);
  else if (section === 'secrets') page('Secrets', h('p', {}, 'Only admin keys manage secrets.'));
  else await buildsView(params, signal);
}

document.addEventListener('DOMContentLoaded', () => {
  document.body.append(h('div', { id: 'announce', class: 'offscreen', 'aria-live': 'polite', role: 'status' }));
  $('#sign-in-form').addEventListener('submit', async (event) => {
    event.preventDefault();
    const key = $('#key').value.trim();
    $('#sign-in-error').textContent = '';
    try {
      await signIn(key);
      $('#key').value = '';
      if (!location.hash) location.hash = '#/builds';
      render();
    } catch (error) {
      $('#sign-in-error').textContent = error.status === 401
        ? 'That key was refused: check it, or ask an admin for a new one.'
        : error.message;
    }
  });
  $('#sign-out').addEventListener('click', () => signOut('Signed out.'));
  window.addEventListener('hashchange', render);
  render();
});
