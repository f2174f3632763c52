// web_ui.js - the headless Chromium driver of tests/integration/web_ui.sh: drives the configuration
// manager page one phase at a time (the shell runs the agent between phases); the login session is
// carried across phases in a Playwright storage-state file. Exit status 0 = the phase's assertions held.
'use strict';
const fs = require('fs');
const path = require('path');

const PW = process.env.PW_DIR;
const { chromium } = require(path.join(PW, 'node_modules', 'playwright-core'));
const BASE = process.env.WEB_URL;          // https://127.0.0.1:PORT
const STATE = process.env.PW_STATE;        // storage state (cookies) between phases
const SHOTS = process.env.SHOT_DIR;
const T = 60000;                            // deadline of each wait (polls, never fixed sleeps)

function fail(msg) { console.error('FAIL: ' + msg); process.exit(1); }

async function withPage(fn) {
  const browser = await chromium.launch({
    executablePath: '/usr/bin/chromium',
    headless: true,
    args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-background-networking'],
  });
  const offLoopback = [];
  try {
    const context = await browser.newContext({
      ignoreHTTPSErrors: true, // the appliance's own certificate; the shell checks it is the one served
      storageState: fs.existsSync(STATE) ? STATE : undefined,
      viewport: { width: 1400, height: 900 },
    });
    // Nothing may be fetched from beyond loopback: anything else is refused and recorded.
    await context.route('**/*', (route) => {
      const u = new URL(route.request().url());
      if (u.hostname === '127.0.0.1' || u.protocol === 'data:') return route.continue();
      offLoopback.push(u.href);
      return route.abort();
    });
    const page = await context.newPage();
    const errors = [];
    page.on('pageerror', (e) => errors.push(e.message));
    page.on('console', (m) => { if (m.type() === 'error' && !/status of 40[13]/.test(m.text())) errors.push(m.text()); });
    await fn(page);
    await context.storageState({ path: STATE });
    if (offLoopback.length) fail('the page tried to fetch beyond loopback: ' + offLoopback.join(', '));
    if (errors.length) fail('script errors on the page: ' + errors.join(' | '));
  } finally {
    await browser.close();
  }
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

const phases = {
  // Log in with the one-time link, set a password, check prerequisites, a wrong proxy, a new key.
  async setup() {
    const password = process.env.ADMIN_PASSWORD;
    await withPage(async (page) => {
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
      }, null, { timeout: T });
      c = await checks(page);
      if (!/proxy/.test(c['TCP reach'][1])) fail('the proxy FAIL has no remedy: ' + JSON.stringify(c['TCP reach']));
      await page.waitForFunction(() => document.querySelector('#proxy-password').placeholder.startsWith('set'), null, { timeout: T });
      if (await page.inputValue('#proxy-password') !== '') fail('the proxy password came back into the form');
      await shot(page, '2-wrong-proxy-fail');
      // Back to a direct connection: PASS again.
      await page.fill('#proxy-address', '');
      await page.fill('#proxy-user', '');
      await page.click('#proxy-save');
      await page.waitForFunction(() => {
        const r = [...document.querySelectorAll('#checks tbody tr td:nth-child(2)')];
        return r.length >= 5 && r.every((x) => x.textContent === 'PASS');
      }, null, { timeout: T });

      // Registration: init's key is never shown again; regenerate shows a new one, once, which is
      // what the agent registers with.
      await tab(page, 'registration');
      await page.waitForFunction(() => document.querySelector('#regkey').textContent.startsWith('issued, not shown'), null, { timeout: T });
      await page.click('#regenerate-key');
      await page.waitForFunction(() => document.querySelector('#regkey').textContent.startsWith('rk1-') &&
        document.querySelector('#regkey-note').textContent.startsWith('Shown only now'), null, { timeout: T });
      await shot(page, '3-registration-key');
      fs.writeFileSync(process.env.KEY_FILE, await page.textContent('#regkey'));
    });
  },

  // The registered agent is listed with a heartbeat; the disk shows state, RPO and its last point.
  async disk() {
    const want = process.env.EXPECT_POINT || '';
    await withPage(async (page) => {
      await page.goto(BASE + '/');
      await page.waitForSelector('#app-view:not([hidden])', { timeout: T });
      await tab(page, 'registration');
      await page.waitForFunction((h) => [...document.querySelectorAll('#agents tbody tr td:nth-child(2)')]
        .some((td) => td.textContent === h), process.env.AGENT_HOST, { timeout: T });
      // the connected agent's boot readiness for Azure, as it reported it
      await page.waitForFunction((h) => [...document.querySelectorAll('#agents tbody tr')]
        .some((tr) => tr.children[1].textContent === h &&
          /^(ready|NOT READY), generation (1|2|unknown): \d+ failed, \d+ warnings of \d+ checks/.test(tr.querySelector('.readiness').textContent)),
        process.env.AGENT_HOST, { timeout: T });
      await tab(page, 'replication');
      const sel = `#disks tr[data-disk="${process.env.DISK_ID}"]`;
      await page.waitForFunction(([s, w]) => {
        const r = document.querySelector(s);
        if (!r) return false;
        const lp = r.querySelector('.last-point').textContent;
        return (w ? lp.startsWith(w + ' ') : lp === 'none') && /^\d+ s$/.test(r.querySelector('.rpo').textContent);
      }, [sel, want], { timeout: T });
      const rpo = await page.textContent(sel + ' .rpo');
      const lp = await page.textContent(sel + ' .last-point');
      const state = await page.textContent(sel + ' .state');
      if (!state.startsWith('protected')) fail('disk state: ' + state);
      // The last hour's plots have points once the sampler has two samples.
      await page.waitForFunction((s) => document.querySelectorAll(s + ' svg.spark polyline').length === 3, sel, { timeout: T });
      await shot(page, '4-replication' + (want ? '-' + want : '-before'));
      if (want) {
        await tab(page, 'points');
        const cmd = await page.waitForSelector(`#points code:text-matches("--point ${want} ")`, { timeout: T });
        const text = await cmd.textContent();
        if (!text.startsWith('replication-appliance restore --state ') || !text.includes('--disk ' + process.env.DISK_ID))
          fail('restore command: ' + text);
        await shot(page, '5-recovery-points');
      }
      console.log(JSON.stringify({ rpo, last_point: lp, state }));
    });
  },

  // The page's own Checkpoint button: a new point appears (asked for by the appliance, not the agent).
  async checkpoint() {
    const old = process.env.EXPECT_POINT;
    await withPage(async (page) => {
      await page.goto(BASE + '/');
      await page.waitForSelector('#app-view:not([hidden])', { timeout: T });
      await tab(page, 'replication');
      const sel = `#disks tr[data-disk="${process.env.DISK_ID}"]`;
      await page.waitForSelector(sel + ' button:has-text("Checkpoint"):not([disabled])', { timeout: T });
      await page.click(sel + ' button:has-text("Checkpoint")');
      await page.waitForFunction(() => document.querySelector('#message').textContent.startsWith('checkpoint requested'), null, { timeout: T });
      await page.waitForFunction(([s, o]) => {
        const r = document.querySelector(s);
        const lp = r && r.querySelector('.last-point').textContent;
        return lp && lp.startsWith('rp-') && !lp.startsWith(o + ' ');
      }, [sel, old], { timeout: T });
      await shot(page, '6-checkpoint-from-page');
      console.log(JSON.stringify({ last_point: await page.textContent(sel + ' .last-point') }));
    });
  },

  // The page's Resync button (accepting the confirmation): the shell checks the resync ran.
  async resync() {
    await withPage(async (page) => {
      page.on('dialog', (d) => d.accept());
      await page.goto(BASE + '/');
      await page.waitForSelector('#app-view:not([hidden])', { timeout: T });
      await tab(page, 'replication');
      const sel = `#disks tr[data-disk="${process.env.DISK_ID}"]`;
      await page.waitForSelector(sel + ' button:has-text("Resync"):not([disabled])', { timeout: T });
      await page.click(sel + ' button:has-text("Resync")');
      await page.waitForFunction(() => document.querySelector('#message').textContent.startsWith('resync requested'), null, { timeout: T });
    });
  },

  // Revoke the agent on the registration view (accepting the confirmation).
  async revoke() {
    await withPage(async (page) => {
      page.on('dialog', (d) => d.accept());
      await page.goto(BASE + '/');
      await page.waitForSelector('#app-view:not([hidden])', { timeout: T });
      await tab(page, 'registration');
      const btn = page.locator('#agents tbody tr td:nth-child(2)', { hasText: process.env.AGENT_HOST })
        .locator('xpath=..').locator('button');
      await btn.click({ timeout: T });
      await page.waitForFunction(() => document.querySelector('#message').textContent.startsWith('revoked'), null, { timeout: T });
      await page.waitForFunction(() => [...document.querySelectorAll('#agents tbody button')].every((b) => b.disabled && b.textContent === 'revoked'),
        null, { timeout: T });
      await shot(page, '7-agent-revoked');
    });
  },
};

const phase = phases[process.argv[2]];
if (!phase) fail('usage: web_ui.js setup|disk|checkpoint|resync|revoke');
phase().catch((e) => fail(e.stack || String(e)));
