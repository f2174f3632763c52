// app.js - the configuration manager's page logic: login, then the prerequisites, registration,
// replication and recovery-point views, all from the appliance's JSON API under /api/ (same origin only).
'use strict';

let csrf = null;
let refreshTimer = null;
const $ = (id) => document.getElementById(id);

function el(tag, text, cls) {
  const e = document.createElement(tag);
  if (text !== undefined && text !== null) e.textContent = String(text);
  if (cls) e.className = cls;
  return e;
}

function showError(msg) { $('app-error').textContent = msg || ''; }
function showMessage(msg) { $('message').textContent = msg || ''; }

async function api(method, path, fields) {
  const opt = { method, credentials: 'same-origin', headers: {} };
  if (method === 'POST') {
    opt.headers['X-CSRF-Token'] = csrf || '';
    opt.body = new URLSearchParams(fields || {});
  }
  const r = await fetch(path, opt);
  let body = null;
  try { body = await r.json(); } catch (e) { body = { error: 'the appliance sent no JSON (HTTP ' + r.status + ')' }; }
  if (r.status === 401 && path !== '/api/login' && path !== '/api/session') { showLogin(); }
  if (!r.ok) throw new Error(body && body.error ? body.error : 'HTTP ' + r.status);
  return body;
}

function when(unix) {
  if (!unix) return 'never';
  return new Date(unix * 1000).toLocaleString();
}

function ago(unix) {
  if (!unix) return 'never';
  const s = Math.max(0, Math.round(Date.now() / 1000 - unix));
  return s + ' s ago';
}

function bytes(n) {
  const u = ['B', 'KiB', 'MiB', 'GiB', 'TiB'];
  let i = 0;
  while (n >= 1024 && i < u.length - 1) { n /= 1024; i++; }
  return (i ? n.toFixed(1) : n) + ' ' + u[i];
}

// ---- login ----------------------------------------------------------------------------------

function showLogin() {
  csrf = null;
  if (refreshTimer) clearInterval(refreshTimer);
  $('app-view').hidden = true;
  $('logout').hidden = true;
  $('login-view').hidden = false;
}

function loggedIn(session) {
  csrf = session.csrf_token;
  $('login-view').hidden = true;
  $('app-view').hidden = false;
  $('logout').hidden = false;
  $('password-view').hidden = !!session.password_set;
  selectTab(location.hash.replace('#', '') || 'prereq');
  if (refreshTimer) clearInterval(refreshTimer);
  refreshTimer = setInterval(() => { if (!document.hidden) refreshCurrent(); }, 5000);
}

async function start() {
  const m = location.hash.match(/token=([A-Za-z0-9_-]+)/);
  if (m) {
    history.replaceState(null, '', location.pathname); // the link works once: keep it out of history
    try { loggedIn(await api('POST', '/api/login', { token: m[1] })); return; } catch (e) { $('login-error').textContent = e.message; }
  }
  try { loggedIn(await api('GET', '/api/session')); } catch (e) { showLogin(); }
}

$('login-form').addEventListener('submit', async (ev) => {
  ev.preventDefault();
  $('login-error').textContent = '';
  try {
    loggedIn(await api('POST', '/api/login', { password: $('login-password').value }));
    $('login-password').value = '';
  } catch (e) { $('login-error').textContent = e.message; }
});

$('logout').addEventListener('click', async () => { try { await api('POST', '/api/logout'); } catch (e) { /* gone anyway */ } showLogin(); });

$('password-form').addEventListener('submit', async (ev) => {
  ev.preventDefault();
  try {
    await api('POST', '/api/password', { password: $('new-password').value });
    $('new-password').value = '';
    $('password-view').hidden = true;
    showMessage('Admin password set.');
  } catch (e) { showError(e.message); }
});

// ---- tabs -----------------------------------------------------------------------------------

let currentTab = 'prereq';
const loaders = { prereq: loadPrereq, registration: loadRegistration, replication: loadReplication, points: loadPoints };

