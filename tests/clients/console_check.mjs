// Drives the web console in headless Chromium as a user would: a wrong token is refused, the
// admin token logs in, a bundle dropped on the page is deployed, the function is invoked from
// the JSON editor (result, headers and the call's log lines shown), the log tail shows its line,
// the metrics tab draws its charts, a key-value item is written and listed, the token is in no
// storage (a reload asks for it again), a console opened by another page refuses it, and a
// function's page that opens the console keeps no handle on it.
// The daemon must have a function "opener" whose HTTP trigger answers an HTML page, and a
// function "dead" with one dead letter.
// Usage: node console_check.mjs URL TOKEN BUNDLE.zip SCREENSHOT_DIR
// Prints one line per step; exits 1 at the first step that fails, after a screenshot of it.
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import puppeteer from 'puppeteer-core';

const [url, token, bundlePath, shots] = process.argv.slice(2);
const chromium = process.env.CHROMIUM || '/usr/bin/chromium';
fs.mkdirSync(shots, { recursive: true });
const profile = fs.mkdtempSync(path.join(os.tmpdir(), 'ember-console-'));
process.on('exit', () => fs.rmSync(profile, { recursive: true, force: true }));

const browser = await puppeteer.launch({
  protocolTimeout: 30000,
  executablePath: chromium,
  headless: true,
  // Root runs it here; a throwaway profile, no network beyond emberd on loopback.
  args: ['--no-sandbox', '--disable-gpu', '--disable-dev-shm-usage', '--no-first-run',
         `--user-data-dir=${profile}`],
});
const page = await browser.newPage();
await page.setViewport({ width: 1280, height: 900 });
const problems = [];
page.on('pageerror', (e) => problems.push(`page error: ${e.message}`));
// Failed loads show up in the steps; a refused token is a 401 the page expects.
page.on('console', (m) => {
  if (m.type() === 'error' && !m.text().startsWith('Failed to load resource')) {
    problems.push(`console error: ${m.text()}`);
  }
});

let n = 0;
async function step(name, action) {
  n += 1;
  try {
    await action();
    await page.screenshot({ path: path.join(shots, `${String(n).padStart(2, '0')}-${name}.png`) });
    console.log(`ok ${n} ${name}`);
  } catch (e) {
    await page.screenshot({ path: path.join(shots, `${String(n).padStart(2, '0')}-${name}-FAILED.png`) })
      .catch(() => {});
    console.log(`FAILED ${n} ${name}: ${e.message}`);
    for (const p of problems) console.log(p);
    await Promise.race([browser.close(), new Promise((done) => setTimeout(done, 5000))]);
    process.exit(1);
  }
}

const textOf = (selector) => page.$eval(selector, (el) => el.textContent);
const waitText = (selector, needle, timeout = 15000) => page.waitForFunction(
  (s, t) => { const el = document.querySelector(s); return el && el.textContent.includes(t); },
  { timeout }, selector, needle);

await step('login-page', async () => {
  await page.goto(`${url}/console`, { waitUntil: 'load' });
  await page.waitForSelector('#login:not([hidden])');
});

await step('wrong-token', async () => {
  await page.type('#token', 'not-the-token');
  await page.click('#login-button');
  await waitText('#login-error', 'not the admin token');
});

await step('logged-in', async () => {
  await page.$eval('#token', (el) => { el.value = ''; });
  await page.type('#token', token);
  await page.click('#login-button');
  await page.waitForSelector('#app:not([hidden])');
  await page.waitForSelector('#function-list tr[data-name="opener"]');
});

await step('deploy-by-drop', async () => {
  const bytes = fs.readFileSync(bundlePath).toString('base64');
  await page.type('#deploy-name', 'console-fn');
  // What a drop of a file from the desktop gives the page: a DataTransfer holding a File.
  await page.evaluate((b64) => {
    const raw = Uint8Array.from(atob(b64), (c) => c.charCodeAt(0));
    const dt = new DataTransfer();
    dt.items.add(new File([raw], 'bundle.zip', { type: 'application/zip' }));
    const zone = document.getElementById('dropzone');
    zone.dispatchEvent(new DragEvent('dragover', { dataTransfer: dt, bubbles: true, cancelable: true }));
    zone.dispatchEvent(new DragEvent('drop', { dataTransfer: dt, bubbles: true, cancelable: true }));
  }, bytes);
  await waitText('#deploy-status', 'console-fn: version 1 deployed');
  await page.waitForSelector('#function-list tr[data-name="console-fn"]');
  await waitText('#function-name', 'console-fn');
  await waitText('#config', 'index.handler');
});

