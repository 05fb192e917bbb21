// Browser checks of the web app, in Debian's Chromium driven by playwright-core, against the
// real cluster behind the gateway. Started by tests/run.sh, which exports:
//   WEB_TEST_BASE (gateway URL), WEB_TEST_DB (the test database), WEB_TEST_WORK (logs, edge.pid),
//   WEB_TEST_EDGE_CMD / WEB_TEST_EDGE_PORT (to restart the edge), WEB_TEST_BUILD (web/build),
//   FOLIO_JWT_SECRET (to sign a second and third agency's tokens), CHROMIUM.
// Optional: FOLIO_WEB_SCREENSHOTS=<dir>, FOLIO_WEB_RESULTS=<file>.
import { spawn, execFileSync } from 'node:child_process';
import { createHash, randomUUID } from 'node:crypto';
import { readFileSync, writeFileSync, readdirSync, statSync, openSync } from 'node:fs';
import { gzipSync } from 'node:zlib';
import { join } from 'node:path';
import { env, outcome, check, assert, sql, lit, sign, launch } from './lib.mjs';
import { audit } from './axe.mjs';

const BASE = env('WEB_TEST_BASE');
const WORK = env('WEB_TEST_WORK');
const SHOTS = process.env.FOLIO_WEB_SCREENSHOTS;
const results = {};
const t0 = Date.now();

// ---------- helpers ----------
function percentile(xs, p) {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.min(s.length - 1, Math.ceil((p / 100) * s.length) - 1)];
}

/** An agency made in SQL (the API has no agency creation), with a token signed like folio-auth's. */
function makeAgency(name, proposals, clients = 3) {
  const agency = randomUUID();
  const user = randomUUID();
  sql(`BEGIN;
    INSERT INTO agencies (id, name) VALUES (${lit(agency)}, ${lit(name)});
    INSERT INTO users (id, agency_id, email, name, role) VALUES (${lit(user)}, ${lit(agency)}, ${lit(`editor@${agency.slice(0, 8)}.example`)}, 'Test Editor', 'editor');
    INSERT INTO clients (id, agency_id, name, email, company)
      SELECT gen_random_uuid(), ${lit(agency)}, 'Contact ' || i, 'c' || i || '@example.com', ${lit(name)} || ' client ' || i FROM generate_series(1, ${clients}) i;
    INSERT INTO proposals (id, agency_id, client_id, owner_id, title, status, currency, valid_until, subtotal_minor, tax_minor, total_minor)
      SELECT gen_random_uuid(), ${lit(agency)}, c.id, ${lit(user)}, ${lit(name)} || ' proposal ' || lpad(i::text, 4, '0'),
             (ARRAY['draft','sent','viewed','accepted','declined','withdrawn'])[1 + i % 6], 'EUR', DATE '2027-01-01' + i,
             i * 1000, i * 190, i * 1190
      FROM generate_series(1, ${proposals}) i
      CROSS JOIN LATERAL (SELECT id FROM clients WHERE agency_id = ${lit(agency)} ORDER BY id OFFSET i % ${clients} LIMIT 1) c;
    COMMIT;`);
  const now = Math.floor(Date.now() / 1000);
  const token = sign({ sub: user, agency_id: agency, role: 'editor', iat: now, exp: now + 3600 });
  return { name: 'Test Editor', email: `editor@${agency.slice(0, 8)}.example`, role: 'editor', token, agency: name, agency_id: agency };
}

const { browser, newPage: openPage, pageErrors, consoleLog } = await launch({ viewport: { width: 1200, height: 860 }, timeout: 20_000 });
// Records when each text first appears in the proposal title (page clock = this host's clock).
const newPage = (user, name) =>
  openPage(user, name, (context) =>
    context.addInitScript(() => {
      window.__seen = {};
      window.__texts = new Set();
      new MutationObserver(() => {
        const h = document.querySelector('[data-testid=proposal-title]');
        if (h) window.__seen[h.textContent] ??= Date.now();
        window.__texts.add(document.body?.innerText ?? '');
      }).observe(document, { subtree: true, childList: true, characterData: true });
    }),
  );
const seenAt = (page, title, timeout = 20_000) =>
  page.waitForFunction((t) => window.__seen[t], title, { timeout, polling: 'raf' }).then((h) => h.jsonValue());
const text = (page, testid) => page.getByTestId(testid).first().innerText();
/** Waits for the action message to read `want`; on timeout says what it read instead. */
async function message(page, want, timeout = 20_000) {
  try {
    await page.getByTestId('message').filter({ hasText: want }).waitFor({ timeout });
  } catch (e) {
    const got = await page.getByTestId('message').innerText().catch(() => '(no message)');
    throw new Error(`expected the message "${want}", the page says "${got}"`);
  }
}
/**
 * Holds a page's live reads of one shape (the synced rows cannot arrive) until release().
 * `poke` is SQL that changes a row of that shape: the long-poll already open returns with it,
 * the next one is held. Resolves once a live read is held.
 */
async function holdShape(page, table, poke) {
  let release;
  const gate = new Promise((r) => (release = r));
  let heldSeen;
  const held = new Promise((r) => (heldSeen = r));
  const live = (u) => u.pathname === '/v1/shape' && u.searchParams.get('table') === table && u.searchParams.get('live') === 'true';
  await page.route(live, async (route) => {
    heldSeen();
    await gate;
    await route.continue().catch(() => {});
  });
  sql(poke);
  await held;
  return async () => {
    release();
    await page.unroute(live);
  };
}
async function shot(page, file) {
  if (SHOTS) await page.screenshot({ path: join(SHOTS, file), fullPage: false });
}

