// Shared helpers of the console's browser tests: Debian's Chromium driven by playwright-core.
import { chromium } from 'playwright-core';
import { execFileSync } from 'node:child_process';
import { mkdirSync, readFileSync } from 'node:fs';
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

/** `observastack up`'s own argv (the test's stack, by the pid scripts/test-console.sh gives). */
function upArgv() {
  const pid = process.env.CONSOLE_UP_PID;
  if (!pid) throw new Error('CONSOLE_UP_PID is not set (scripts/test-console.sh sets it)');
  return readFileSync(`/proc/${pid}/cmdline`, 'utf8').split('\0').filter(Boolean);
}

/** An instructor token for this stack, minted by its own binary from its own state directory
 * (`observastack token --role instructor`): the console's session is a learner's, and only the
 * instructor may change the runner. */
export function instructorToken() {
  const argv = upArgv();
  const i = argv.indexOf('--state-dir');
  if (i < 0) throw new Error(`observastack up runs without --state-dir: ${argv.join(' ')}`);
  return execFileSync(argv[0], ['--state-dir', argv[i + 1], 'token', '--role', 'instructor', '--subject', 'instructor'], { encoding: 'utf8' }).trim();
}

/** A call to the stack's API with a bearer token (as the CLI makes it, no cookie). */
export async function apiWithToken(token, method, path, body) {
  const resp = await fetch(`${ORIGIN}${path}`, {
    method,
    headers: {
      authorization: `Bearer ${token}`,
      'x-observastack-client': 'e2e',
      ...(body ? { 'content-type': 'application/json' } : {}),
    },
    body: body ? JSON.stringify(body) : undefined,
  });
  return { status: resp.status, body: await resp.text() };
}
