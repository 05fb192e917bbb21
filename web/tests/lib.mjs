// What every browser test script shares: its environment (from tests/run.sh), named checks that
// print one line each and count failures, assertions, the test database through psql, tokens
// signed like folio-auth's, and waiting for a condition.
import { spawnSync } from 'node:child_process';
import { createHmac } from 'node:crypto';

/** A variable tests/run.sh exports; missing means the script was not started by it. */
export const env = (k) => process.env[k] ?? (() => { throw new Error(`${k} is not set: run web/tests/run.sh`); })();

/** How many checks failed in this script; it exits non-zero when any did. */
export const outcome = { failures: 0 };

/** Runs one named check; a failure is printed and rethrown, since later checks build on earlier ones. */
export async function check(name, fn) {
  const started = Date.now();
  try {
    const detail = await fn();
    console.log(`web-tests: ok  ${name} (${((Date.now() - started) / 1000).toFixed(1)}s)${detail ? ` — ${detail}` : ''}`);
  } catch (e) {
    outcome.failures++;
    console.error(`web-tests: FAIL ${name}: ${e?.stack ?? e}`);
    throw e;
  }
}

export function assert(cond, msg) {
  if (!cond) throw new Error(msg);
}

/** One statement on the run's database; its rows as psql's unaligned output. */
export function sql(q) {
  const r = spawnSync('psql', [env('WEB_TEST_DB'), '-qAtX', '-v', 'ON_ERROR_STOP=1', '-c', q], { encoding: 'utf8' });
  if (r.status !== 0) throw new Error(`psql: ${r.stderr}`);
  return r.stdout.trim();
}

/** A SQL string literal. */
export const lit = (s) => `'${String(s).replace(/'/g, "''")}'`;

export const escapeRegExp = (s) => s.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');

const b64url = (b) => Buffer.from(b).toString('base64url');

/** A bearer token as folio-auth issues them (HS256 with the run's FOLIO_JWT_SECRET). */
export function sign(claims) {
  const head = b64url(JSON.stringify({ alg: 'HS256', typ: 'JWT' }));
  const body = b64url(JSON.stringify(claims));
  const sig = createHmac('sha256', env('FOLIO_JWT_SECRET')).update(`${head}.${body}`).digest('base64url');
  return `${head}.${body}.${sig}`;
}

/** Polls `fn` every 100 ms until it returns something truthy, which is returned. */
export async function until(what, fn, timeout = 30_000) {
  const end = Date.now() + timeout;
  for (;;) {
    const v = await fn();
    if (v) return v;
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

/**
 * Debian's Chromium (CHROMIUM) through playwright-core, and a way to open signed-in pages on it:
 * `newPage(user, name, init)` makes a context (en-US, UTC) whose storage holds `user`'s session
 * when given, runs `init(context)` (more init scripts) and opens a page. Uncaught page errors
 * and console warnings/errors are collected per page name.
 */
export async function launch({ viewport, timeout }) {
  const { chromium } = await import('playwright-core');
  const browser = await chromium.launch({
    executablePath: process.env.CHROMIUM ?? '/usr/bin/chromium',
    headless: true,
    args: ['--disable-dev-shm-usage'],
  });
  const pageErrors = [];
  const consoleLog = [];
  async function newPage(user, name, init) {
    const context = await browser.newContext({ viewport, locale: 'en-US', timezoneId: 'UTC' });
    // (Init scripts run in every frame, also a PDF viewer's, which has no localStorage.)
    if (user) await context.addInitScript((u) => window.localStorage && (localStorage.getItem('folio.session') || localStorage.setItem('folio.session', u)), JSON.stringify(user));
    if (init) await init(context);
    const page = await context.newPage();
    page.setDefaultTimeout(timeout);
    page.on('pageerror', (e) => pageErrors.push(`${name}: ${e.message}`));
    page.on('console', (m) => ['warning', 'error'].includes(m.type()) && consoleLog.push(`${name} ${m.type()}: ${m.text()}`));
    return { context, page };
  }
  return { browser, newPage, pageErrors, consoleLog };
}