function selectTab(name) {
  if (!loaders[name]) name = 'prereq';
  currentTab = name;
  for (const b of document.querySelectorAll('nav .tab')) b.setAttribute('aria-selected', String(b.dataset.tab === name));
  for (const s of document.querySelectorAll('.tabview')) s.hidden = s.id !== 'tab-' + name;
  showError('');
  refreshCurrent();
}

function refreshCurrent() {
  loaders[currentTab]().catch((e) => showError(e.message));
}

for (const b of document.querySelectorAll('nav .tab')) b.addEventListener('click', () => selectTab(b.dataset.tab));

// ---- prerequisites --------------------------------------------------------------------------

function renderChecks(doc) {
  $('checked-at').textContent = when(doc.checked_unix);
  const tbody = $('checks').tBodies[0];
  tbody.replaceChildren();
  if (doc.report.error) { showError(doc.report.error); return; }
  for (const c of doc.report.checks) {
    const tr = el('tr');
    tr.dataset.check = c.name;
    tr.append(el('td', c.name), el('td', c.result, c.result), el('td', c.detail), el('td', c.remedy));
    tbody.append(tr);
  }
}

let proxyLoaded = false;
async function loadPrereq() {
  renderChecks(await api('GET', '/api/check'));
  if (!proxyLoaded) {
    const p = await api('GET', '/api/proxy');
    $('proxy-address').value = p.address;
    $('proxy-user').value = p.user;
    $('proxy-password').value = '';
    $('proxy-password').placeholder = p.password_set ? 'set (leave empty to keep)' : 'not set';
    $('proxy-bypass').value = p.bypass;
    proxyLoaded = true;
  }
}

$('rerun-check').addEventListener('click', async () => {
  $('rerun-check').disabled = true;
  try { renderChecks(await api('POST', '/api/check')); showMessage('Checks run again.'); } catch (e) { showError(e.message); }
  $('rerun-check').disabled = false;
});

$('proxy-form').addEventListener('submit', async (ev) => {
  ev.preventDefault();
  const f = { address: $('proxy-address').value.trim(), user: $('proxy-user').value, bypass: $('proxy-bypass').value.trim() };
  if ($('proxy-password').value) f.password = $('proxy-password').value;
  if ($('proxy-clear-password').checked) f.clear_password = '1';
  $('proxy-save').disabled = true;
  showError('');
  try {
    renderChecks(await api('POST', '/api/proxy', f));
    showMessage('Proxy settings saved and checked.');
    proxyLoaded = false;
    $('proxy-clear-password').checked = false;
    await loadPrereq();
  } catch (e) { showError(e.message); }
  $('proxy-save').disabled = false;
});

// ---- registration ---------------------------------------------------------------------------

// "not reported yet", or "NOT READY, generation 2: 1 failed, 2 warnings of 13 checks (FAIL fstab_names: ...)".
function readinessText(r) {
  if (!r) return 'not reported yet';
  let t = (r.ok ? 'ready' : 'NOT READY') + ', generation ' + (r.generation || 'unknown') + ': ' + r.failed +
          ' failed, ' + r.warned + ' warnings of ' + r.checks + ' checks';
  if (r.problems.length) t += ' (' + r.problems[0] + (r.problems.length > 1 ? ', …' : '') + ')';
  return t;
}

