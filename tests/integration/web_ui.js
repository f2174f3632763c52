// web_ui.js - the headless Chromium driver of tests/integration/web_ui.sh: one Chromium for the whole
// test, with one browser context (the login session) and one tab that every phase loads the page in
// afresh. It serves the phases over HTTP on a Unix socket (argv[2]), one at a time as the shell asks
// (the shell runs the agent between phases): GET /PHASE?NAME=value... sets those environment
// variables, drives the configuration manager page and answers 200 with the phase's JSON (or nothing), or
// 500 with "FAIL: why". GET /quit closes the browser and exits; so does SIGTERM/SIGINT/SIGHUP (the
// shell's trap); whatever else ends the driver, Playwright's exit handler kills Chromium's processes.
'use strict';
const fs = require('fs');
const http = require('http');
const path = require('path');

const PW = process.env.PW_DIR;
const { chromium } = require(path.join(PW, 'node_modules', 'playwright-core'));
const BASE = process.env.WEB_URL;          // https://127.0.0.1:PORT
const SHOTS = process.env.SHOT_DIR;
const T = 60000;                            // deadline of each wait (polls, never fixed sleeps)
// The waits for a condition on the page poll it every 100 ms: by default they would evaluate it on
// every animation frame, keeping the renderer drawing 60 frames a second for as long as they wait.
const POLL = { timeout: T, polling: 100 };

// A phase's assertion that did not hold: the phase ends, and the shell fails the test with this.
class Failure extends Error {}
function fail(msg) { throw new Failure(msg); }

let page;               // the one tab: each phase loads the page afresh in it
const offLoopback = []; // requests refused for going beyond loopback (any is a failure)
const pageErrors = [];  // the current phase's script errors

async function withPage(fn) {
  pageErrors.length = 0;
  // A failure ends the test: the tab is then left as it is.
  const out = await fn(page);
  if (offLoopback.length) fail('the page tried to fetch beyond loopback: ' + offLoopback.join(', '));
  if (pageErrors.length) fail('script errors on the page: ' + pageErrors.join(' | '));
  // The phase's dialog answers go with it; leaving the page stops its own refresh while the shell
  // works, and makes the next phase's goto a full load.
  for (const l of page.listeners('dialog')) page.off('dialog', l);
  await page.goto('about:blank');
  return out;
}

async function shot(page, name) {
  await page.screenshot({ path: path.join(SHOTS, name + '.png'), fullPage: true });
}

async function tab(page, name) {
  await page.click(`nav .tab[data-tab="${name}"]`);
  await page.waitForSelector(`#tab-${name}:not([hidden])`, { timeout: T });
}

// Rows of the checks table as {name: [result, remedy]}.
async function checks(page) {
  return page.$$eval('#checks tbody tr', (rows) => Object.fromEntries(rows.map((r) => {
    const td = r.querySelectorAll('td');
    return [td[0].textContent, [td[1].textContent, td[3].textContent]];
  })));
}

// Everything the disk's charts show, read at one instant (the page redraws them every 5 s). With
// draw, the test first fetches status, series and points itself and has the page's own
// renderReplication draw them, so it knows exactly what the charts were drawn from.
async function readCharts(page, disk, draw) {
  return page.$eval('#disks', async (table, [id, draw]) => {
    let api = null;
    if (draw) {
      const get = async (p) => (await fetch(p, { credentials: 'same-origin' })).json();
      const series = await get('/api/series');
      const st = await get('/api/status'); // after the series: its instant is no earlier than the newest sample's
      const pts = await get('/api/points');
      renderReplication(st, series, pts);
      api = { samples: series.disks.find((d) => d.disk_id === id).samples, interval: series.interval_seconds,
              target: st.rpo_target_seconds, disk: st.disks.find((d) => d.disk_id === id) };
    }
    const row = table.querySelector(`tr[data-charts-of="${id}"]`);
    const charts = Object.fromEntries([...row.querySelectorAll('svg.chart')].map((svg) => {
      const txt = (sel) => [...svg.querySelectorAll(sel)].map((e) => e.textContent);
      const latest = svg.querySelector('text.latest');
      const target = svg.querySelector('text.target-label');
      return [svg.dataset.metric, {
        yticks: txt('text.ytick'), xticks: txt('text.xtick'), lines: svg.querySelectorAll('polyline').length,
        latest: latest.textContent, value: Number(latest.dataset.value), time: Number(latest.dataset.time),
        target: target && target.textContent, targetValue: target && Number(target.dataset.value),
        points: [...svg.querySelectorAll('line.point-mark')].map((m) => m.dataset.point),
      }];
    }));
    return { charts, api };
  }, [disk, draw]);
}

