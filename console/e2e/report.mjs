// Measures, against the running stack: first (contentful) paint of the console in headless
// Chromium, cold cache, after login; and the gzipped size of the built JS+CSS. Prints the
// figures and writes them to $CONSOLE_ARTIFACTS/report.json; it asserts nothing about them.
import { existsSync, readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { gzipSync } from 'node:zlib';
import { ARTIFACTS, LOGIN_URL, ORIGIN, launch } from './lib.mjs';

const dist = process.env.CONSOLE_DIST ?? 'dist';
const assets = readdirSync(join(dist, 'assets')).filter((f) => /\.(js|css)$/.test(f));
let raw = 0;
let gzip = 0;
for (const f of assets) {
  const bytes = readFileSync(join(dist, 'assets', f));
  raw += bytes.length;
  gzip += gzipSync(bytes, { level: 9 }).length;
}

const RUNS = Number(process.env.CONSOLE_REPORT_RUNS ?? 10);
const browser = await launch();
// The login code works once: one signed-in context, whose cookie each measured context reuses.
// After the e2e run the code is spent, and its session is handed over in CONSOLE_SESSION_FILE.
const session = process.env.CONSOLE_SESSION_FILE;
let cookies;
if (session && existsSync(session)) {
  cookies = JSON.parse(readFileSync(session, 'utf8')).cookies;
} else {
  const login = await browser.newContext();
  const lp = await login.newPage();
  await lp.goto(LOGIN_URL);
  await lp.waitForURL(`${ORIGIN}/console/**`);
  cookies = await login.cookies();
  await login.close();
}

async function measure() {
  const fcp = [];
  const ready = [];
  for (let i = 0; i < RUNS; i++) {
    const ctx = await browser.newContext({ viewport: { width: 1280, height: 800 } });
    await ctx.addCookies(cookies);
    const page = await ctx.newPage();
    await page.goto(`${ORIGIN}/console/#/scenarios`);
    // "Meaningful": the catalog's Start buttons are on screen.
    await page.getByRole('button', { name: /^Start / }).first().waitFor();
    const m = await page.evaluate(() => {
      const paint = performance.getEntriesByType('paint').find((e) => e.name === 'first-contentful-paint');
      return { fcp: paint?.startTime ?? null, now: performance.now() };
    });
    fcp.push(m.fcp);
    ready.push(m.now);
    await ctx.close();
  }
  return { fcp, ready };
}

const idle = await measure();
// Again while a scenario's load (20 journeys/s through the debug-built stack) is running.
const api = await browser.newContext();
await api.addCookies(cookies);
const csrf = { 'x-observastack-csrf': '1' };
await api.request.post(`${ORIGIN}/api/reset`, { headers: csrf });
const started = await api.request.post(`${ORIGIN}/api/runs`, { headers: csrf, data: { scenario: 'bad-release-checkout' } });
if (!started.ok()) throw new Error(`cannot start a run to measure under load: ${started.status()} ${await started.text()}`);
await new Promise((r) => setTimeout(r, 5000));
const loaded = await measure();
await api.request.post(`${ORIGIN}/api/runs/current/stop`, { headers: csrf });
await api.close();
await browser.close();

const median = (xs) => {
  const s = xs.filter((x) => x !== null).sort((a, b) => a - b);
  return s.length ? s[Math.floor(s.length / 2)] : null;
};
const figures = ({ fcp, ready }) => ({
  first_contentful_paint_ms: { median: median(fcp), max: Math.max(...fcp), all: fcp.map((x) => Math.round(x)) },
  catalog_visible_ms: { median: median(ready), max: Math.max(...ready) },
});
const report = {
  runs: RUNS,
  idle: figures(idle),
  under_load: figures(loaded),
  assets: { files: assets, raw_bytes: raw, gzip_bytes: gzip },
};
writeFileSync(join(ARTIFACTS, 'report.json'), JSON.stringify(report, null, 2));
for (const [label, f] of [['idle stack', report.idle], ['during a run', report.under_load]]) {
  process.stdout.write(
    `console, ${label}: first contentful paint median ${f.first_contentful_paint_ms.median?.toFixed(0)} ms, ` +
      `max ${f.first_contentful_paint_ms.max.toFixed(0)} ms; catalog rendered median ` +
      `${f.catalog_visible_ms.median.toFixed(0)} ms, max ${f.catalog_visible_ms.max.toFixed(0)} ms (${RUNS} cold loads)\n`,
  );
}
process.stdout.write(`console JS+CSS: ${(gzip / 1024).toFixed(1)} KiB gzipped (${(raw / 1024).toFixed(1)} KiB raw)\n`);