// The appliance keeps only a key's hash: a key is shown once, in the answer that issued it.
async function loadRegistration(issued) {
  const r = await api('GET', '/api/registration');
  const states = {
    used: 'used: regenerate for the next agent',
    revoked: 'revoked by a newer key: regenerate',
    expired: 'expired: regenerate',
    unused: 'issued, not shown again: regenerate if it was not kept',
  };
  $('regkey').textContent = issued ? issued.key : (states[r.newest_key_state] || 'none: regenerate one');
  $('copy-key').disabled = !issued;
  $('regkey-note').textContent = issued
    ? 'Shown only now. Valid until ' + when(issued.newest_key_expires_unix) + ' (' + r.key_ttl + '), for one agent; a newer key revokes it.'
    : 'Keys are valid ' + r.key_ttl + ', for one agent each; the appliance keeps only their hashes.';
  const a = await api('GET', '/api/agents');
  const tbody = $('agents').tBodies[0];
  tbody.replaceChildren();
  for (const ag of a.agents) {
    const tr = el('tr');
    tr.dataset.agent = ag.agent_id;
    const btn = el('button', ag.revoked ? 'revoked' : 'Revoke');
    btn.disabled = ag.revoked;
    btn.addEventListener('click', async () => {
      if (!confirm('Revoke agent ' + ag.hostname + '? It must register again with a new key.')) return;
      try { showMessage((await api('POST', '/api/agents/' + ag.agent_id + '/revoke')).message); loadRegistration(); } catch (e) { showError(e.message); }
    });
    const td = el('td');
    td.append(btn);
    const rd = el('td', readinessText(ag.readiness));
    rd.className = 'readiness';
    if (ag.readiness && ag.readiness.problems.length) rd.title = ag.readiness.problems.join('\n');
    tr.append(el('td', ag.agent_id), el('td', ag.hostname), el('td', when(ag.registered_unix)), el('td', ago(ag.last_heartbeat_unix)), rd, td);
    tbody.append(tr);
  }
}

$('copy-key').addEventListener('click', async () => {
  try { await navigator.clipboard.writeText($('regkey').textContent); showMessage('Key copied.'); }
  catch (e) { showMessage('Select the key and copy it (the browser refused the clipboard).'); }
});

$('regenerate-key').addEventListener('click', async () => {
  try { const k = await api('POST', '/api/registration/regenerate'); showMessage('New registration key issued.'); await loadRegistration(k); } catch (e) { showError(e.message); }
});

// ---- replication ----------------------------------------------------------------------------

const SVGNS = 'http://www.w3.org/2000/svg';
function svgEl(tag, attrs, text) {
  const e = document.createElementNS(SVGNS, tag);
  for (const [k, v] of Object.entries(attrs || {})) e.setAttribute(k, v);
  if (text !== undefined) e.textContent = text;
  return e;
}

// Units a chart's values are shown in: the largest whose value of the data's maximum is at least 1.
const UNITS = {
  seconds: [['s', 1], ['min', 60], ['h', 3600]],
  bytes: [['B', 1], ['KiB', 1024], ['MiB', 1024 ** 2], ['GiB', 1024 ** 3], ['TiB', 1024 ** 4]],
  rate: [['B/s', 1], ['KiB/s', 1024], ['MiB/s', 1024 ** 2], ['GiB/s', 1024 ** 3]],
};
function pickUnit(kind, max) {
  const us = UNITS[kind];
  let u = us[0];
  // minutes only from 2 min on: "90 s" reads better than "1.5 min"
  for (const c of us) if (max >= c[1] * (kind === 'seconds' && c[1] > 1 ? 2 : 1)) u = c;
  return { name: u[0], div: u[1] };
}

// At most 3 significant digits, no trailing zeros.
function num(v) {
  if (v === 0) return '0';
  const a = Math.abs(v);
  const d = a >= 100 ? 0 : a >= 10 ? 1 : 2;
  return String(Number(v.toFixed(d)));
}

// 0..top in steps of 1, 2, 2.5 or 5 × 10^k, about four of them; integral steps where the values
// are whole units (seconds, bytes).
function niceTicks(max, integral) {
  if (!(max > 0)) max = 1;
  const raw = max / 4;
  const mag = Math.pow(10, Math.floor(Math.log10(raw)));
  let step = [1, 2, 2.5, 5, 10].map((m) => m * mag).find((s) => s >= raw);
  if (integral && step < 1) step = 1;
  const top = Math.ceil(max / step - 1e-9) * step;
  const ticks = [];
  for (let v = 0; v <= top + step / 2; v += step) ticks.push(v);
  return { top: top || step, ticks };
}