// "12 s", "2.5 min", "1.5 MiB/s" in the unit's base (seconds, bytes, bytes per second).
const FACTORS = { s: 1, min: 60, h: 3600, B: 1, KiB: 1024, MiB: 1024 ** 2, GiB: 1024 ** 3, TiB: 1024 ** 4 };
function parseValue(text) {
  const m = /^(\d+(?:\.\d+)?) (s|min|h|B|KiB|MiB|GiB|TiB)(\/s)?$/.exec(text);
  if (!m) fail('not a value with a unit: ' + JSON.stringify(text));
  return Number(m[1]) * FACTORS[m[2]];
}
// The printed value rounds to 3 significant digits (2 decimals under 10).
const near = (printed, exact) => Math.abs(printed - exact) <= 0.011 * exact + 0.006;

// The charts against the API the page reads: the page's own refresh marks the point asked for (it
// fetches the points itself); drawn from what the test fetched, each chart prints the series'
// newest sample, the RPO lag within a sample of what status says, the axes carry units, and the
// RPO target line's label is status's target.
async function checkCharts(page, disk, want) {
  const units = { rpo: /^\d+(\.\d+)? (s|min|h)$/, churn: /^\d+(\.\d+)? (B|KiB|MiB|GiB)\/s$/, backlog: /^\d+(\.\d+)? (B|KiB|MiB|GiB|TiB)$/ };
  if (want) {
    await page.waitForFunction(([s, w]) => [...document.querySelectorAll(s + ' svg.chart[data-metric="rpo"] line.point-mark')]
      .some((m) => m.dataset.point === w), [`#disks tr[data-charts-of="${disk}"]`, want], POLL)
      .catch(() => fail(`the page marks no point ${want} on the RPO lag chart`));
  }
  const deadline = Date.now() + T;
  for (;;) {
    const { charts: c, api } = await readCharts(page, disk, true);
    const newest = api.samples[api.samples.length - 1];
    for (const m of ['rpo', 'churn', 'backlog']) {
      if (!c[m]) fail('no ' + m + ' chart: ' + JSON.stringify(c));
      if (c[m].lines !== 1) fail(m + ' chart has no line');
      if (c[m].yticks.length < 2 || !c[m].yticks.every((t) => units[m].test(t))) fail(m + ' value axis without units: ' + c[m].yticks);
      if (!c[m].yticks[0].startsWith('0 ')) fail(m + ' value axis does not start at 0: ' + c[m].yticks);
      const xt = c[m].xticks;
      if (xt.length < 3 || xt[0] !== 'now' || !xt.slice(1).every((t) => /^-\d+ (s|min)$/.test(t))) fail(m + ' time axis: ' + xt);
      const exact = newest[{ rpo: 1, backlog: 2, churn: 3 }[m]];
      if (c[m].time !== newest[0] || c[m].value !== exact)
        fail(`${m} chart's newest sample is ${c[m].value} at ${c[m].time}, the series' ${exact} at ${newest[0]}`);
      const printed = /^now (.*)$/.exec(c[m].latest);
      if (!printed || !near(parseValue(printed[1]), exact)) fail(`${m} chart prints "${c[m].latest}" for ${exact}`);
    }
    if (!(api.target > 0)) fail('status has no RPO target: ' + api.target);
    if (!c.rpo.target || !near(parseValue(c.rpo.target.replace(/^target /, '')), api.target) || c.rpo.targetValue !== api.target)
      fail(`RPO target line "${c.rpo.target}" is not status's rpo_target_seconds ${api.target}`);
    if (want && !c.rpo.points.includes(want)) fail(`no mark of point ${want} on the RPO lag chart drawn from /api/points`);
    // Status was read at most one interval after the newest sample; RPO lag grows a second a
    // second between commits, so without a commit in between they differ by at most that.
    const lag = parseValue(/^now (.*)$/.exec(c.rpo.latest)[1]);
    if (Math.abs(api.disk.rpo_lag_seconds - lag) <= api.interval + 1) return c;
    // a commit between the two readings resets the lag: read both again
    if (Date.now() > deadline)
      fail(`the RPO lag chart prints ${c.rpo.latest} (sample at ${c.rpo.time}), status says ${api.disk.rpo_lag_seconds} s`);
    await page.waitForTimeout(500);
  }
}

