// Drives the dashboard at / in headless Debian chromium and proves that it updates live: it waits for the row of
// $SKU, sells $SALE_QUANTITY (default 3) of it through the HTTP API, and waits, without reloading, for the row to
// show the sale. It also checks sorting, the status filter, the counters and the sales chart, saves a full-page
// screenshot to $SCREENSHOT_PATH and prints a one-line JSON summary. Any failure (including a console error or a
// failed request in the page) prints why, still saves a screenshot when it can, and exits non-zero.
//
//   STOCKROOM_URL=http://127.0.0.1:8080 SKU=TSHIRT-M SCREENSHOT_PATH=/tmp/dashboard.png node dashboard.mjs
import { chromium } from 'playwright-core';

const base = (process.env.STOCKROOM_URL || '').replace(/\/+$/, '');
const screenshotPath = process.env.SCREENSHOT_PATH || '';
const sku = process.env.SKU || '';
const quantity = Number(process.env.SALE_QUANTITY || 3);
const chromiumPath = process.env.CHROMIUM_PATH || '/usr/bin/chromium';
const STEP_TIMEOUT_MS = 15000;
const OVERALL_TIMEOUT_MS = 120000;

const problems = []; // console errors and failed requests seen in the page
let browser = null;
let page = null;
let closing = false;

function parseFigure(text) {
  const cleaned = String(text ?? '').replace(/[^0-9.-]/g, '');
  return cleaned === '' ? NaN : Number(cleaned);
}

async function fail(message) {
  closing = true;
  let saved = false;
  if (page && screenshotPath) {
    try {
      await page.screenshot({ path: screenshotPath, fullPage: true, timeout: 10000 });
      saved = true;
    } catch {
      // the page may be gone; the reason below matters more
    }
  }
  console.error(`dashboard test failed: ${message}`);
  for (const p of problems) console.error(`  in the page: ${p}`);
  console.log(JSON.stringify({ ok: false, error: message, problems, screenshot: saved ? screenshotPath : null }));
  if (browser) await browser.close().catch(() => {});
  process.exit(1);
}

function check(condition, message) {
  if (!condition) throw new Error(message);
}