const devUsers = await (await fetch(`${BASE}/dev-users.json`)).json();
const sam = devUsers.find((u) => u.email.startsWith('sam@'));
assert(sam?.role === 'editor', `dev-users.json has no editor Sam: ${JSON.stringify(devUsers).slice(0, 300)}`);
const draftId = sql(`SELECT id FROM proposals WHERE title = 'Brand refresh and website'`);
const fleetId = sql(`SELECT id FROM proposals WHERE title = 'Fleet dashboard MVP'`);
const other = makeAgency('Other Agency', 3);
const big = makeAgency('Big Agency', 1000, 8);

try {
  // ---------- 1. sign-in ----------
  const S = await newPage(null, 'signin');
  await check('sign-in: / lists the demo users from /dev-users.json, choosing one shows their agency', async () => {
    await S.page.goto(BASE + '/');
    await S.page.getByRole('button', { name: /Sam Okafor/ }).click();
    await S.page.getByTestId('list-status').filter({ hasText: '4 of 4 proposals' }).waitFor();
    const names = await S.page.getByRole('button', { name: /Sign out/ }).count();
    assert(names === 1, 'no sign-out button');
    return `${devUsers.length} demo users listed`;
  });
  await S.context.close();

  // ---------- 2. list ----------
  const A1 = await newPage(sam, 'A1');
  await check('list: counts per status, filter by status and client, search, sort', async () => {
    const p = A1.page;
    await p.goto(BASE + '/');
    await p.getByTestId('list-status').filter({ hasText: '4 of 4 proposals' }).waitFor();
    const counts = {};
    for (const s of ['all', 'draft', 'sent', 'accepted', 'declined', 'viewed', 'withdrawn']) counts[s] = Number(await text(p, `count-${s}`));
    assert(JSON.stringify(counts) === JSON.stringify({ all: 4, draft: 1, sent: 1, accepted: 1, declined: 1, viewed: 0, withdrawn: 0 }), `counts ${JSON.stringify(counts)}`);
    await p.getByRole('button', { name: /^Sent/ }).click();
    await p.getByTestId('list-status').filter({ hasText: '1 of 4' }).waitFor();
    assert((await p.getByTestId('proposal-row').innerText()).includes('Menu photography'), 'the sent filter does not show Menu photography');
    await p.getByRole('button', { name: /^All/ }).click();
    await p.getByLabel('Search titles').fill('FLEET');
    await p.getByTestId('list-status').filter({ hasText: '1 of 4' }).waitFor();
    assert((await p.getByTestId('proposal-row').innerText()).includes('Fleet dashboard MVP'), 'search');
    await p.getByLabel('Search titles').fill('');
    await p.getByLabel('Client').selectOption({ label: 'Acme Robotics' });
    await p.getByTestId('list-status').filter({ hasText: '2 of 4' }).waitFor();
    await p.getByLabel('Client').selectOption('all');
    await p.getByLabel('Sort by').selectOption('title');
    const titles = await p.locator('[data-testid=proposal-row] td.title').allInnerTexts();
    assert(JSON.stringify(titles) === JSON.stringify([...titles].sort((a, b) => a.localeCompare(b))), `not sorted by title: ${titles}`);
    await shot(p, 'list.png');
  });

  await check('proposal: client, line items and totals in integer minor units, formatted per currency', async () => {
    const p = A1.page;
    await p.goto(`${BASE}/proposals/${fleetId}`);
    await p.getByTestId('total').filter({ hasText: '$' }).waitFor();
    const total = await text(p, 'total');
    assert(total === '$38,200.00', `Fleet dashboard total shows ${total}, expected $38,200.00`);
    assert((await text(p, 'client')).includes('Orbit Logistics'), 'client name');
    await p.getByTestId('line-item').nth(2).waitFor();
    assert((await p.getByTestId('line-item').count()) === 3, 'three line items');
    assert((await p.getByRole('button', { name: 'Withdraw' }).count()) === 0, 'an accepted proposal offers no transition');
    return `total ${total}`;
  });

  // ---------- 3. live edits between two contexts of one agency; another agency sees nothing ----------
  const A2 = await newPage(sam, 'A2');
  const B = await newPage(other, 'B');
  const leaked = [];
  B.page.on('response', async (r) => {
    if (!r.url().includes('/v1/')) return;
    const body = await r.text().catch(() => '');
    if (body.includes(draftId) || body.includes('Northwind') || body.includes('Brand refresh')) leaked.push(r.url());
  });
  await B.page.goto(BASE + '/');
  await B.page.getByTestId('list-status').filter({ hasText: '3 of 3 proposals' }).waitFor();
  await A1.page.goto(`${BASE}/proposals/${draftId}`);
  await A2.page.goto(`${BASE}/proposals/${draftId}`);
  await A1.page.getByTestId('activity-status').filter({ hasText: 'Up to date' }).waitFor();
  await A2.page.getByTestId('activity-status').filter({ hasText: 'Up to date' }).waitFor();

  async function rename(page, title) {
    await page.getByRole('button', { name: 'Edit details' }).click();
    await page.getByLabel('Title').fill(title);
    const clicked = Date.now();
    await page.getByRole('button', { name: 'Save details' }).click();
    return clicked;
  }
  await check('instant edits: 20 renames in one context appear in another of the same agency (p50/p99)', async () => {
    const lat = [];
    const optimistic = [];
    const settled = [];
    for (let i = 0; i < 20; i++) {
      const title = `Brand refresh · edit ${i + 1}`;
      const clicked = await rename(A1.page, title);
      optimistic.push((await seenAt(A1.page, title)) - clicked);
      lat.push((await seenAt(A2.page, title)) - clicked);
      await message(A1.page, 'Proposal details: saved.');
      settled.push(Date.now() - clicked);
    }
    results.editPropagationMs = { p50: percentile(lat, 50), p99: percentile(lat, 99), samples: lat };
    results.optimisticMs = { p50: percentile(optimistic, 50), p99: percentile(optimistic, 99) };
    results.settledMs = { p50: percentile(settled, 50), p99: percentile(settled, 99) };
    const settledBy = await A1.page.evaluate(() => window.__folioSettled);
    assert(settledBy.txid >= 20 && settledBy.version === 0, `writes settled by ${JSON.stringify(settledBy)}, expected by txid`);
    assert(results.optimisticMs.p99 < 500, `the optimistic title took ${results.optimisticMs.p99} ms`);
    return `other context p50 ${results.editPropagationMs.p50} ms, p99 ${results.editPropagationMs.p99} ms; optimistic p50 ${results.optimisticMs.p50} ms; settled (txid in the shape) p50 ${results.settledMs.p50} ms`;
  });

  await check('collaborative body: typed in one context, live in the other with its cursor, persisted into the proposal', async () => {
    for (const P of [A1, A2]) {
      await P.page.getByTestId('body-link').click();
      await P.page.locator('[data-testid=collab-body][data-status=connected]').waitFor();
    }
    const sentence = 'Our team delivers the new site in six weeks.';
    const area = A1.page.getByTestId('collab-text');
    await area.click();
    await area.press('Control+End');
    // A1's first append of the document (its producer claiming its epoch) takes 400 ms, as on
    // a slow network: what is typed meanwhile is held back by the producer and must follow it
    // (in a browser, the held batches were once dropped, and A2 stopped at the first letter).
    const doc = `**/v1/yjs/*/docs/proposals/${draftId}`;
    let slowed = 0;
    const slowFirstAppend = async (route) => {
      if (route.request().method() === 'POST' && slowed++ === 0) await new Promise((r) => setTimeout(r, 400));
      await route.continue();
    };
    await A1.page.route(doc, slowFirstAppend);
    const typed = Date.now();
    await area.pressSequentially(` ${sentence}`, { delay: 5 });
    // The route stays until A2 has the whole sentence: typing can end inside the first append's
    // 400 ms, and the held-back rest is posted only after it (unrouting earlier raced that post).
    await A2.page.waitForFunction((s) => document.querySelector('[data-testid=collab-text]')?.value.includes(s), sentence, { timeout: 20_000 }).catch(async (e) => {
      const dbg = (P) => P.page.evaluate(() => { const c = window.__collab; return c ? { text: c.text(), value: c.value(), synced: c.synced(), sv: c.sv() } : null; });
      throw new Error(`${e.message}; A1 ${JSON.stringify(await dbg(A1))}, A2 ${JSON.stringify(await dbg(A2))}, A2 textarea ${JSON.stringify(await A2.page.getByTestId('collab-text').inputValue())}`);
    });
    await A1.page.unroute(doc, slowFirstAppend);
    assert(slowed > 1, `A1 posted ${slowed} appends`);
    const seen = Date.now() - typed;
    // A1's caret, from awareness, drawn in A2 (and A2's in A1), named.
    await A2.page.getByTestId('collab-caret').first().waitFor();
    // A2 puts its caret at the start of the text: A1 draws it there.
    await A2.page.getByTestId('collab-text').click();
    await A2.page.getByTestId('collab-text').press('Control+Home');
    await A1.page.getByTestId('collab-caret').first().waitFor();
    const name = await A2.page.getByTestId('collab-peer').first().innerText();
    assert(name.includes('Sam'), `the peer is shown as ${name}`);
    const caretAt = await A2.page.getByTestId('collab-caret').first().getAttribute('data-name');
    assert(caretAt?.includes('Sam'), `the caret is named ${caretAt}`);
    await shot(A2.page, 'collab-editor.png');
    const axe = await audit(A2.page, 'collaborative body');
    const both = [await area.inputValue(), await A2.page.getByTestId('collab-text').inputValue()];
    assert(both[0] === both[1], `the two contexts differ: ${JSON.stringify(both)}`);
    // The edge writes the text into the proposal through the API after a quiet second.
    const deadline = Date.now() + 30_000;
    while (sql(`SELECT content FROM proposals WHERE id = ${lit(draftId)}`) !== both[0]) {
      assert(Date.now() < deadline, 'the proposal never held the body typed');
      await new Promise((r) => setTimeout(r, 200));
    }
    // Settled in both pages' proposal rows before the next checks write (they read versions).
    const version = sql(`SELECT version FROM proposals WHERE id = ${lit(draftId)}`);
    await new Promise((r) => setTimeout(r, 1000));
    // Back on the proposal page, live again, for the next checks.
    for (const P of [A1, A2]) {
      await P.page.getByTestId('back-to-proposal').click();
      await P.page.getByTestId('activity-status').filter({ hasText: 'Up to date' }).waitFor();
    }
    return `typed ${sentence.length + 1} characters; complete in the other context after ${seen} ms; persisted at version ${version}; axe: ${axe}`;
  });

  await check('collaborative body: read-only for a viewer (who reads it live and sends no update) and for a sent proposal', async () => {
    const lee = devUsers.find((u) => u.role === 'viewer');
    assert(lee, 'dev-users.json has no viewer');
    const V = await newPage(lee, 'viewer');
    const posted = [];
    const record = (P) => P.page.on('request', (r) => r.method() === 'POST' && r.url().includes('/v1/yjs/') && !r.url().includes('awareness') && posted.push(r.url()));
    record(V);
    await V.page.goto(`${BASE}/proposals/${draftId}/body`);
    await V.page.locator('[data-testid=collab-body][data-status=connected]').waitFor();
    const body = sql(`SELECT content FROM proposals WHERE id = ${lit(draftId)}`);
    const area = V.page.getByTestId('collab-text');
    await V.page.waitForFunction((s) => document.querySelector('[data-testid=collab-text]')?.value === s, body);
    assert((await area.getAttribute('readonly')) !== null, "the viewer's textarea is writable");
    assert((await V.page.getByTestId('collab-status').innerText()).includes('read-only'), 'the viewer is not told the body is read-only');
    await V.page.getByTestId('collab-read-only').filter({ hasText: 'only editors change it' }).waitFor();
    await area.click();
    await area.press('End');
    await area.pressSequentially(' viewer', { delay: 5 });
    // An editor's edit still reaches the viewer, live.
    const A1area = A1.page.getByTestId('collab-text');
    await A1.page.goto(`${BASE}/proposals/${draftId}/body`);
    await A1.page.locator('[data-testid=collab-body][data-status=connected]').waitFor();
    await A1area.click();
    await A1area.press('Control+End');
    await A1area.pressSequentially(' Seen live.', { delay: 5 });
    await V.page.waitForFunction(() => document.querySelector('[data-testid=collab-text]')?.value.endsWith(' Seen live.'));
    assert(!(await area.inputValue()).includes('viewer'), 'the viewer changed the text');
    // Back to the proposal page, settled, for the next checks.
    await A1.page.getByTestId('back-to-proposal').click();
    await A1.page.getByTestId('activity-status').filter({ hasText: 'Up to date' }).waitFor();
    const deadline = Date.now() + 30_000;
    while (!sql(`SELECT content FROM proposals WHERE id = ${lit(draftId)}`).endsWith(' Seen live.')) {
      assert(Date.now() < deadline, 'the proposal never held the last edit');
      await new Promise((r) => setTimeout(r, 200));
    }
    await new Promise((r) => setTimeout(r, 1000));
    // A sent proposal: Sam, an editor, gets its body read-only, said so.
    const sentId = sql(`SELECT id FROM proposals WHERE title = 'Menu photography'`);
    assert(sql(`SELECT status FROM proposals WHERE id = ${lit(sentId)}`) === 'sent', 'Menu photography is not sent');
    record(A2);
    await A2.page.goto(`${BASE}/proposals/${sentId}/body`);
    await A2.page.locator('[data-testid=collab-body][data-status=connected]').waitFor();
    await A2.page.getByTestId('collab-read-only').filter({ hasText: 'no longer a draft' }).waitFor();
    assert((await A2.page.getByTestId('collab-text').getAttribute('readonly')) !== null, "the sent proposal's textarea is writable");
    await new Promise((r) => setTimeout(r, 500));
    assert(posted.length === 0, `read-only pages posted updates: ${posted.join(', ')}`);
    await A2.page.goto(`${BASE}/proposals/${draftId}`);
    await A2.page.getByTestId('activity-status').filter({ hasText: 'Up to date' }).waitFor();
    await V.context.close();
    return 'the viewer saw an edit live, its keys changed nothing and it posted no update; the sent proposal says it is read-only';
  });

  await check('another agency never sees the edits (its shapes, its list, the proposal URL)', async () => {
    const seen = await B.page.evaluate(() => [...window.__texts].some((t) => t.includes('Brand refresh')));
    assert(!seen, "the other agency's page showed a Northwind title");
    assert(leaked.length === 0, `Northwind data reached the other agency: ${leaked.join(', ')}`);
    await B.page.goto(`${BASE}/proposals/${draftId}`);
    await B.page.getByText('does not exist, or belongs to another agency').waitFor();
    assert((await B.page.getByTestId('proposal-row').count()) === 0, 'rows');
    return 'no Northwind bytes in any /v1/ response to it';
  });

  // ---------- 4. line items ----------
  await check('line items: add / update / remove apply at once, settle, and reach the other context', async () => {
    const p = A1.page;
    const before = await p.getByTestId('line-item').count();
    await p.getByLabel('New item').fill('Copywriting');
    await p.getByLabel('Quantity').last().fill('2');
    await p.getByLabel(/Unit price/).last().fill('12.34');
    await p.getByLabel('Tax %').last().fill('19');
    await p.getByRole('button', { name: 'Add item' }).click();
    await p.getByTestId('line-item').filter({ hasText: 'Copywriting' }).waitFor({ timeout: 1_000 }); // optimistic
    await message(p, 'Line item added: saved.');
    const row = await p.getByTestId('line-item').filter({ hasText: 'Copywriting' }).innerText();
    assert(row.includes('€24.68') && row.includes('€12.34'), `the new row reads ${row}`);
    await A2.page.getByTestId('line-item').filter({ hasText: 'Copywriting' }).waitFor();
    await shot(p, 'proposal.png');
    await p.getByRole('button', { name: 'Edit Copywriting' }).click();
    await p.locator('#e-price').fill('10');
    await p.getByRole('button', { name: 'Save item' }).click();
    await message(p, 'Line item updated: saved.');
    await A2.page.getByTestId('line-item').filter({ hasText: '€20.00' }).waitFor();
    await p.getByRole('button', { name: 'Remove Copywriting' }).click();
    await message(p, 'Line item removed: saved.');
    await A2.page.getByTestId('line-item').filter({ hasText: 'Copywriting' }).waitFor({ state: 'detached' });
    assert((await p.getByTestId('line-item').count()) === before, 'the item count is back');
    const totals = sql(`SELECT total_minor FROM proposals WHERE id = ${lit(draftId)}`);
    return `total back to ${totals} minor units`;
  });

  // ---------- 5. transitions ----------
  await check('transitions: send, withdraw, back to draft', async () => {
    const p = A1.page;
    for (const [button, status] of [['Send', 'Sent'], ['Withdraw', 'Withdrawn'], ['Back to draft', 'Draft']]) {
      await p.getByRole('button', { name: button, exact: true }).click();
      await p.getByTestId('proposal-status').filter({ hasText: status }).waitFor();
      await A2.page.getByTestId('proposal-status').filter({ hasText: status }).waitFor();
    }
    assert(sql(`SELECT status FROM proposals WHERE id = ${lit(draftId)}`) === 'draft', 'stored status');
  });

  // ---------- 6. stale version: optimistic, refused, rolled back, explained ----------
  await check('a write on a stale version is shown at once, then rolled back with an explanation', async () => {
    const p = A1.page;
    const titleBefore = await text(p, 'proposal-title');
    let release;
    const gate = new Promise((r) => (release = r));
    let heldSeen;
    const held = new Promise((r) => (heldSeen = r));
    const live = (u) => u.pathname === '/v1/shape' && u.searchParams.get('table') === 'proposals' && u.searchParams.get('live') === 'true';
    await p.route(live, async (route) => {
      heldSeen();
      await gate;
      await route.continue().catch(() => {});
    });
    // The long-poll already open returns with this no-op change; the next one is held.
    sql(`UPDATE proposals SET title = title WHERE title = 'Menu photography'`);
    await held;
    const version = Number(sql(`UPDATE proposals SET version = version + 1 WHERE id = ${lit(draftId)} RETURNING version`));
    const clicked = await rename(p, 'An edit on a stale version');
    await seenAt(p, 'An edit on a stale version');
    await message(p, 'Someone else changed this proposal');
    await p.getByTestId('proposal-title').filter({ hasText: titleBefore }).waitFor();
    const rolledBackMs = Date.now() - clicked;
    release();
    await p.unroute(live);
    await p.getByTestId('proposal-version').filter({ hasText: String(version) }).waitFor();
    assert(sql(`SELECT title FROM proposals WHERE id = ${lit(draftId)}`) === titleBefore, 'the stored title changed');
    return `rolled back ${rolledBackMs} ms after the click; then caught up to version ${version}`;
  });

  // ---------- 7. PDF ----------
  await check('PDF: requested, turns ready live, downloads a PDF with the proposal title', async () => {
    const p = A1.page;
    const title = 'PDF check proposal';
    await rename(p, title);
    await message(p, 'Proposal details: saved.');
    const version = await text(p, 'proposal-version');
    await p.getByRole('button', { name: /Request a PDF/ }).click();
    const item = p.getByTestId('rendition').filter({ hasText: `Version ${version}:` });
    await item.waitFor();
    const requested = Date.now();
    await item.and(p.locator('[data-status=ready]')).waitFor({ timeout: 90_000 });
    const readyMs = Date.now() - requested;
    const [download] = await Promise.all([p.waitForEvent('download'), item.getByRole('button', { name: /Download PDF/ }).click()]);
    const file = join(WORK, 'download.pdf');
    await download.saveAs(file);
    assert(readFileSync(file).subarray(0, 5).toString() === '%PDF-', 'the download is not a PDF');
    const txt = execFileSync('pdftotext', [file, '-'], { encoding: 'utf8' }).replace(/\s+/g, ' ');
    assert(txt.includes(title), `the PDF text lacks the title: ${txt.slice(0, 200)}`);
    return `ready ${readyMs} ms after the request shows; ${download.suggestedFilename()}`;
  });

  // ---------- 7b. PDF preview in the page ----------
  await check('PDF preview: the page shows the rendition as a PDF Blob (object URL) with the stored bytes', async () => {
    const p = A1.page;
    const version = await text(p, 'proposal-version');
    const item = p.getByTestId('rendition').filter({ hasText: `Version ${version}:` }).and(p.locator('[data-status=ready]'));
    const downloads = [];
    const onDownload = (d) => downloads.push(d.suggestedFilename());
    p.on('download', onDownload);
    await item.getByRole('button', { name: /Preview/ }).click();
    const obj = p.getByTestId('pdf-preview');
    await obj.waitFor();
    const renditionId = await obj.getAttribute('data-rendition');
    const size = sql(`SELECT size_bytes FROM pdf_renditions WHERE id = ${lit(renditionId)}`);
    const got = await obj.evaluate(async (el) => {
      const blob = await (await fetch(el.data)).blob();
      const bytes = new Uint8Array(await blob.arrayBuffer());
      const digest = [...new Uint8Array(await crypto.subtle.digest('SHA-256', bytes))].map((b) => b.toString(16).padStart(2, '0')).join('');
      const r = el.getBoundingClientRect();
      return { url: el.data, type: blob.type, size: blob.size, head: new TextDecoder().decode(bytes.slice(0, 5)), digest, elType: el.type, w: r.width, h: r.height, viewer: navigator.pdfViewerEnabled };
    });
    assert(got.url.startsWith(`blob:${BASE}/`), `the preview is not an object URL of this origin: ${got.url}`);
    assert(got.type === 'application/pdf' && got.elType === 'application/pdf', `type ${got.type}, element type ${got.elType}`);
    assert(got.head === '%PDF-', `the previewed bytes are not a PDF: ${got.head}`);
    assert(got.size === Number(size), `the preview holds ${got.size} bytes, the rendition has ${size}`);
    const downloaded = createHash('sha256').update(readFileSync(join(WORK, 'download.pdf'))).digest('hex');
    assert(got.digest === downloaded, 'the previewed PDF differs from the downloaded one');
    assert(got.w > 600 && got.h > 300, `the preview is ${got.w}×${got.h} px`);
    if (got.viewer) assert(!(await p.getByText('This browser cannot show PDFs').isVisible()), 'the fallback is shown though the browser has a PDF viewer');
    await shot(p, 'pdf-preview.png');
    await p.getByRole('button', { name: 'Close preview' }).click();
    await obj.waitFor({ state: 'detached' });
    const revoked = await p.evaluate((u) => fetch(u).then(() => false, () => true), got.url);
    assert(revoked, 'the object URL still answers after the preview closed');
    p.off('download', onDownload);
    assert(downloads.length === 0, `the preview started a download instead: ${downloads}`);
    return `${got.size} bytes, ${got.type}, same SHA-256 as the download; the browser's PDF viewer ${got.viewer ? 'on' : 'off'}; URL revoked on close`;
  });

  // ---------- 8. activity feed resumes from its saved offset ----------
  await check('activity: a reload shows the same feed and resumes from the saved offset, nothing twice', async () => {
    const p = A1.page;
    await p.getByTestId('activity-status').filter({ hasText: 'Up to date' }).waitFor();
    const feed = p.getByTestId('activity');
    const before = await feed.locator('li').allInnerTexts();
    const offset = await feed.getAttribute('data-offset');
    assert(before.length >= 5 && offset && offset !== '-1', `feed ${before.length} entries, offset ${offset}`);
    const asked = [];
    p.on('request', (r) => r.url().includes('/activity') && asked.push(new URL(r.url()).searchParams.get('offset')));
    await p.reload();
    await p.getByTestId('proposal-title').waitFor();
    const after = await feed.locator('li').allInnerTexts();
    assert(JSON.stringify(after) === JSON.stringify(before), `the feed changed across the reload:\n${before.slice(0, 3)}\n${after.slice(0, 3)}`);
    await p.getByTestId('activity-status').filter({ hasText: 'Up to date' }).waitFor();
    assert(asked[0] === offset, `the first read after the reload asked offset ${asked[0]}, saved ${offset}`);
    await rename(A2.page, 'After the reload');
    await feed.locator('li').filter({ hasText: 'Renamed to “After the reload”' }).waitFor();
    const final = await feed.locator('li').allInnerTexts();
    const offsets = await feed.locator('li').evaluateAll((ls) => ls.map((l) => l.dataset.offset));
    assert(new Set(offsets).size === offsets.length, 'an activity entry is shown twice');
    assert(final.length === before.length + 1, `expected one new entry, got ${final.length - before.length}`);
    return `${before.length} entries kept, resumed at ${offset}`;
  });

  // ---------- 9. offline ----------
  await check('offline: last synced data stays, writes are refused with a message, back online it catches up', async () => {
    const p = A1.page;
    const st = Date.now();
    const steps = [];
    await A1.page.getByTestId('proposal-title').filter({ hasText: 'After the reload' }).waitFor();
    steps.push(Date.now() - st);
    const items = await p.getByTestId('line-item').count();
    await A1.context.setOffline(true);
    steps.push(Date.now() - st);
    await p.getByTestId('connection').filter({ hasText: 'Offline' }).waitFor();
    steps.push(Date.now() - st);
    await rename(p, 'Typed while offline');
    steps.push(Date.now() - st);
    await message(p, 'You are offline');
    steps.push(Date.now() - st);
    assert((await text(p, 'proposal-title')) === 'After the reload', 'the offline edit was applied');
    assert((await p.getByTestId('line-item').count()) === items, 'line items vanished offline');
    await shot(p, 'offline.png');
    steps.push(Date.now() - st);
    await rename(A2.page, 'Renamed while the other was offline');
    steps.push(Date.now() - st);
    await message(A2.page, 'Proposal details: saved.');
    steps.push(Date.now() - st);
    await A1.context.setOffline(false);
    steps.push(Date.now() - st);
    const back = Date.now();
    await p.getByTestId('proposal-title').filter({ hasText: 'Renamed while the other was offline' }).waitFor({ timeout: 30_000 });
    steps.push(Date.now() - st);
    const caughtUp = Date.now() - back;
    await p.getByTestId('connection').filter({ hasText: 'Live' }).waitFor({ timeout: 2_000 });
    const liveAgain = Date.now() - back;
    steps.push(Date.now() - st);
    assert((await p.getByTestId('line-item').count()) === items, 'line items doubled after coming back');
    const offsets = await p.getByTestId('activity').locator('li').evaluateAll((ls) => ls.map((l) => l.dataset.offset));
    assert(new Set(offsets).size === offsets.length, 'an activity entry is shown twice');
    await p.getByRole('link', { name: '← All proposals' }).click();
    steps.push(Date.now() - st);
    await p.getByTestId('list-status').filter({ hasText: '4 of 4 proposals' }).waitFor();
    steps.push(Date.now() - st);
    assert((await p.locator(`[data-id="${draftId}"]`).count()) === 1, 'the proposal is listed twice');
    results.offlineCatchUpMs = caughtUp;
    results.offlineLiveAgainMs = liveAgain;
    return `caught up ${caughtUp} ms and "Live" ${liveAgain} ms after going online (steps at ${steps.join(', ')} ms)`;
  });

  // ---------- 10. the edge restarts mid-session ----------
  await check('the edge restarted mid-session: the app recovers by itself', async () => {
    const p = A1.page;
    await p.goto(`${BASE}/proposals/${draftId}`);
    await p.getByTestId('activity-status').filter({ hasText: 'Up to date' }).waitFor();
    const pidFile = join(WORK, 'edge.pid');
    const pid = Number(readFileSync(pidFile, 'utf8'));
    process.kill(pid, 'SIGTERM');
    for (let i = 0; i < 100; i++) {
      try { process.kill(pid, 0); } catch { break; }
      await new Promise((r) => setTimeout(r, 100));
    }
    try { process.kill(pid, 'SIGKILL'); } catch { /* gone */ }
    sql(`UPDATE proposals SET title = 'Changed while the edge was down', version = version + 1 WHERE id = ${lit(draftId)}`);
    await p.getByTestId('connection').filter({ hasText: 'Reconnecting' }).waitFor({ timeout: 30_000 });
    const [cmd, ...args] = env('WEB_TEST_EDGE_CMD').split(' ');
    const log = openSync(join(WORK, 'shape-edge.log'), 'a');
    const child = spawn(cmd, args, { detached: true, stdio: ['ignore', log, log] });
    child.unref();
    writeFileSync(pidFile, String(child.pid));
    const restarted = Date.now();
    await p.getByTestId('proposal-title').filter({ hasText: 'Changed while the edge was down' }).waitFor({ timeout: 45_000 });
    await p.getByTestId('connection').filter({ hasText: 'Live' }).waitFor();
    const recovered = Date.now() - restarted;
    await A2.page.getByTestId('proposal-title').filter({ hasText: 'Changed while the edge was down' }).waitFor({ timeout: 45_000 });
    await rename(A2.page, 'After the edge restart');
    await p.getByTestId('proposal-title').filter({ hasText: 'After the edge restart' }).waitFor();
    await p.getByTestId('activity').locator('li').filter({ hasText: 'Renamed to “After the edge restart”' }).waitFor();
    results.edgeRestartRecoveryMs = recovered;
    return `showed the change made while it was down ${recovered} ms after the restart`;
  });

  // ---------- 11. accessibility ----------
  await check('accessibility (axe-core): no serious or critical violations on sign-in, list, proposal, offline', async () => {
    const out = [];
    const s = await newPage(null, 'axe');
    await s.page.goto(BASE + '/');
    await s.page.getByRole('button', { name: /Sam Okafor/ }).waitFor();
    out.push(await audit(s.page, 'sign-in'));
    await s.context.close();
    await A1.page.goto(BASE + '/');
    await A1.page.getByTestId('list-status').filter({ hasText: '4 of 4' }).waitFor();
    out.push(await audit(A1.page, 'list'));
    await A1.page.goto(`${BASE}/proposals/${draftId}`);
    await A1.page.getByTestId('activity-status').filter({ hasText: 'Up to date' }).waitFor();
    out.push(await audit(A1.page, 'proposal'));
    await A1.context.setOffline(true);
    await A1.page.getByTestId('connection').filter({ hasText: 'Offline' }).waitFor();
    out.push(await audit(A1.page, 'offline'));
    await A1.context.setOffline(false);
    return out.join(', ');
  });

  // ---------- 11b. a new proposal ----------
  const agencyOfSam = sql(`SELECT agency_id FROM proposals WHERE id = ${lit(draftId)}`);
  await check('new proposal: a client from the live clients shape, shown at once, settled by its txid, seen elsewhere', async () => {
    const p = A1.page;
    await p.goto(BASE + '/');
    await p.getByTestId('list-status').filter({ hasText: '4 of 4 proposals' }).waitFor();
    await A2.page.goto(BASE + '/');
    await A2.page.getByTestId('list-status').filter({ hasText: '4 of 4 proposals' }).waitFor();
    const drafts = Number(await text(p, 'count-draft'));
    await p.getByRole('button', { name: 'New proposal' }).click();
    // Refused in words before anything is sent.
    await p.getByRole('button', { name: 'Create draft' }).click();
    await p.getByTestId('new-proposal-form').getByRole('alert').filter({ hasText: 'Please choose a client, give the proposal a title.' }).waitFor();
    // A client added elsewhere appears in the form's list live.
    const clientId = sql(`INSERT INTO clients (id, agency_id, name, email, company) VALUES (gen_random_uuid(), ${lit(agencyOfSam)}, 'Nia Harbour', 'nia@harbour.example', 'Harbour Lights Ltd') RETURNING id`);
    await p.locator('#np-client option', { hasText: 'Harbour Lights Ltd' }).waitFor({ state: 'attached' });
    const axe = await audit(p, 'new-proposal form');
    const title = 'Harbour Lights website';
    await p.locator('#np-client').selectOption({ label: 'Harbour Lights Ltd (Nia Harbour)' });
    await p.locator('#np-title').fill(title);
    await p.locator('#np-currency').selectOption('GBP');
    await p.locator('#np-valid').fill('2031-06-30');
    const settledBefore = await p.evaluate(() => globalThis.__folioSettled.txid);
    // The proposals shape's live reads are held: whatever row shows is the optimistic one.
    const release = await holdShape(p, 'proposals', `UPDATE proposals SET title = title WHERE id = ${lit(fleetId)}`);
    const responded = p.waitForResponse((r) => r.url().endsWith('/folio.api.v1.ProposalService/CreateProposal'));
    const clicked = Date.now();
    await p.getByRole('button', { name: 'Create draft' }).click();
    const row = p.getByTestId('proposal-row').filter({ hasText: title });
    await row.and(p.locator('[data-pending=true]')).waitFor();
    const shownMs = Date.now() - clicked;
    assert((await p.locator('#np-title').inputValue()) === '', 'the form kept the title of the proposal it sent');
    const res = await responded;
    assert(res.status() === 200, `CreateProposal answered HTTP ${res.status()}`);
    let stored = '';
    for (let i = 0; i < 50 && !stored; i++) {
      stored = sql(`SELECT id || '|' || client_id || '|' || currency || '|' || coalesce(valid_until::text, '') || '|' || status || '|' || version FROM proposals WHERE title = ${lit(title)}`);
      if (!stored) await new Promise((r) => setTimeout(r, 100));
    }
    const [id, storedClient, currency, validUntil, status, version] = stored.split('|');
    assert(storedClient === clientId && currency === 'GBP' && validUntil === '2031-06-30' && status === 'draft' && version === '1', `stored ${stored}`);
    await new Promise((r) => setTimeout(r, 300));
    assert((await row.count()) === 1 && (await row.getAttribute('data-pending')) === 'true' && (await row.getAttribute('data-id')) !== id,
      'the row settled before its txid could reach the shape');
    assert(!(await p.getByTestId('message').innerText()).includes('created'), 'reported created before the write reached the shape');
    const released = Date.now();
    await release();
    await p.locator(`[data-testid=proposal-row][data-id="${id}"]:not([data-pending])`).waitFor();
    const settledMs = Date.now() - released;
    await message(p, `“${title}” created as a draft.`);
    assert((await row.count()) === 1, `the new proposal is listed ${await row.count()} times`);
    assert(Number(await text(p, 'count-draft')) === drafts + 1 && Number(await text(p, 'count-all')) === 5, 'the counts did not follow');
    const settledAfter = await p.evaluate(() => globalThis.__folioSettled.txid);
    assert(settledAfter === settledBefore + 1, `settled by txid ${settledAfter - settledBefore} times`);
    await A2.page.locator(`[data-testid=proposal-row][data-id="${id}"]`).waitFor();
    await p.getByTestId('message').getByRole('link', { name: 'Open it' }).click();
    await p.getByTestId('proposal-title').filter({ hasText: title }).waitFor();
    await p.getByTestId('client').filter({ hasText: 'Harbour Lights Ltd' }).waitFor();
    assert((await p.getByTestId('total').innerText()) === '£0.00', `total ${await p.getByTestId('total').innerText()}`);
    return `optimistic row ${shownMs} ms after the click; settled ${settledMs} ms after the shape was released; in the other context; axe: ${axe}`;
  });

  await check('new proposal refused (its client deleted meanwhile): shown, removed, explained; the values come back', async () => {
    const p = A1.page;
    await p.goto(BASE + '/');
    await p.getByTestId('list-status').filter({ hasText: '5 of 5 proposals' }).waitFor();
    await p.getByRole('button', { name: 'New proposal' }).click();
    const gone = sql(`INSERT INTO clients (id, agency_id, name, email, company) VALUES (gen_random_uuid(), ${lit(agencyOfSam)}, 'Otto Gone', 'otto@gone.example', 'Gone Tomorrow GmbH') RETURNING id`);
    const option = p.locator('#np-client option', { hasText: 'Gone Tomorrow GmbH' });
    await option.waitFor({ state: 'attached' });
    const title = 'For a client that is gone';
    await p.locator('#np-client').selectOption({ label: 'Gone Tomorrow GmbH (Otto Gone)' });
    await p.locator('#np-title').fill(title);
    // Someone deletes the client; this page has not heard of it yet (clients' live reads held).
    const release = await holdShape(p, 'clients', `UPDATE clients SET name = name WHERE id = ${lit(gone)}`);
    sql(`DELETE FROM clients WHERE id = ${lit(gone)}`);
    await p.getByRole('button', { name: 'Create draft' }).click();
    await message(p, 'Not saved: Client: this client no longer exists');
    const seen = await p.evaluate((t) => [...window.__texts].some((x) => x.includes(`${t} (saving…)`)), title);
    assert(seen, 'the proposal was never shown optimistically');
    assert((await p.getByTestId('proposal-row').filter({ hasText: title }).count()) === 0, 'the refused proposal is still listed');
    assert(Number(await text(p, 'count-all')) === 5, 'the count kept the refused proposal');
    assert(sql(`SELECT count(*) FROM proposals WHERE title = ${lit(title)}`) === '0', 'the refused proposal was stored');
    assert((await p.locator('#np-title').inputValue()) === title, 'the typed title was not given back');
    await release();
    await option.waitFor({ state: 'detached' });
    await shot(p, 'new-proposal.png');
    return (await p.getByTestId('message').innerText()).trim();
  });

  // ---------- 12. 1,000 live proposals ----------
  await check('1,000 proposals: first render (navigation → rows on screen), virtualised', async () => {
    const runs = [];
    for (let i = 0; i < 3; i++) {
      const C = await newPage(big, `C${i}`);
      await C.context.addInitScript(() => {
        new MutationObserver((_, obs) => {
          const s = document.querySelector('[data-testid=list-status]');
          if (s?.textContent?.includes('1,000 of 1,000') && document.querySelector('[data-testid=proposal-row]')) {
            window.__rendered = performance.now();
            obs.disconnect();
          }
        }).observe(document, { subtree: true, childList: true, characterData: true });
      });
      await C.page.goto(BASE + '/');
      await C.page.waitForFunction(() => window.__rendered, null, { timeout: 30_000 });
      runs.push(Math.round(await C.page.evaluate(() => window.__rendered)));
      const inDom = await C.page.getByTestId('proposal-row').count();
      assert(inDom < 80, `${inDom} rows in the DOM: not virtualised`);
      if (i === 2) {
        await C.page.getByRole('region', { name: 'Proposals list' }).evaluate((el) => (el.scrollTop = el.scrollHeight));
        await C.page.getByTestId('proposal-row').filter({ hasText: 'Big Agency proposal 0' }).last().waitFor();
      }
      await C.context.close();
    }
    results.firstRender1000Ms = { runs, median: percentile(runs, 50) };
    return `runs ${runs.join(', ')} ms (median ${results.firstRender1000Ms.median} ms)`;
  });

  // ---------- 13. bundle ----------
  await check('bundle size (JavaScript, gzip -9)', async () => {
    let raw = 0;
    let gz = 0;
    let files = 0;
    const walk = (d) => {
      for (const f of readdirSync(d)) {
        const path = join(d, f);
        if (statSync(path).isDirectory()) walk(path);
        else if (f.endsWith('.js')) {
          const b = readFileSync(path);
          raw += b.length;
          gz += gzipSync(b, { level: 9 }).length;
          files++;
        }
      }
    };
    walk(join(env('WEB_TEST_BUILD'), '_app'));
    results.bundle = { jsFiles: files, jsKiB: +(raw / 1024).toFixed(1), jsGzipKiB: +(gz / 1024).toFixed(1) };
    return `${files} files, ${results.bundle.jsKiB} KiB minified, ${results.bundle.jsGzipKiB} KiB gzip`;
  });

  assert(pageErrors.length === 0, `uncaught errors in the pages: ${pageErrors.join('; ')}`);
} catch (e) {
  if (!outcome.failures) console.error(`web-tests: FAIL ${e?.stack ?? e}`);
  console.error(`web-tests: the pages' last console warnings and errors:\n  ${consoleLog.slice(-15).join('\n  ')}`);
  outcome.failures = Math.max(outcome.failures, 1);
} finally {
  await browser.close();
}
results.seconds = +((Date.now() - t0) / 1000).toFixed(1);
console.log(`web-tests: figures ${JSON.stringify({ ...results, editPropagationMs: results.editPropagationMs && { ...results.editPropagationMs, samples: undefined } })}`);
if (process.env.FOLIO_WEB_RESULTS) writeFileSync(process.env.FOLIO_WEB_RESULTS, JSON.stringify(results, null, 2));
process.exit(outcome.failures ? 1 : 0);