// The replication view's alerts: the thresholds in use, no webhook (this test configures none, so
// the test button says so), and thresholds saved through the form come back canonical.
async function checkAlerts(page) {
  await page.waitForFunction(() => document.querySelector('#alerts-thresholds').value ===
    'rpo-warn=auto,rpo-crit=auto,point-age=off,agent-away=90s,cache=80', null, POLL);
  const none = await page.textContent('#webhooks tbody');
  if (!none.startsWith('No webhook')) fail('webhooks table without a webhook: ' + none);
  // No consistency group was created: the groups table says how to make one.
  const groups = await page.textContent('#groups tbody');
  if (!groups.startsWith('No consistency groups')) fail('groups table without a group: ' + groups);
  await page.click('#alerts-test');
  await page.waitForFunction(() => document.querySelector('#app-error').textContent.includes('no webhook is configured'),
    null, POLL);
  await page.fill('#alerts-thresholds', 'cache=90,point-age=2h');
  await page.click('#alerts-save');
  await page.waitForFunction(() => document.querySelector('#message').textContent ===
    'Alert thresholds: rpo-warn=auto,rpo-crit=auto,point-age=2h,agent-away=90s,cache=90.', null, POLL);
  const shown = await page.inputValue('#alerts-thresholds');
  if (shown !== 'rpo-warn=auto,rpo-crit=auto,point-age=2h,agent-away=90s,cache=90') fail('thresholds after save: ' + shown);
  await page.fill('#alerts-thresholds', 'cache=500');
  await page.click('#alerts-save');
  await page.waitForFunction(() => document.querySelector('#app-error').textContent.includes('percentage from 1 to 100'),
    null, POLL);
  await shot(page, '4-alerts');
}

// The order of the replication view's rows, drawn from crafted status (renderReplication is the
// page's own drawing, sortByHealth its order): critical, warning, healthy, by name within each.
async function checkSort(page) {
  const got = await page.evaluate(async () => {
    const st = await (await fetch('/api/status', { credentials: 'same-origin' })).json();
    const mk = (name, n, state) => ({ ...st.disks[0], name, disk_id: '00000000-0000-4000-8000-00000000000' + n,
      health: { state, reasons: state === 'healthy' ? [] : [{ level: state, code: 'crafted', what: 'crafted', todo: 'none' }] } });
    const crafted = { ...st, disks: [mk('b', 1, 'healthy'), mk('z', 2, 'critical'), mk('a', 3, 'healthy'), mk('m', 4, 'warning'),
      mk('c', 5, 'critical'), mk('a', 6, 'warning')] };
    renderReplication(crafted, { disks: [] }, { disks: [] });
    const rows = [...document.querySelectorAll('#disks tbody tr')];
    const out = rows.filter((r) => r.dataset.disk).map((r) => [r.querySelector('.health strong').textContent, r.dataset.disk.slice(-1),
      r.nextElementSibling && r.nextElementSibling.dataset.chartsOf === r.dataset.disk]);
    await loadReplication(); // the real disks again
    return out;
  });
  const want = [['critical', '5', true], ['critical', '2', true], ['warning', '6', true], ['warning', '4', true],
                ['healthy', '3', true], ['healthy', '1', true]];
  if (JSON.stringify(got) !== JSON.stringify(want)) fail('rows not sorted unhealthy first, by name: ' + JSON.stringify(got));
}