// The time axis: the samples' span rounded up to a readable window (at most the hour kept), ending
// at the newest sample (the appliance's clock, which the points' times are in as well).
const SPANS = [60, 120, 300, 600, 900, 1800, 3600];
const TIME_STEPS = [10, 15, 30, 60, 120, 300, 600];
function timeWindow(samples) {
  const end = samples.length ? samples[samples.length - 1][0] : Math.floor(Date.now() / 1000);
  const have = samples.length ? end - samples[0][0] : 0;
  const span = SPANS.find((s) => s >= have) || 3600;
  const step = TIME_STEPS.find((s) => span / s <= 6);
  return { end, span, step };
}
function agoLabel(s) { return s === 0 ? 'now' : s % 60 ? '-' + s + ' s' : '-' + s / 60 + ' min'; }

// One metric of one disk as a chart: time axis, value axis with its unit, the newest value printed,
// optionally a horizontal target line, and the recovery points' times as vertical marks.
// samples: [[time_unix, rpo_lag_s, backlog_bytes, churn_bytes_per_s], ...] (GET /api/series).
function chart(o) {
  const W = 400, H = 150, L = 62, R = 16, T = 22, B = 22;
  const pw = W - L - R, ph = H - T - B;
  const svg = svgEl('svg', { class: 'chart', width: W, height: H, viewBox: '0 0 ' + W + ' ' + H, 'data-metric': o.metric });
  svg.append(svgEl('title', {}, o.title + ' over the last ' + o.win.span / 60 + ' min'));
  svg.append(svgEl('text', { x: 6, y: 14, class: 'chart-title' }, o.title));
  const vals = o.samples.map((s) => s[o.index]);
  const max = Math.max(0, ...vals, (o.target || 0) * 1.2); // the target line below the top
  const u = pickUnit(o.unit, max);
  const sc = niceTicks(max / u.div, u.div === 1);
  const x = (t) => L + pw * (1 - (o.win.end - t) / o.win.span);
  const y = (v) => T + ph * (1 - v / u.div / sc.top);
  const fmt = (v) => num(v / u.div) + ' ' + u.name;
  svg.append(svgEl('rect', { x: L, y: T, width: pw, height: ph, class: 'plot' }));
  for (const v of sc.ticks) {
    const yy = (T + ph * (1 - v / sc.top)).toFixed(1);
    svg.append(svgEl('line', { x1: L, x2: L + pw, y1: yy, y2: yy, class: 'grid' }));
    svg.append(svgEl('text', { x: L - 4, y: yy, class: 'ytick', 'text-anchor': 'end', 'dominant-baseline': 'middle' }, num(v) + ' ' + u.name));
  }
  for (let a = 0; a <= o.win.span; a += o.win.step) {
    const xx = x(o.win.end - a).toFixed(1);
    svg.append(svgEl('line', { x1: xx, x2: xx, y1: T + ph, y2: T + ph + 3, class: 'axis' }));
    svg.append(svgEl('text', { x: xx, y: H - 6, class: 'xtick', 'text-anchor': 'middle' }, agoLabel(a)));
  }
  for (const p of o.points) {
    if (p.time_unix < o.win.end - o.win.span) continue;
    const xx = Math.min(L + pw, x(p.time_unix)).toFixed(1);
    const m = svgEl('line', { x1: xx, x2: xx, y1: T, y2: T + ph, class: 'point-mark point-' + p.kind, 'data-point': p.point });
    m.append(svgEl('title', {}, p.point + ' (' + p.kind + ', ' + when(p.time_unix) + ')'));
    svg.append(m);
  }
  if (o.target) {
    const yy = y(o.target).toFixed(1);
    svg.append(svgEl('line', { x1: L, x2: L + pw, y1: yy, y2: yy, class: 'target' }));
    svg.append(svgEl('text', { x: L + 4, y: yy - 4, class: 'target-label', 'data-value': o.target }, 'target ' + fmt(o.target)));
  }
  if (vals.length > 1) {
    const pts = o.samples.map((s) => x(s[0]).toFixed(1) + ',' + y(s[o.index]).toFixed(1));
    svg.append(svgEl('polyline', { points: pts.join(' '), class: 'line', stroke: o.color }));
  }
  const last = o.samples[o.samples.length - 1];
  if (last) svg.append(svgEl('circle', { cx: x(last[0]).toFixed(1), cy: y(last[o.index]).toFixed(1), r: 2.5, fill: o.color }));
  svg.append(svgEl('text', { x: W - 6, y: 14, class: 'latest', 'text-anchor': 'end',
    'data-value': last ? last[o.index] : '', 'data-time': last ? last[0] : '' }, last ? 'now ' + fmt(last[o.index]) : 'no samples yet'));
  return svg;
}

