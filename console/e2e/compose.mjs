// The console under Docker Compose (scripts/test-compose.sh): the one-time login URL that
// `scripts/compose-env.sh login` prints, the catalog, a scenario run to its debrief with the fix
// applied through the Config form, and the Observability switch with the stack's Service Health
// page and Grafana dashboards. Each step saves a screenshot in $CONSOLE_ARTIFACTS.
import assert from 'node:assert/strict';
import { readdirSync } from 'node:fs';
import { ORIGIN, LOGIN_URL, launch, shot } from './lib.mjs';

const SERVICE_HEALTH_URL = process.env.SERVICE_HEALTH_URL ?? '';
const GRAFANA_URL = process.env.GRAFANA_URL ?? '';
const browser = await launch();
const context = await browser.newContext({ viewport: { width: 1280, height: 800 } });
const page = await context.newPage();

async function step(name, f) {
  const started = Date.now();
  try {
    await f();
    await shot(page, `compose-${name}`);
    process.stderr.write(`  ok   ${name} (${((Date.now() - started) / 1000).toFixed(1)} s)\n`);
  } catch (err) {
    await shot(page, `compose-FAILED-${name}`).catch(() => {});
    process.stderr.write(`  FAIL ${name}: ${err?.stack ?? err}\n`);
    throw err;
  }
}

try {
  await step('01-login', async () => {
    await page.goto(LOGIN_URL);
    await page.waitForURL(`${ORIGIN}/console/**`);
    assert.ok(!page.url().includes('code='), 'the one-time code leaves the address bar');
    await page.getByRole('heading', { name: 'Scenarios', level: 1 }).waitFor();
    await page.locator('#conn.online').waitFor();
  });

  await step('02-catalog', async () => {
    // Every scenario file baked into the orchestrator's image has a card.
    const shipped = readdirSync('../scenarios').filter((f) => /\.(ya?ml|toml)$/.test(f)).length;
    await page.locator('.card[data-scenario]').nth(shipped - 1).waitFor();
    assert.equal(await page.locator('.card[data-scenario]').count(), shipped);
  });

  await step('03-start-bad-release-checkout', async () => {
    await page.getByLabel('Pace of a run').selectOption('0.1');
    await page.getByRole('button', { name: 'Start Checkout broke after release 2.4.1' }).click();
    await page.getByRole('heading', { name: /Active run: Checkout broke after release 2\.4\.1/ }).waitFor();
    await page.locator('[data-run-state="incident"]').first().waitFor({ timeout: 60_000 });
  });

  await step('04-hint-arrives', async () => {
    await page.locator('.feed li.hint').first().waitFor({ timeout: 90_000 });
  });

  await step('05-rollback-through-the-config-form', async () => {
    await page.getByRole('link', { name: 'Config' }).click();
    await page.waitForFunction(() => document.querySelector('[data-field="release.version"]')?.value === '2.4.1',
      null, { timeout: 30_000 });
    await page.getByLabel('version').selectOption('2.4.0');
    await page.getByRole('button', { name: 'Review changes' }).click();
    await page.getByRole('button', { name: /^Apply 1 change/ }).click();
    await page.getByRole('status').filter({ hasText: /Applied: shop is at revision/ }).waitFor();
  });

  await step('06-debrief', async () => {
    await page.getByRole('heading', { name: 'Debrief', level: 1 }).waitFor({ timeout: 180_000 });
    await page.locator('[data-kpi="ttr"]').filter({ hasText: /\d/ }).waitFor();
    await page.getByRole('heading', { name: 'What broke' }).waitFor();
    // The rollback through the Config form is the targeted fix, made by the console through
    // the control gateway.
    await page.locator('[data-outcome="resolved"][data-grade="targeted"]').waitFor();
    await page.locator('[data-verdict="targeted"]').first().waitFor();
  });

  await step('07-observability-switch', async () => {
    await page.getByRole('link', { name: 'Observability' }).click();
    const pick = page.getByLabel('Dashboard');
    await pick.waitFor();
    const titles = await pick.locator('option').allTextContents();
    assert.deepEqual(titles, ['Service Health', 'Service overview', 'Gateway & pools', 'Database', 'Scenario']);
    // Service Health first, served by the lake through the observability gateway.
    assert.equal(await page.locator('iframe.grafana').getAttribute('src'), SERVICE_HEALTH_URL);
    const frame = page.frameLocator('iframe.grafana');
    await frame.getByRole('heading', { name: 'Service Health', level: 1 }).waitFor();
    // The page's own reads pass through the same gateway path, and list the stack's services.
    // The lake lists a service once its facts are flushed (once a minute), and the page reads
    // the list when it loads: open it again until the shop is there. Again from its plain
    // address: the page writes its window into its own URL, so a reload would keep the window
    // of a first load made before any flush, and never see the facts that came after it.
    const deadline = Date.now() + 150_000;
    while ((await frame.locator('#service option', { hasText: /^shop$/ }).count()) === 0) {
      if (Date.now() > deadline) throw new Error('the Service Health page never listed the shop');
      await page.waitForTimeout(5_000);
      const health = page.frames().find((f) => f.url().startsWith(SERVICE_HEALTH_URL));
      if (health) await health.evaluate(() => location.replace(location.pathname));
      await frame.getByRole('heading', { name: 'Service Health', level: 1 }).waitFor();
    }
    // Grafana's dashboards are offered at the stack's Grafana address (Grafana itself does not
    // run in this test: it cannot be fetched here).
    await pick.selectOption({ label: 'Database' });
    const href = await page.getByRole('link', { name: 'open in a new tab' }).getAttribute('href');
    assert.equal(href, `${GRAFANA_URL}/d/observastack-database/database?kiosk`);
  });
} finally {
  await browser.close();
}