const phases = {
  // Log in with the one-time link, set a password, check prerequisites, a wrong proxy, a new key.
  async setup() {
    const password = process.env.ADMIN_PASSWORD;
    return withPage(async (page) => {
      await page.goto(process.env.LOGIN_URL);
      await page.waitForSelector('#app-view:not([hidden])', { timeout: T });
      if (page.url().includes('token=')) fail('the login token stays in the address bar');
      await page.waitForSelector('#password-view:not([hidden])', { timeout: T });
      await page.fill('#new-password', password);
      await page.click('#password-form button');
      await page.waitForSelector('#password-view[hidden]', { state: 'attached', timeout: T });

      // Prerequisites: every row PASS.
      await page.waitForSelector('#checks tbody tr', { timeout: T });
      let c = await checks(page);
      if (Object.keys(c).length < 5) fail('too few check rows: ' + JSON.stringify(c));
      for (const [name, [result]] of Object.entries(c)) if (result !== 'PASS') fail(`check ${name} is ${result}`);
      await shot(page, '1-prerequisites-pass');

      // A wrong proxy (nothing listens there): saved, re-checked, FAIL with the remedy.
      await page.fill('#proxy-address', 'http://127.0.0.1:' + process.env.DEAD_PORT);
      await page.fill('#proxy-user', 'webuser');
      await page.fill('#proxy-password', process.env.PROXY_PASSWORD);
      await page.click('#proxy-save');
      await page.waitForFunction(() => {
        const r = document.querySelector('#checks tr[data-check="TCP reach"] td:nth-child(2)');
        return r && r.textContent === 'FAIL';
      }, null, POLL);
      c = await checks(page);
      if (!/proxy/.test(c['TCP reach'][1])) fail('the proxy FAIL has no remedy: ' + JSON.stringify(c['TCP reach']));
      await page.waitForFunction(() => document.querySelector('#proxy-password').placeholder.startsWith('set'), null, POLL);
      if (await page.inputValue('#proxy-password') !== '') fail('the proxy password came back into the form');
      await shot(page, '2-wrong-proxy-fail');
      // Back to a direct connection: PASS again.
      await page.fill('#proxy-address', '');
      await page.fill('#proxy-user', '');
      await page.click('#proxy-save');
      await page.waitForFunction(() => {
        const r = [...document.querySelectorAll('#checks tbody tr td:nth-child(2)')];
        return r.length >= 5 && r.every((x) => x.textContent === 'PASS');
      }, null, POLL);

      // Registration: init's key is never shown again; regenerate shows a new one, once, which is
      // what the agent registers with.
      await tab(page, 'registration');
      await page.waitForFunction(() => document.querySelector('#regkey').textContent.startsWith('issued, not shown'), null, POLL);
      await page.click('#regenerate-key');
      await page.waitForFunction(() => document.querySelector('#regkey').textContent.startsWith('rk1-') &&
        document.querySelector('#regkey-note').textContent.startsWith('Shown only now'), null, POLL);
      await shot(page, '3-registration-key');
      fs.writeFileSync(process.env.KEY_FILE, await page.textContent('#regkey'));
    });
  },

  // The registered agent is listed with a heartbeat; the disk shows state, RPO and its last point.
  async disk() {
    const want = process.env.EXPECT_POINT || '';
    return withPage(async (page) => {
      await page.goto(BASE + '/');
      await page.waitForSelector('#app-view:not([hidden])', { timeout: T });
      await tab(page, 'registration');
      await page.waitForFunction((h) => [...document.querySelectorAll('#agents tbody tr td:nth-child(2)')]
        .some((td) => td.textContent === h), process.env.AGENT_HOST, POLL);
      // the connected agent's boot readiness for Azure, as it reported it
      await page.waitForFunction((h) => [...document.querySelectorAll('#agents tbody tr')]
        .some((tr) => tr.children[1].textContent === h &&
          /^(ready|NOT READY), generation (1|2|unknown): \d+ failed, \d+ warnings of \d+ checks/.test(tr.querySelector('.readiness').textContent)),
        process.env.AGENT_HOST, POLL);
      await tab(page, 'replication');
      const sel = `#disks tr[data-disk="${process.env.DISK_ID}"]`;
      await page.waitForFunction(([s, w]) => {
        const r = document.querySelector(s);
        if (!r) return false;
        const lp = r.querySelector('.last-point').textContent;
        return (w ? lp.startsWith(w + ' ') : lp === 'none') && /^\d+ s$/.test(r.querySelector('.rpo').textContent);
      }, [sel, want], POLL);
      const rpo = await page.textContent(sel + ' .rpo');
      const lp = await page.textContent(sel + ' .last-point');
      const state = await page.textContent(sel + ' .state');
      if (!state.startsWith('protected')) fail('disk state: ' + state);
      // The last hour's charts have lines once the sampler has two samples.
      const charts = `#disks tr[data-charts-of="${process.env.DISK_ID}"]`;
      await page.waitForFunction((s) => document.querySelectorAll(s + ' svg.chart polyline').length === 3, charts, POLL);
      if (!(await page.evaluate(([r, c]) => document.querySelector(r).nextElementSibling === document.querySelector(c), [sel, charts])))
        fail('the disk\'s charts are not on the row under it');
      const seen = await checkCharts(page, process.env.DISK_ID, want);
      await shot(page, '4-replication' + (want ? '-' + want : '-before'));
      await page.locator(charts).screenshot({ path: path.join(SHOTS, '4-charts' + (want ? '-' + want : '-before') + '.png') });
      await checkSort(page);
      if (!want) await checkAlerts(page);
      if (want) {
        await tab(page, 'points');
        const cmd = await page.waitForSelector(`#points code:text-matches("--point ${want} ")`, { timeout: T });
        const text = await cmd.textContent();
        if (!text.startsWith('replication-appliance restore --state ') || !text.includes('--disk ' + process.env.DISK_ID))
          fail('restore command: ' + text);
        await shot(page, '5-recovery-points');
      }
      return { rpo, last_point: lp, state, chart_rpo: seen.rpo.latest, chart_target: seen.rpo.target,
        rpo_ticks: seen.rpo.yticks, time_ticks: seen.rpo.xticks, point_marks: seen.rpo.points };
    });
  },

  // The page's own Checkpoint button: a new point appears (asked for by the appliance, not the agent).
  async checkpoint() {
    const old = process.env.EXPECT_POINT;
    return withPage(async (page) => {
      await page.goto(BASE + '/');
      await page.waitForSelector('#app-view:not([hidden])', { timeout: T });
      await tab(page, 'replication');
      const sel = `#disks tr[data-disk="${process.env.DISK_ID}"]`;
      await page.waitForSelector(sel + ' button:has-text("Checkpoint"):not([disabled])', { timeout: T });
      await page.click(sel + ' button:has-text("Checkpoint")');
      await page.waitForFunction(() => document.querySelector('#message').textContent.startsWith('checkpoint requested'), null, POLL);
      await page.waitForFunction(([s, o]) => {
        const r = document.querySelector(s);
        const lp = r && r.querySelector('.last-point').textContent;
        return lp && lp.startsWith('rp-') && !lp.startsWith(o + ' ');
      }, [sel, old], POLL);
      await shot(page, '6-checkpoint-from-page');
      return { last_point: await page.textContent(sel + ' .last-point') };
    });
  },

  // The page's Resync button (accepting the confirmation): the shell checks the resync ran.
  async resync() {
    return withPage(async (page) => {
      page.on('dialog', (d) => d.accept());
      await page.goto(BASE + '/');
      await page.waitForSelector('#app-view:not([hidden])', { timeout: T });
      await tab(page, 'replication');
      const sel = `#disks tr[data-disk="${process.env.DISK_ID}"]`;
      await page.waitForSelector(sel + ' button:has-text("Resync"):not([disabled])', { timeout: T });
      await page.click(sel + ' button:has-text("Resync")');
      await page.waitForFunction(() => document.querySelector('#message').textContent.startsWith('resync requested'), null, POLL);
    });
  },

  // The page's Unprotect button: confirmed, then the deletion prompt answered with a wrong id (nothing
  // happens, the page says so), then again with the prompt cancelled (the replica is kept): the row
  // shows the disk unprotected, without the button. The shell checks the agent and the appliance.
  async unprotect() {
    return withPage(async (page) => {
      const seen = [];
      let answer = 'not-the-disk-id';
      page.on('dialog', async (d) => {
        seen.push(d.type() + ': ' + d.message());
        if (d.type() !== 'prompt') await d.accept();
        else if (answer === null) await d.dismiss();
        else await d.accept(answer);
      });
      await page.goto(BASE + '/');
      await page.waitForSelector('#app-view:not([hidden])', { timeout: T });
      await tab(page, 'replication');
      const sel = `#disks tr[data-disk="${process.env.DISK_ID}"]`;
      await page.waitForSelector(sel + ' button:has-text("Unprotect"):not([disabled])', { timeout: T });
      await page.click(sel + ' button:has-text("Unprotect")');
      await page.waitForFunction(() => document.querySelector('#app-error').textContent.startsWith('The id typed is not'), null, POLL);
      if ((await page.textContent('#message')).startsWith('unprotect asked')) fail('a wrong id typed still unprotected the disk');
      if (seen.length !== 2 || !seen[0].startsWith('confirm: Stop protecting ') || !seen[0].endsWith('Its replica and points are kept.') ||
          !seen[1].startsWith('prompt: ') || !seen[1].includes(process.env.DISK_ID))
        fail('the dialogs were: ' + JSON.stringify(seen));
      answer = null;
      await page.click(sel + ' button:has-text("Unprotect")');
      await page.waitForFunction(() => document.querySelector('#message').textContent.startsWith('unprotect asked'), null, POLL);
      const msg = await page.textContent('#message');
      if (await page.textContent('#app-error')) fail('the earlier refusal still shows: ' + await page.textContent('#app-error'));
      if (!msg.includes('kept')) fail('the answer does not say the replica is kept: ' + msg);
      await page.waitForFunction((s) => {
        const r = document.querySelector(s);
        return r && r.querySelector('.state').textContent.startsWith('unprotected') &&
          ![...r.querySelectorAll('button')].some((b) => b.textContent === 'Unprotect' || !b.disabled);
      }, sel, POLL);
      await shot(page, '7-unprotected-from-page');
      return { dialogs: seen.length, message: msg };
    });
  },

  // Revoke the agent on the registration view (accepting the confirmation).
  async revoke() {
    return withPage(async (page) => {
      page.on('dialog', (d) => d.accept());
      await page.goto(BASE + '/');
      await page.waitForSelector('#app-view:not([hidden])', { timeout: T });
      await tab(page, 'registration');
      const btn = page.locator('#agents tbody tr td:nth-child(2)', { hasText: process.env.AGENT_HOST })
        .locator('xpath=..').locator('button');
      await btn.click({ timeout: T });
      await page.waitForFunction(() => document.querySelector('#message').textContent.startsWith('revoked'), null, POLL);
      await page.waitForFunction(() => [...document.querySelectorAll('#agents tbody button')].every((b) => b.disabled && b.textContent === 'revoked'),
        null, POLL);
      await shot(page, '8-agent-revoked');
    });
  },
};