function diskCharts(all, points, rpoTarget) {
  const win = timeWindow(all);
  const samples = all.filter((s) => s[0] >= win.end - win.span); // a stalled sampler's older ones
  const box = el('div', null, 'charts');
  box.append(
    chart({ metric: 'rpo', title: 'RPO lag', samples, index: 1, unit: 'seconds', color: '#1f6feb', target: rpoTarget, points, win }),
    chart({ metric: 'churn', title: 'churn (changed bytes committed)', samples, index: 3, unit: 'rate', color: '#b35900', points, win }),
    chart({ metric: 'backlog', title: 'backlog (not yet applied)', samples, index: 2, unit: 'bytes', color: '#6b2fb3', points, win }));
  return box;
}

// The replication view's order: critical disks, then warning, then healthy (by name within each).
const HEALTH_RANK = { critical: 0, warning: 1, healthy: 2 };
function sortByHealth(disks) {
  // no health: shown as healthy; a state this page does not know: above the healthy ones
  const rank = (d) => (!d.health ? 2 : HEALTH_RANK[d.health.state] ?? 1);
  return disks.slice().sort((a, b) => rank(a) - rank(b) || (a.name < b.name ? -1 : a.name > b.name ? 1 : 0) ||
    (a.disk_id < b.disk_id ? -1 : a.disk_id > b.disk_id ? 1 : 0));
}

async function diskAction(id, what) {
  try { showMessage((await api('POST', '/api/disks/' + id + '/' + what)).message); } catch (e) { showError(e.message); }
}

// Unprotect: the agent stops tracking the disk. Its replica and points are kept unless the user, asked a
// second time, types the disk id (deleting every recovery point cannot be undone).
async function unprotectDisk(d) {
  if (!confirm('Stop protecting ' + d.name + '? Its replica and points are kept.')) return;
  const typed = prompt('Also DELETE the replica of ' + d.name + ', every recovery point of it, its cache and catalog ' +
                       'rows? This cannot be undone. To delete them, type the disk id (' + d.disk_id + '); leave ' +
                       'empty or cancel to keep the replica.', '');
  const fields = {};
  showError('');
  if (typed !== null && typed.trim() !== '') {
    if (typed.trim() !== d.disk_id) {
      showError('The id typed is not ' + d.disk_id + ': nothing was changed.');
      return;
    }
    fields.delete_replica = '1';
    fields.confirm = typed.trim();
  }
  try { showMessage((await api('POST', '/api/disks/' + d.disk_id + '/unprotect', fields)).message); } catch (e) { showError(e.message); }
}

async function loadReplication() {
  const [st, series, pts] = await Promise.all([api('GET', '/api/status'), api('GET', '/api/series'), api('GET', '/api/points')]);
  renderReplication(st, series, pts);
  renderGroups(st.groups || []);
  renderAlerts(st.alerts);
}

