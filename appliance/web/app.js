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
function sparkline(samples, index, color, title) {
  const w = 120, h = 28;
  const svg = document.createElementNS(SVGNS, 'svg');
  svg.setAttribute('class', 'spark');
  svg.setAttribute('width', w);
  svg.setAttribute('height', h);
  svg.setAttribute('viewBox', '0 0 ' + w + ' ' + h);
  const t = document.createElementNS(SVGNS, 'title');
  const vals = samples.map((s) => s[index]);
  const max = Math.max(1, ...vals);
  t.textContent = title + ' (last hour; max ' + (index === 1 ? max + ' s' : bytes(max) + (index === 3 ? '/s' : '')) + ')';
  svg.append(t);
  if (vals.length > 1) {
    const pts = vals.map((v, i) => (i * (w - 2) / (vals.length - 1) + 1).toFixed(1) + ',' + (h - 1 - v * (h - 2) / max).toFixed(1));
    const pl = document.createElementNS(SVGNS, 'polyline');
    pl.setAttribute('points', pts.join(' '));
    pl.setAttribute('stroke', color);
    svg.append(pl);
  }
  return svg;
}

async function diskAction(id, what) {
  try { showMessage((await api('POST', '/api/disks/' + id + '/' + what)).message); } catch (e) { showError(e.message); }
}

async function loadReplication() {
  const [st, series] = await Promise.all([api('GET', '/api/status'), api('GET', '/api/series')]);
  const byDisk = {};
  for (const d of series.disks) byDisk[d.disk_id] = d.samples;
  const tbody = $('disks').tBodies[0];
  tbody.replaceChildren();
  for (const d of st.disks) {
    const tr = el('tr');
    tr.dataset.disk = d.disk_id;
    const s = byDisk[d.disk_id] || [];
    const plots = el('td');
    plots.append(sparkline(s, 1, '#1f6feb', 'RPO lag'), sparkline(s, 3, '#b35900', 'churn'), sparkline(s, 2, '#6b2fb3', 'backlog'));
    const actions = el('td');
    const cp = el('button', 'Checkpoint');
    cp.addEventListener('click', () => diskAction(d.disk_id, 'checkpoint'));
    const rs = el('button', 'Resync');
    rs.addEventListener('click', () => { if (confirm('Resync ' + d.name + '? The agent hashes the whole disk.')) diskAction(d.disk_id, 'resync'); });
    cp.disabled = rs.disabled = !d.connected;
    actions.append(cp, rs);
    // Its health, then each reason with what to do (status's roll-up).
    const health = el('td', null, 'health');
    const h = d.health || { state: 'healthy', reasons: [] };
    health.append(el('strong', h.state, 'health-' + h.state));
    for (const r of h.reasons) health.append(el('div', r.level + ': ' + r.what + '; do: ' + r.todo));
    tr.append(el('td', d.name + ' (' + d.disk_id + ')'), health, el('td', d.state + (d.reason ? ': ' + d.reason : ''), 'state'),
      el('td', d.last_committed_cycle ? d.rpo_lag_seconds + ' s' : 'not synced yet', 'rpo'),
      el('td', d.backlog_cycles + ' cycles, ' + bytes(d.backlog_bytes)),
      el('td', bytes(d.cache_bytes) + ' of ' + bytes(d.cache_limit_bytes)),
      el('td', d.last_point ? d.last_point + ' (' + d.last_point_kind + ')' : 'none', 'last-point'), plots, actions);
    tbody.append(tr);
  }
  if (!st.disks.length) {
    const tr = el('tr');
    const td = el('td', 'No protected disks yet: run mobility-agent protect DEVICE on a registered server.');
    td.colSpan = 9;
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
