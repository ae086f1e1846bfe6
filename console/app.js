// The Ember console: a page over emberd's HTTP API (docs/api.md), with the admin token the user
// gives at login. No framework, no external request: the page, this script and uPlot are served
// by emberd itself under /console/, under a Content-Security-Policy that allows nothing else.
'use strict';

const $ = (id) => document.getElementById(id);
// The token lives in this page's memory only, never in storage: functions' HTTP triggers are
// served from the same origin (/fn/), and a page of theirs could read what the origin stores.
const state = {
  token: '',
  selected: '',       // the function on the right
  tab: 'overview',
  logNext: 0,         // the log's next sequence number, for the tail
  logPaused: false,
  charts: [],
  timers: [],
};

// ------------------------------------------------------------------------------------ the API

class ApiError extends Error {
  constructor(status, code, message) {
    super(message);
    this.status = status;
    this.code = code;
  }
}

// One request with the token; the answer's status, headers and body (JSON when it is JSON).
async function api(method, path, { body, headers = {} } = {}) {
  const res = await fetch(path, {
    method,
    body,
    headers: { Authorization: `Bearer ${state.token}`, ...headers },
    cache: 'no-store',
  });
  const text = await res.text();
  let json;
  try { json = text ? JSON.parse(text) : undefined; } catch { json = undefined; }
  if (res.status === 401 && path.startsWith('/v1/')) {
    logout('The token was refused.');
    throw new ApiError(401, 'unauthorized', 'the token was refused');
  }
  return { status: res.status, ok: res.ok, headers: res.headers, json, text };
}

// The JSON of a request that must succeed; an ApiError with emberd's message otherwise.
async function must(method, path, options) {
  const r = await api(method, path, options);
  if (!r.ok) {
    const e = r.json && r.json.error;
    throw new ApiError(r.status, e ? e.code : 'error', e ? e.message : `HTTP ${r.status}`);
  }
  return r.json;
}

const fn = (name) => `/v1/functions/${encodeURIComponent(name)}`;

// ------------------------------------------------------------------------------------ helpers

// An element with attributes and children (strings become text: nothing is parsed as HTML).
function h(tag, attrs = {}, ...children) {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (k.startsWith('on')) el.addEventListener(k.slice(2), v);
    else if (k === 'class') el.className = v;
    else el.setAttribute(k, v);
  }
  for (const c of children.flat()) {
    if (c !== null && c !== undefined) el.append(c instanceof Node ? c : String(c));
  }
  return el;
}

function fill(el, ...children) {
  el.replaceChildren(...children.flat().filter((c) => c !== null && c !== undefined));
}

function props(table, rows) {
  fill(table, rows.map(([k, v]) => h('tr', {}, h('td', {}, k), h('td', {}, v ?? '-'))));
}

const time = (ms) => (ms ? new Date(ms).toISOString().replace('T', ' ').slice(0, 19) : '-');

function every(ms, task) {
  const run = () => task().catch((e) => console.warn(e));
  run();
  state.timers.push(setInterval(run, ms));
}

function stopTimers() {
  state.timers.forEach(clearInterval);
  state.timers = [];
}

// ------------------------------------------------------------------------------------ login

function logout(message = '') {
  state.token = '';
  $('token').value = '';
  stopTimers();
  $('app').hidden = true;
  $('login').hidden = false;
  $('login-error').textContent = message;
  $('token').focus();
}

async function login(token) {
  $('token').value = '';  // the token lives in `state` only
  state.token = token;
  const r = await fetch('/v1/functions?limit=1', { headers: { Authorization: `Bearer ${token}` } });
  if (r.status !== 200) {
    state.token = '';
    $('login-error').textContent = r.status === 401 ? 'That token is not the admin token.'
                                                    : `emberd answered HTTP ${r.status}.`;
    return;
  }
  $('login').hidden = true;
  $('app').hidden = false;
  showView('functions');
}

// ------------------------------------------------------------------------------------ views

function showView(view) {
  stopTimers();
  document.querySelectorAll('header nav button').forEach((b) =>
    b.classList.toggle('active', b.dataset.view === view));
  $('view-functions').hidden = view !== 'functions';
  $('view-usage').hidden = view !== 'usage';
  if (view === 'functions') {
    every(2000, refreshList);
    if (state.selected) select(state.selected);
  } else {
    every(5000, refreshUsage);
  }
}

function instancesText(f) {
  const i = f.instances || {};
  const live = Object.values(i).reduce((a, b) => a + (typeof b === 'number' ? b : 0), 0);
  return i.busy ? `${live} (${i.busy} busy)` : String(live);
}