// groups: the status document's "groups" member (consistency groups across servers).
function renderGroups(groups) {
  const tbody = $('groups').tBodies[0];
  tbody.replaceChildren();
  for (const g of groups) {
    const tr = el('tr');
    tr.dataset.group = g.name;
    const disks = el('td');
    for (const d of g.disks)
      disks.append(el('div', (d.name || d.disk_id) + (d.agent_connected ? (d.agent_group_points ? '' : ' (agent too old)')
                                                                        : ' (agent not connected)')));
    tr.append(el('td', g.name), disks, el('td', String(g.points_made)), el('td', String(g.attempts_failed)),
      el('td', g.last_point ? g.last_point + ' (window ' + g.last_window_ms + ' ms)' : 'none'),
      el('td', g.last_failure || ''));
    tbody.append(tr);
  }
  if (!groups.length) {
    const tr = el('tr');
    const td = el('td', 'No consistency groups: replication-appliance group create NAME DISK_ID...');
    td.colSpan = 6;
    tr.append(td);
    tbody.append(tr);
  }
}

// al: the status document's "alerts" member (GET /api/alerts answers it too).
function renderAlerts(al) {
  if (!al) return;
  if (!$('alerts-thresholds').value) $('alerts-thresholds').value = al.thresholds;
  const hooks = $('webhooks').querySelector('tbody');
  hooks.replaceChildren();
  for (const h of al.webhooks) {
    const tr = el('tr');
    const state = h.failing_for_attempts ? 'failing (' + h.failing_for_attempts + ' tries): ' + h.last_error
      : h.delivered ? 'delivering' : 'nothing sent yet';
    tr.append(el('td', h.url), el('td', String(h.queued)), el('td', String(h.delivered)), el('td', String(h.dropped)),
              el('td', state, h.failing_for_attempts ? 'health-warning' : null));
    hooks.append(tr);
  }
  if (!al.webhooks.length) {
    const tr = el('tr'), td = el('td', 'No webhook: alerts are logged only (init --webhook https://... adds one).');
    td.colSpan = 5;
    tr.append(td);
    hooks.append(tr);
  }
  const recent = $('transitions').querySelector('tbody');
  recent.replaceChildren();
  for (const t of al.recent) {
    const tr = el('tr');
    tr.append(el('td', when(Math.floor(t.unix_ms / 1000))), el('td', t.kind + ' ' + t.name + ' (' + t.id + ')'),
              el('td', t.from + ' \u2192 ' + t.to, 'health-' + t.to), el('td', t.reasons || '-'));
    recent.append(tr);
  }
}

$('alerts-form').addEventListener('submit', async (ev) => {
  ev.preventDefault();
  $('alerts-save').disabled = true;
  showError('');
  try {
    const r = await api('POST', '/api/alerts', { thresholds: $('alerts-thresholds').value.trim() });
    $('alerts-thresholds').value = r.alerts.thresholds;
    showMessage('Alert thresholds: ' + r.alerts.thresholds + '.');
    renderAlerts(r.alerts);
  } catch (e) { showError(e.message); }
  $('alerts-save').disabled = false;
});

$('alerts-test').addEventListener('click', async () => {
  showError('');
  try {
    const r = await api('POST', '/api/alerts/test');
    showMessage('A test alert was queued to ' + r.queued + ' webhook(s).');
  } catch (e) { showError(e.message); }
});