await step('invoke', async () => {
  await page.click('button[data-tab="invoke"]');
  await page.$eval('#event', (el) => { el.value = '{"name": "browser"'; el.dispatchEvent(new Event('input')); });
  await waitText('#event-error', 'Not JSON');
  await page.$eval('#event', (el) => { el.value = '{"name": "browser"}'; el.dispatchEvent(new Event('input')); });
  await page.click('#invoke');
  await waitText('#result-body', '"hello": "browser"');
  await waitText('#result-status', 'HTTP 200');
  await waitText('#result-headers', 'x-ember-request-id');
  await waitText('#result-log', 'greeting browser');
  await waitText('#result-log', 'REPORT RequestId');
  // The list shows the instance the call started (refreshed every 2 s).
  await waitText('#function-list tr[data-name="console-fn"] .instances', '1');
});

await step('log-tail', async () => {
  await page.click('button[data-tab="logs"]');
  await waitText('#log', 'greeting browser');
  // A call made elsewhere shows up in the tail.
  const r = await fetch(`${url}/v1/functions/console-fn/invoke`, { method: 'POST', body: '{"name":"tail"}' });
  if (r.status !== 200) throw new Error(`invoke answered ${r.status}`);
  await waitText('#log', 'greeting tail');
});

await step('metrics-chart', async () => {
  await page.click('button[data-tab="metrics"]');
  await waitText('#totals', '2 calls');
  await page.waitForSelector('#chart-duration .uplot canvas');
  await page.waitForSelector('#chart-calls .uplot canvas');
  const legend = await textOf('#chart-duration');
  if (!legend.includes('duration ms')) throw new Error(`chart legend: ${legend}`);
});

await step('kv', async () => {
  await page.click('button[data-tab="kv"]');
  await page.type('#kv-key', 'greeting');
  await page.type('#kv-value', '{"text": "hi"}');
  await page.click('#kv-put');
  await waitText('#kv-status', 'greeting: version 1');
  await waitText('#kv-items', '{"text":"hi"}');
});

await step('dead-letters', async () => {
  await page.click('#function-list tr[data-name="dead"]');
  await waitText('#function-name', 'dead');
  await page.click('button[data-tab="dead"]');
  await waitText('#dead-letters', 'always failing');
  await page.click('#redrive-all');
  await waitText('#dead-status', '1 sent again');
});

await step('usage', async () => {
  await page.click('header nav button[data-view="usage"]');
  await waitText('#usage', 'console-fn');
});

await step('token-kept-in-memory-only', async () => {
  const stored = await page.evaluate(() =>
    JSON.stringify({ ...sessionStorage }) + JSON.stringify({ ...localStorage }) + document.cookie);
  if (stored.includes(token)) throw new Error('the token is in storage or a cookie');
  await page.reload({ waitUntil: 'load' });
  await page.waitForSelector('#login:not([hidden])');
});

await step('refused-when-opened-by-another-page', async () => {
  // What a function's page of the same origin could do: open the console and script it.
  const opened = new Promise((resolve) => browser.once('targetcreated', (t) => resolve(t.page())));
  await page.evaluate(() => { window.open('/console/'); });
  const other = await opened;
  await other.waitForFunction(() => {
    const e = document.getElementById('login-error');
    return e && e.textContent.includes('opened by another page');
  }, { timeout: 15000 });
  if (await other.$('#login-form')) throw new Error('the login form is there');
  await other.close();
});

await step('a-function-page-cannot-script-the-console', async () => {
  // A function's page, on the same origin, opens the console: the console's opener policy cuts
  // the page's handle (emberd drops the function's own Cross-Origin-Opener-Policy header).
  await page.goto(`${url}/fn/opener/`, { waitUntil: 'load' });
  const opened = new Promise((resolve) => browser.once('targetcreated', (t) => resolve(t.page())));
  await page.evaluate(() => { window.held = window.open('/console/'); });
  const other = await opened;
  await other.waitForSelector('#login-form', { timeout: 15000 });
  const cut = await page.waitForFunction(() => window.held.closed, { timeout: 15000 })
    .then(() => true, () => false);
  if (!cut) throw new Error('the function page still holds the console window');
  await other.close();
});

if (problems.length) {
  for (const p of problems) console.log(p);
  await browser.close();
  process.exit(1);
}
await browser.close();
console.log('console checks passed');
