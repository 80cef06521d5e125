// Shared helpers of the console's browser tests: Debian's Chromium driven by playwright-core.
import { chromium } from 'playwright-core';
import { mkdirSync } from 'node:fs';
import { join } from 'node:path';

export const LOGIN_URL = process.env.CONSOLE_LOGIN_URL ?? '';
export const ARTIFACTS = process.env.CONSOLE_ARTIFACTS ?? 'target/console-artifacts';
if (!LOGIN_URL) throw new Error('CONSOLE_LOGIN_URL is not set (scripts/test-console.sh sets it)');
export const ORIGIN = new URL(LOGIN_URL).origin;
mkdirSync(ARTIFACTS, { recursive: true });

export async function launch() {
  return chromium.launch({
    executablePath: '/usr/bin/chromium',
    headless: true,
    args: ['--no-sandbox', '--disable-dev-shm-usage'],
  });
}

export function shot(page, name) {
  return page.screenshot({ path: join(ARTIFACTS, `${name}.png`), fullPage: true });
}