// st: GET /api/status, series: GET /api/series, pts: GET /api/points.
function renderReplication(st, series, pts) {
  const byDisk = {}, pointsOf = {};
  for (const d of series.disks) byDisk[d.disk_id] = d.samples;
  for (const d of pts.disks) pointsOf[d.disk_id] = d.points;
  const tbody = $('disks').tBodies[0];
  tbody.replaceChildren();
  for (const d of sortByHealth(st.disks)) {
    const tr = el('tr');
    tr.dataset.disk = d.disk_id;
    const actions = el('td');
    const cp = el('button', 'Checkpoint');
    cp.addEventListener('click', () => diskAction(d.disk_id, 'checkpoint'));
    const rs = el('button', 'Resync');
    rs.addEventListener('click', () => { if (confirm('Resync ' + d.name + '? The agent hashes the whole disk.')) diskAction(d.disk_id, 'resync'); });
    cp.disabled = rs.disabled = !d.connected || d.state === 'unprotected';
    actions.append(cp, rs);
    if (d.state !== 'unprotected') {
      const up = el('button', 'Unprotect', 'unprotect');
      up.disabled = !d.connected;
      up.title = d.connected ? 'Stop protecting the disk (its replica is kept unless you confirm its deletion)'
                             : 'Its agent is not connected: run mobility-agent unprotect on its host';
      up.addEventListener('click', () => unprotectDisk(d));
      actions.append(up);
    }
    // Its health, then each reason with what to do (status's roll-up).
    const health = el('td', null, 'health');
    const h = d.health || { state: 'healthy', reasons: [] };
    health.append(el('strong', h.state, 'health-' + h.state));
    for (const r of h.reasons) health.append(el('div', r.level + ': ' + r.what + '; do: ' + r.todo));
    tr.append(el('td', d.name + ' (' + d.disk_id + ')'), health, el('td', d.state + (d.reason ? ': ' + d.reason : ''), 'state'),
      el('td', d.last_committed_cycle ? d.rpo_lag_seconds + ' s' : 'not synced yet', 'rpo'),
      el('td', d.backlog_cycles + ' cycles, ' + bytes(d.backlog_bytes)),
      el('td', bytes(d.cache_bytes) + ' of ' + bytes(d.cache_limit_bytes)),
      el('td', d.last_point ? d.last_point + ' (' + d.last_point_kind + ')' : 'none', 'last-point'), actions);
    // Its charts on a row of their own under it, the table's full width.
    const ctr = el('tr', null, 'chart-row');
    ctr.dataset.chartsOf = d.disk_id;
    const ctd = el('td');
    ctd.colSpan = 8;
    ctd.append(diskCharts(byDisk[d.disk_id] || [], pointsOf[d.disk_id] || [], st.rpo_target_seconds));
    ctr.append(ctd);
    tbody.append(tr, ctr);
  }
  if (!st.disks.length) {
    const tr = el('tr');
    const td = el('td', 'No protected disks yet: run mobility-agent protect DEVICE on a registered server.');
    td.colSpan = 8;
    tr.append(td);
    tbody.append(tr);
  }
}

// ---- recovery points ------------------------------------------------------------------------

$('schedule-form').addEventListener('submit', async (ev) => {
  ev.preventDefault();
  $('schedule-save').disabled = true;
  showError('');
  try {
    const r = await api('POST', '/api/schedule', { points: $('schedule-points').value.trim() });
    $('schedule-points').value = r.points;
    showMessage('Recovery points: ' + r.points + '.');
  } catch (e) { showError(e.message); }
  $('schedule-save').disabled = false;
});

async function loadPoints() {
  if (!$('schedule-points').value) $('schedule-points').value = (await api('GET', '/api/schedule')).points;
  const r = await api('GET', '/api/points');
  const box = $('points');
  box.replaceChildren();
  for (const d of r.disks) {
    box.append(el('h3', d.name + ' (' + d.disk_id + ')'));
    if (!d.points.length) { box.append(el('p', 'No recovery points yet.')); continue; }
    const t = el('table');
    const head = el('tr');
    head.append(el('th', 'Point'), el('th', 'Kind'), el('th', 'Made by'), el('th', 'Frozen'), el('th', 'Time'),
                el('th', 'Restore (on the appliance)'));
    t.append(head);
    for (const p of d.points.slice().reverse()) {
      const tr = el('tr');
      const cmd = el('td');
      cmd.append(el('code', p.restore_command));
      tr.append(el('td', p.point), el('td', p.kind), el('td', p.trigger), el('td', p.freeze_ms ? p.freeze_ms + ' ms' : '-'),
                el('td', when(p.time_unix)), cmd);
      t.append(tr);
    }
    box.append(t);
  }
  if (!r.disks.length) box.append(el('p', 'No disks yet.'));
}

start();