async function refreshList() {
  const all = [];
  let cursor = '';
  do {
    const page = await must('GET', `/v1/functions?limit=1000${cursor ? `&cursor=${encodeURIComponent(cursor)}` : ''}`);
    all.push(...page.functions);
    cursor = page.next_cursor || '';
  } while (cursor);
  $('no-functions').hidden = all.length > 0;
  fill($('function-list').tBodies[0], all.map((f) => h('tr', {
    'data-name': f.name,
    class: f.name === state.selected ? 'selected' : '',
    onclick: () => select(f.name),
  }, h('td', {}, f.name), h('td', {}, f.active_version), h('td', {}, f.config.runtime),
  h('td', { class: 'instances' }, instancesText(f)))));
  if (state.selected && !all.some((f) => f.name === state.selected)) {
    state.selected = '';
    $('function').hidden = true;
    $('pick').hidden = false;
  }
}

function select(name) {
  const changed = name !== state.selected;
  state.selected = name;
  document.querySelectorAll('#function-list tbody tr').forEach((tr) =>
    tr.classList.toggle('selected', tr.dataset.name === name));
  $('pick').hidden = true;
  $('function').hidden = false;
  $('function-name').textContent = name;
  if (changed) {
    state.logNext = 0;
    fill($('log'));
    $('result').hidden = true;
    $('kv-ns').value = name;
  }
  showTab(changed ? 'overview' : state.tab);
}

function showTab(tab) {
  state.tab = tab;
  // Only the list keeps refreshing; each tab brings its own refresh.
  stopTimers();
  every(2000, refreshList);
  document.querySelectorAll('.tabs button').forEach((b) =>
    b.classList.toggle('active', b.dataset.tab === tab));
  document.querySelectorAll('[data-panel]').forEach((p) => { p.hidden = p.dataset.panel !== tab; });
  const name = state.selected;
  if (tab === 'overview') every(2000, () => refreshOverview(name));
  if (tab === 'logs') every(1000, () => tailLog(name));
  if (tab === 'metrics') every(5000, () => refreshMetrics(name));
  if (tab === 'kv') listKv().catch(showKvError);
  if (tab === 'dead') refreshDead(name).catch((e) => { $('dead-status').textContent = e.message; });
}

// ------------------------------------------------------------------------------------ overview

async function refreshOverview(name) {
  const f = await must('GET', fn(name));
  if (name !== state.selected) return;
  const c = f.config;
  props($('config'), [
    ['runtime', c.runtime], ['handler', c.handler], ['memory', `${c.memory_mb} MB`],
    ['timeout', `${c.timeout_ms} ms`], ['concurrency', c.concurrency],
    ['instances', `${c.min_instances} to ${c.max_instances}`], ['network', c.network],
    ['invoke auth', c.auth], ['updated', time(f.updated_ms)],
  ]);
  props($('instances'), [
    ...Object.entries(f.instances || {}).map(([k, v]) => [`${k} instances`, v]),
    ...Object.entries(f.sandbox || {}).map(([k, v]) => [k.replaceAll('_', ' '), v]),
  ]);
  fill($('versions'),
    h('tr', {}, h('th', {}, 'Version'), h('th', {}, 'Created'), h('th', {}, 'Bytes'),
      h('th', {}, 'SHA-256'), h('th', {}, '')),
    (f.versions || []).slice().reverse().map((v) => h('tr', {},
      h('td', {}, v.version === f.active_version ? `${v.version} (active)` : v.version),
      h('td', {}, time(v.created_ms)), h('td', {}, v.bundle_bytes),
      h('td', {}, (v.bundle_sha256 || '').slice(0, 12)),
      h('td', {}, v.version === f.active_version ? '' : h('button', {
        onclick: async () => {
          await must('POST', `${fn(name)}/rollback?to=${v.version}`);
          refreshOverview(name);
        },
      }, 'Make active')))));
}

$('delete').addEventListener('click', async () => {
  const name = state.selected;
  if (!confirm(`Delete ${name} and all its versions?`)) return;
  await must('DELETE', fn(name));
  state.selected = '';
  $('function').hidden = true;
  $('pick').hidden = false;
  refreshList();
});

// ------------------------------------------------------------------------------------ deploy

const NAME_RULE = /^[a-z0-9][a-z0-9-]{0,63}$/;

function nameFromFile(file) {
  return file.name.replace(/\.(zip|tar\.gz|tgz)$/i, '').toLowerCase().replace(/[^a-z0-9-]+/g, '-')
    .replace(/^-+/, '');
}