async function main() {
  const socket = process.argv[2];
  if (!socket) { console.error('usage: web_ui.js SOCKET'); process.exit(2); }
  // The shell's trap stops the driver with SIGTERM: Chromium closed (or, if that takes over 5 s or it
  // is not up yet, killed with its process group by Playwright's exit handler), then exit.
  let browser = null;
  let quitting = false;
  for (const [sig, n] of [['SIGTERM', 15], ['SIGINT', 2], ['SIGHUP', 1]]) {
    process.on(sig, () => {
      quitting = true;
      setTimeout(() => process.exit(128 + n), 5000);
      if (browser) browser.close().catch(() => {}).finally(() => process.exit(128 + n));
      else process.exit(128 + n);
    });
  }
  browser = await chromium.launch({
    executablePath: '/usr/bin/chromium',
    headless: true,
    args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-background-networking'],
    handleSIGINT: false, handleSIGTERM: false, handleSIGHUP: false,
  });
  // One context: its cookies carry the login session across phases.
  const context = await browser.newContext({
    ignoreHTTPSErrors: true, // the appliance's own certificate; the shell checks it is the one served
    viewport: { width: 1400, height: 900 },
  });
  // Nothing may be fetched from beyond loopback: anything else is refused and recorded.
  await context.route('**/*', (route) => {
    const u = new URL(route.request().url());
    if (u.hostname === '127.0.0.1' || u.protocol === 'data:') return route.continue();
    offLoopback.push(u.href);
    return route.abort();
  });
  page = await context.newPage();
  page.on('pageerror', (e) => pageErrors.push(e.message));
  // The browser logs each refused request (401/403, and the 400/409 the alerts check asks for and the
  // page shows as its message); anything else on the console is a script error.
  page.on('console', (m) => { if (m.type() === 'error' && !/status of 40[0139]/.test(m.text())) pageErrors.push(m.text()); });
  browser.on('disconnected', () => { if (!quitting) { console.error('FAIL: Chromium went away'); process.exit(1); } });

  let busy = false;
  const server = http.createServer(async (req, res) => {
    const url = new URL(req.url, 'http://driver');
    const name = url.pathname.slice(1);
    const answer = (code, body) => new Promise((r) => res.writeHead(code, { 'Content-Type': 'text/plain' }).end(body, r));
    if (name === 'quit') {
      quitting = true;
      await browser.close();
      await answer(200, '');
      process.exit(0);
    }
    if (!Object.hasOwn(phases, name)) return answer(404, 'FAIL: usage: /setup|disk|checkpoint|resync|unprotect|revoke|quit');
    if (busy) return answer(409, 'FAIL: another phase is running');
    busy = true;
    try {
      for (const [k, v] of url.searchParams) process.env[k] = v;
      const out = await phases[name]();
      await answer(200, out === undefined ? '' : JSON.stringify(out) + '\n');
    } catch (e) {
      await answer(500, 'FAIL: ' + (e instanceof Failure ? e.message : e.stack || String(e)) + '\n');
    } finally {
      busy = false;
    }
  });
  await new Promise((resolve, reject) => server.once('error', reject).listen(socket, resolve));
}

main().catch((e) => { console.error('FAIL: ' + (e.stack || String(e))); process.exit(1); });