async function api(method, path, body) {
  const res = await fetch(`${base}${path}`, {
    method,
    headers: body === undefined ? {} : { 'content-type': 'application/json' },
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  const text = await res.text();
  let json = null;
  try {
    json = text ? JSON.parse(text) : null;
  } catch {
    // not JSON: reported with the status below
  }
  if (!res.ok) throw new Error(`${method} ${path} answered ${res.status}: ${text.slice(0, 300)}`);
  return json;
}

const rowSelector = `#health-rows tr[data-sku=${JSON.stringify(sku)}]`;

async function readRow() {
  return page.$eval(rowSelector, (tr) => {
    const out = {};
    for (const td of tr.querySelectorAll('td[data-field]')) out[td.dataset.field] = td.textContent.trim();
    return out;
  });
}

async function run() {
  check(base, 'STOCKROOM_URL is not set');
  check(sku, 'SKU is not set');
  check(screenshotPath, 'SCREENSHOT_PATH is not set');
  check(Number.isInteger(quantity) && quantity > 0, 'SALE_QUANTITY must be a positive whole number');

  browser = await chromium.launch({
    executablePath: chromiumPath,
    args: [
      '--headless',
      '--no-sandbox',
      '--disable-gpu',
      '--disable-quic',
      '--no-first-run',
      '--disable-background-networking',
      '--disable-component-update',
      '--disable-sync',
    ],
  });
  const context = await browser.newContext({ viewport: { width: 1360, height: 900 }, locale: 'en-GB' });
  page = await context.newPage();
  page.setDefaultTimeout(STEP_TIMEOUT_MS);
  page.on('console', (m) => {
    if (m.type() === 'error') problems.push(`console error: ${m.text()}`);
  });
  page.on('pageerror', (e) => problems.push(`uncaught: ${e.message}`));
  page.on('requestfailed', (r) => {
    if (!closing) problems.push(`request failed: ${r.method()} ${r.url()} (${r.failure()?.errorText})`);
  });
  page.on('response', (r) => {
    if (r.status() >= 400) problems.push(`request answered ${r.status()}: ${r.request().method()} ${r.url()}`);
  });
  let navigations = 0;
  page.on('framenavigated', (f) => {
    if (f === page.mainFrame()) navigations++;
  });

  // 1. The page loads and lists the SKU, and the live stream is connected.
  await page.goto(`${base}/`, { waitUntil: 'domcontentloaded' });
  await page.waitForSelector(rowSelector).catch(async () => {
    const error = await page.textContent('#error').catch(() => '');
    throw new Error(`no row for ${sku} within ${STEP_TIMEOUT_MS} ms${error ? ` (the page says: ${error})` : ''}`);
  });
  await page.waitForSelector('#connection[data-state="live"]').catch(() => {
    throw new Error(`the event stream did not connect within ${STEP_TIMEOUT_MS} ms`);
  });
  const before = await readRow();
  const beforeSold = parseFigure(before.units_sold_24h);
  const beforeAvailable = parseFigure(before.available);
  check(Number.isFinite(beforeSold) && Number.isFinite(beforeAvailable), `unreadable row: ${JSON.stringify(before)}`);
  // A mark in the page that a reload would wipe out.
  await page.evaluate(() => {
    window.__stockroomNotReloaded = true;
  });

  // 2. A sale through the API shows up in the row without a reload.
  const soldAt = Date.now();
  const held = await api('POST', '/v1/reservations', { lines: [{ sku, quantity }] });
  check(held && held.reservation_id, `no reservation_id in ${JSON.stringify(held)}`);
  await api('POST', `/v1/reservations/${encodeURIComponent(held.reservation_id)}/commit`);
  const want = { sold: beforeSold + quantity, available: beforeAvailable - quantity };
  try {
    await page.waitForFunction(
      ({ selector, want }) => {
        const tr = document.querySelector(selector);
        if (!tr) return false;
        const figure = (field) =>
          Number(tr.querySelector(`td[data-field="${field}"]`)?.textContent.replace(/[^0-9.-]/g, ''));
        return figure('units_sold_24h') === want.sold && figure('available') === want.available;
      },
      { selector: rowSelector, want },
      { timeout: STEP_TIMEOUT_MS },
    );
  } catch {
    const now = await readRow().catch(() => null);
    throw new Error(
      `the row did not update live within ${STEP_TIMEOUT_MS} ms: wanted units_sold_24h ${want.sold} and ` +
        `available ${want.available}, it shows ${JSON.stringify(now)}`,
    );
  }
  const liveUpdateMs = Date.now() - soldAt;
  const after = await readRow();
  check(await page.evaluate(() => window.__stockroomNotReloaded === true), 'the page was reloaded');
  check(navigations === 1, `the page navigated ${navigations} times`);

  // 3. The counters agree with the rows' statuses.
  const counts = await page.evaluate(() => {
    const rows = [...document.querySelectorAll('#health-rows tr[data-sku]')];
    const counter = (name) => Number(document.querySelector(`[data-counter="${name}"]`)?.dataset.value);
    return {
      rows: rows.length,
      low_rows: rows.filter((r) => r.dataset.status === 'low').length,
      depleted_rows: rows.filter((r) => r.dataset.status === 'depleted').length,
      low: counter('low'),
      depleted: counter('depleted'),
      skus: counter('skus'),
    };
  });
  check(counts.low === counts.low_rows, `low counter ${counts.low} but ${counts.low_rows} low rows`);
  check(counts.depleted === counts.depleted_rows, `depleted counter ${counts.depleted} but ${counts.depleted_rows} rows`);
  check(counts.skus === counts.rows, `SKU counter ${counts.skus} but ${counts.rows} rows`);

  // 4. Sorting by a column header, both ways.
  const availableOrder = () =>
    page.$$eval('#health-rows td[data-field="available"]', (tds) => tds.map((td) => Number(td.dataset.value)));
  await page.click('th[data-sort="available"] button');
  const ascending = await availableOrder();
  check(ascending.every((v, i) => i === 0 || ascending[i - 1] <= v), `not ascending: ${ascending}`);
  await page.click('th[data-sort="available"] button');
  const descending = await availableOrder();
  check(descending.every((v, i) => i === 0 || descending[i - 1] >= v), `not descending: ${descending}`);
  await page.click('th[data-sort="status"] button');

  // 5. The status filter.
  if (counts.depleted > 0) {
    await page.selectOption('#filter-status', 'depleted');
    const statuses = await page.$$eval('#health-rows tr[data-sku]', (rows) => rows.map((r) => r.dataset.status));
    check(
      statuses.length === counts.depleted && statuses.every((s) => s === 'depleted'),
      `status filter shows ${statuses}`,
    );
    await page.selectOption('#filter-status', '');
  }

  // 6. Clicking the row draws its sales: hourly for 48 h, and daily for 30 days.
  const barsDrawn = async () => {
    await page.waitForFunction(() => document.querySelectorAll('#chart svg rect.bar').length > 0);
    return page.$$eval('#chart svg rect.bar', (bars) => bars.map((b) => Number(b.dataset.units)));
  };
  await page.click(rowSelector);
  await page.waitForSelector('#chart-panel:not([hidden])');
  const hourly = await barsDrawn();
  check(hourly.reduce((a, b) => a + b, 0) >= quantity, `hourly chart shows ${hourly} units`);
  await page.click('#range-day');
  await page.waitForSelector('#range-day[aria-pressed="true"]');
  await page.waitForFunction(() => document.querySelector('#chart')?.dataset.state !== 'loading');
  const daily = await barsDrawn();
  check(daily.reduce((a, b) => a + b, 0) >= quantity, `daily chart shows ${daily} units`);
  await page.click('#range-hour');
  await page.waitForFunction(() => document.querySelector('#chart')?.dataset.state !== 'loading');
  await barsDrawn();

  const connection = await page.getAttribute('#connection', 'data-state');
  const lastUpdated = await page.textContent('#last-updated');
  // Let the highlight of the change fade before the picture is taken.
  await page.waitForTimeout(1800);
  await page.screenshot({ path: screenshotPath, fullPage: true });
  check(problems.length === 0, `${problems.length} problem(s) in the page`);

  closing = true;
  await browser.close();
  console.log(
    JSON.stringify({
      ok: true,
      sku,
      sold: quantity,
      before: { units_sold_24h: before.units_sold_24h, available: before.available },
      after: { units_sold_24h: after.units_sold_24h, available: after.available, status: after.status },
      live_update_ms: liveUpdateMs,
      rows: counts.rows,
      low: counts.low,
      depleted: counts.depleted,
      chart_bars_48h: hourly.length,
      chart_bars_30d: daily.length,
      connection,
      last_updated: lastUpdated,
      screenshot: screenshotPath,
    }),
  );
}

setTimeout(() => fail(`no result within ${OVERALL_TIMEOUT_MS} ms`), OVERALL_TIMEOUT_MS).unref();
run().catch((err) => fail(err && err.message ? err.message : String(err)));