async function deploy(file) {
  const status = $('deploy-status');
  const name = $('deploy-name').value.trim() || nameFromFile(file);
  if (!NAME_RULE.test(name)) {
    status.textContent = `"${name}" is not a function name: lower-case letters, digits and -.`;
    return;
  }
  status.textContent = `Uploading ${file.name} (${(file.size / 1024).toFixed(1)} KiB)...`;
  const r = await api('PUT', fn(name), { body: file });
  if (!r.ok) {
    status.textContent = `Not deployed: ${r.json && r.json.error ? r.json.error.message : `HTTP ${r.status}`}`;
    return;
  }
  status.textContent = `${name}: version ${r.json.active_version} ${r.status === 201 ? 'deployed' : 'active'}.`;
  $('deploy-name').value = '';
  await refreshList();
  select(name);
}

const dropzone = $('dropzone');
dropzone.addEventListener('dragover', (e) => { e.preventDefault(); dropzone.classList.add('over'); });
dropzone.addEventListener('dragleave', () => dropzone.classList.remove('over'));
dropzone.addEventListener('drop', (e) => {
  e.preventDefault();
  dropzone.classList.remove('over');
  const file = e.dataTransfer.files[0];
  if (file) deploy(file);
});
$('bundle-file').addEventListener('change', (e) => {
  const file = e.target.files[0];
  if (file) deploy(file);
  e.target.value = '';
});

// ------------------------------------------------------------------------------------ invoke

function checkEvent() {
  try {
    JSON.parse($('event').value || '{}');
    $('event-error').textContent = '';
    return true;
  } catch (e) {
    $('event-error').textContent = `Not JSON: ${e.message}`;
    return false;
  }
}

$('event').addEventListener('input', checkEvent);
$('format').addEventListener('click', () => {
  if (checkEvent()) $('event').value = JSON.stringify(JSON.parse($('event').value || '{}'), null, 2);
});

function logLines(pre, lines, append = false) {
  const nodes = lines.map((l) => h('span', { class: `stream-${l.stream}` },
    `${time(l.time_ms)} ${l.stream.padEnd(6)} ${l.text}\n`));
  if (append) pre.append(...nodes); else fill(pre, nodes);
}

// The sequence number the function's next log line will have (the log is at most 1 MiB).
async function logEnd(name) {
  let since = 0;
  for (;;) {
    const page = await must('GET', `${fn(name)}/logs?since=${since}&limit=1000`);
    if (page.lines.length < 1000) return page.next;
    since = page.next;
  }
}

$('invoke').addEventListener('click', async () => {
  if (!checkEvent()) return;
  const name = state.selected;
  const async = $('invoke-async').checked;
  const since = await logEnd(name);
  const r = await api('POST', `${fn(name)}/invoke${async ? '?mode=async' : ''}`, {
    body: $('event').value || '{}',
    headers: { 'Content-Type': 'application/json' },
  });
  $('result').hidden = false;
  const failed = !r.ok || r.headers.get('x-ember-function-error');
  const badge = $('result-status');
  badge.textContent = `HTTP ${r.status}${r.headers.get('x-ember-function-error') ? ` · ${r.headers.get('x-ember-function-error')}` : ''}`;
  badge.className = `badge ${failed ? 'bad' : 'ok'}`;
  $('result-body').textContent = r.json !== undefined ? JSON.stringify(r.json, null, 2) : r.text;
  const headers = [];
  r.headers.forEach((v, k) => { if (k.startsWith('x-ember-') || k === 'content-type') headers.push([k, v]); });
  props($('result-headers'), headers.sort());
  // The call's own lines: those of its request id, written from before the call on.
  const id = r.headers.get('x-ember-request-id') || (r.json && r.json.id);
  fill($('result-log'));
  for (let i = 0; i < 10 && id; i++) {
    const page = await must('GET', `${fn(name)}/logs?since=${since}&limit=1000`);
    const mine = page.lines.filter((l) => l.request_id === id);
    logLines($('result-log'), mine);
    if (mine.some((l) => l.text.startsWith('REPORT '))) break;
    await new Promise((done) => setTimeout(done, 300));
  }
});

// ------------------------------------------------------------------------------------ logs

async function tailLog(name) {
  if (state.logPaused) return;
  const since = state.logNext || 0;
  const page = await must('GET', `${fn(name)}/logs?since=${since}&limit=1000`);
  if (name !== state.selected) return;
  const pre = $('log');
  if (page.truncated && since > 0) pre.append(h('span', {}, '... older lines were dropped\n'));
  logLines(pre, page.lines, true);
  state.logNext = page.next;
  while (pre.childNodes.length > 2000) pre.firstChild.remove();
  if (page.lines.length) pre.scrollTop = pre.scrollHeight;
}

$('logs-pause').addEventListener('click', () => {
  state.logPaused = !state.logPaused;
  $('logs-pause').textContent = state.logPaused ? 'Resume' : 'Pause';
});
$('logs-clear').addEventListener('click', () => fill($('log')));

// ------------------------------------------------------------------------------------ metrics

// At least the last quarter of an hour, up to now, so that a few calls do not fill the width.
function timeRange(u, min, max) {
  const now = Date.now() / 1000;
  return [Math.min(min ?? now, now - 900), Math.max(max ?? now, now)];
}

function chart(el, series, data, title) {
  const width = Math.max(320, el.clientWidth || el.parentElement.clientWidth - 32);
  const opts = {
    width, height: 200, title,
    scales: { x: { time: true, range: timeRange }, y: { range: (u, min, max) => [0, Math.max(1, max * 1.1)] } },
    series: [{}, ...series],
    axes: [{}, { size: 60 }],
  };
  const c = new uPlot(opts, data, el);
  state.charts.push(c);
  return c;
}

async function refreshMetrics(name) {
  const u = await must('GET', `${fn(name)}/usage?limit=1000`);
  if (name !== state.selected) return;
  const t = u.usage || {};
  $('totals').textContent = `${t.invocations ?? 0} calls · ${t.errors ?? 0} errors · ` +
    `${t.cold_starts ?? 0} cold starts · ${t.billed_ms ?? 0} ms billed · ` +
    `${(t.gb_seconds ?? 0).toFixed(6)} GB-s`;
  const records = (u.records || []).slice().reverse();  // oldest first
  state.charts.forEach((c) => c.destroy());
  state.charts = [];
  fill($('chart-duration'));
  fill($('chart-calls'));
  if (!records.length) {
    $('chart-duration').append(h('p', { class: 'hint' }, 'No call yet.'));
    return;
  }
  const xs = records.map((r) => r.time_ms / 1000);
  chart($('chart-duration'), [
    { label: 'duration ms', stroke: '#c2410c', points: { show: true } },
    { label: 'cold start init ms', stroke: '#2563eb', points: { show: true } },
  ], [xs, records.map((r) => r.duration_ms), records.map((r) => (r.start === 'cold' ? r.init_ms : null))]);
  const perMinute = new Map();
  for (const r of records) {
    const minute = Math.floor(r.time_ms / 60000) * 60;
    const m = perMinute.get(minute) || { calls: 0, errors: 0 };
    m.calls += 1;
    if (r.outcome !== 'ok') m.errors += 1;
    perMinute.set(minute, m);
  }
  // Every minute from the first call (or a quarter of an hour ago) to now, quiet ones as 0.
  const now = Math.floor(Date.now() / 60000) * 60;
  const first = Math.min(now - 900, ...perMinute.keys());
  const minutes = [];
  for (let m = first; m <= now; m += 60) minutes.push(m);
  chart($('chart-calls'), [
    { label: 'calls', stroke: '#15803d', fill: 'rgba(21,128,61,0.25)', paths: uPlot.paths.bars({ size: [0.9, 24] }) },
    { label: 'failed', stroke: '#b91c1c', points: { show: true } },
  ], [minutes, minutes.map((m) => (perMinute.get(m) || { calls: 0 }).calls),
    minutes.map((m) => (perMinute.get(m) || { errors: 0 }).errors)]);
}

// ------------------------------------------------------------------------------------ key-value

function showKvError(e) { $('kv-status').textContent = e.message; }

async function listKv() {
  const ns = $('kv-ns').value.trim();
  if (!ns) return;
  const prefix = $('kv-prefix').value;
  const page = await must('GET', `/v1/kv/${encodeURIComponent(ns)}?limit=200&prefix=${encodeURIComponent(prefix)}`);
  $('kv-status').textContent = page.items.length ? '' : `Nothing in ${ns}${prefix ? ` under ${prefix}` : ''}.`;
  fill($('kv-items'),
    h('tr', {}, h('th', {}, 'Key'), h('th', {}, 'Version'), h('th', {}, 'Value'), h('th', {}, '')),
    page.items.map((item) => h('tr', {},
      h('td', {}, item.key), h('td', {}, item.version),
      h('td', {}, h('code', {}, JSON.stringify(item.value))),
      h('td', {}, h('button', {
        class: 'quiet',
        onclick: async () => {
          await must('DELETE', `/v1/kv/${encodeURIComponent(ns)}/${encodeURIComponent(item.key)}`);
          listKv().catch(showKvError);
        },
      }, 'Delete')))));
}

$('kv-list').addEventListener('click', () => listKv().catch(showKvError));
$('kv-put').addEventListener('click', async () => {
  const ns = $('kv-ns').value.trim();
  const key = $('kv-key').value;
  let value = $('kv-value').value;
  try { JSON.parse(value); } catch { value = JSON.stringify(value); }  // text is stored as a string
  try {
    const r = await must('PUT', `/v1/kv/${encodeURIComponent(ns)}/${encodeURIComponent(key)}`, {
      body: value, headers: { 'Content-Type': 'application/json' },
    });
    await listKv();
    $('kv-status').textContent = `${key}: version ${r.version}`;
  } catch (e) { showKvError(e); }
});

// ------------------------------------------------------------------------------------ dead letters

async function refreshDead(name) {
  const page = await must('GET', `${fn(name)}/dead-letters?limit=200`);
  if (name !== state.selected) return;
  $('dead-status').textContent = page.dead_letters.length ? '' : 'No dead letter.';
  fill($('dead-letters'),
    h('tr', {}, h('th', {}, 'Id'), h('th', {}, 'Attempts'), h('th', {}, 'Error'), h('th', {}, 'Event'), h('th', {}, '')),
    page.dead_letters.map((d) => h('tr', {},
      h('td', {}, d.id.slice(0, 8)), h('td', {}, d.attempts),
      h('td', {}, d.error ? `${d.error.errorType || ''}: ${d.error.errorMessage || ''}` : '-'),
      h('td', {}, h('code', {}, JSON.stringify(d.event))),
      h('td', {}, h('button', { onclick: () => redrive(name, [d.id]) }, 'Redrive')))));
}

async function redrive(name, ids) {
  const r = await must('POST', `${fn(name)}/dead-letters/redrive`, ids ? { body: JSON.stringify({ ids }) } : {});
  await refreshDead(name);
  $('dead-status').textContent = `${r.redriven} sent again.`;
}

$('redrive-all').addEventListener('click', () => redrive(state.selected, null));

// ------------------------------------------------------------------------------------ usage

async function refreshUsage() {
  const u = await must('GET', '/v1/usage');
  $('usage-range').textContent = `From ${u.from} to ${u.to}`;
  const priced = Boolean(u.prices);
  const head = ['Function', 'Calls', 'Errors', 'Throttles', 'Cold starts', 'Billed ms', 'GB-s', 'KV reads', 'KV writes'];
  if (priced) head.push('Cost');
  const row = (name, f) => h('tr', {}, h('td', {}, name), h('td', {}, f.invocations), h('td', {}, f.errors),
    h('td', {}, f.throttles), h('td', {}, f.cold_starts), h('td', {}, f.billed_ms),
    h('td', {}, (f.gb_seconds || 0).toFixed(6)), h('td', {}, f.kv_reads), h('td', {}, f.kv_writes),
    priced ? h('td', {}, f.cost ? f.cost.total : '-') : null);
  fill($('usage'), h('tr', {}, head.map((c) => h('th', {}, c))),
    u.functions.map((f) => row(f.function, f)), u.total ? row('(total)', u.total) : null);
}

// ------------------------------------------------------------------------------------ start

document.querySelectorAll('header nav button').forEach((b) =>
  b.addEventListener('click', () => showView(b.dataset.view)));
document.querySelectorAll('.tabs button').forEach((b) =>
  b.addEventListener('click', () => showTab(b.dataset.tab)));
$('logout').addEventListener('click', () => logout());
// A page that can script this one could take the token: one that opened it (same origin, as a
// function's page under /fn/ is; emberd strips the opener policy and service-worker scope headers
// from functions' answers, so neither should happen) or a service worker that serves it.
function scripted() {
  if (window.opener) return 'This console was opened by another page.';
  if (navigator.serviceWorker && navigator.serviceWorker.controller) {
    return 'A service worker is serving this console.';
  }
  return '';
}

const refusal = scripted();
if (refusal) {
  $('login').hidden = false;
  $('login-form').remove();
  $('login-error').textContent = `${refusal} Open it directly, from the address bar or a `
    + 'bookmark, to log in.';
} else {
  $('login-form').addEventListener('submit', (e) => {
    e.preventDefault();
    login($('token').value.trim());
  });
  logout();
}
