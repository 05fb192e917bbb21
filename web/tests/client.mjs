// The client's side (issue 20), end to end in Debian's Chromium against the real cluster that
// tests/run.sh started, plus the notifier and an SMTP sink (aiosmtpd, as the notifier's tests
// use it) started here: the agency sends a proposal from its app; the link is read from the
// email the notifier actually delivered; the client's page opens it and shows the proposal; the
// agency's app shows `viewed` within a second; the client accepts with a typed name; the agency
// sees `accepted`; the signature holds the SHA-256 of the exact PDF bytes the page offered.
// Then the signed copy: offered on the page, emailed to both sides (the same file), its text
// naming the signer and the signed PDF's hash, and equal byte for byte to a re-render.
// Env (from run.sh): WEB_TEST_BASE, WEB_TEST_DB, WEB_TEST_WORK, WEB_TEST_BIN, FOLIO_JWT_SECRET,
// CHROMIUM, and the cluster's FOLIO_… names; optional FOLIO_WEB_SCREENSHOTS=<dir>.
import { spawnSync } from 'node:child_process';
import { createHash, randomUUID } from 'node:crypto';
import { join, dirname } from 'node:path';
import { readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { startNotifier, mails } from './notifier.mjs';
import { audit } from './axe.mjs';
import { env, outcome, check, assert, sql, lit, sign, until, escapeRegExp, launch } from './lib.mjs';

const BASE = env('WEB_TEST_BASE');
const WORK = env('WEB_TEST_WORK');
const BIN = env('WEB_TEST_BIN');
const SHOTS = process.env.FOLIO_WEB_SCREENSHOTS;
const ROOT = join(dirname(fileURLToPath(import.meta.url)), '..', '..');
const children = [];
const audits = [];

/** The proposal.accepted emails with a PDF attached, decoded by Python's email package. */
function signedCopyEmails(maildir) {
  const script = `
import email, email.policy, hashlib, json, os, sys
out = []
for sub in ("new", "cur"):
    d = os.path.join(sys.argv[1], sub)
    for f in sorted(os.listdir(d)) if os.path.isdir(d) else []:
        m = email.message_from_binary_file(open(os.path.join(d, f), "rb"), policy=email.policy.default)
        if m.get("X-Folio-Event") != "proposal.accepted":
            continue
        for part in m.iter_attachments():
            if part.get_content_type() == "application/pdf":
                data = part.get_content()
                path = os.path.join(sys.argv[1], f + ".pdf")
                open(path, "wb").write(data)
                out.append({"to": m["To"], "name": part.get_filename(), "path": path, "sha256": hashlib.sha256(data).hexdigest()})
print(json.dumps(out))
`;
  const r = spawnSync('python3', ['-c', script, maildir], { encoding: 'utf8' });
  if (r.status !== 0) throw new Error(`reading the maildir: ${r.stderr}`);
  return JSON.parse(r.stdout);
}

const { browser, newPage, pageErrors } = await launch({ viewport: { width: 1000, height: 1100 }, timeout: 30_000 });

try {
  const maildir = join(WORK, 'maildir');
  await check('an SMTP sink and the notifier start next to the cluster', async () => {
    const { smtpPort } = await startNotifier({ root: ROOT, bin: BIN, work: WORK, base: BASE, maildir, children });
    return `SMTP on :${smtpPort}`;
  });

  // An agency with its brand colour, an editor, a client with an address of its own, a draft.
  const agency = randomUUID(), user = randomUUID(), client = randomUUID(), proposal = randomUUID();
  const clientEmail = `client-${agency.slice(0, 8)}@example.com`;
  const title = `Brand refresh ${agency.slice(0, 4)}`;
  sql(`BEGIN;
    INSERT INTO agencies (id, name, brand_color) VALUES (${lit(agency)}, 'Lumen & Co', '#7a1f5c');
    INSERT INTO users (id, agency_id, email, name, role) VALUES (${lit(user)}, ${lit(agency)}, ${lit(`owner@${agency.slice(0, 8)}.example`)}, 'Olivia Owner', 'editor');
    INSERT INTO clients (id, agency_id, name, email, company) VALUES (${lit(client)}, ${lit(agency)}, 'Carla Client', ${lit(clientEmail)}, 'Acme');
    INSERT INTO proposals (id, agency_id, client_id, owner_id, title, currency, valid_until, content, terms, subtotal_minor, tax_minor, total_minor)
      VALUES (${lit(proposal)}, ${lit(agency)}, ${lit(client)}, ${lit(user)}, ${lit(title)}, 'EUR', DATE '2027-06-30',
              'A new visual identity: logo, palette and type.', '50 % on acceptance, the rest on delivery.', 450000, 90000, 540000);
    INSERT INTO line_items (id, proposal_id, agency_id, position, description, quantity_milli, unit_price_minor, tax_rate_ppm, subtotal_minor, tax_minor) VALUES
      (gen_random_uuid(), ${lit(proposal)}, ${lit(agency)}, 1, 'Identity workshop', 1000, 150000, 200000, 150000, 30000),
      (gen_random_uuid(), ${lit(proposal)}, ${lit(agency)}, 2, 'Design days', 3000, 100000, 200000, 300000, 60000);
    COMMIT;`);
  const now = Math.floor(Date.now() / 1000);
  const token = sign({ sub: user, agency_id: agency, role: 'editor', iat: now, exp: now + 3600 });
  const A = await newPage({ name: 'Olivia Owner', email: 'owner@example', role: 'editor', token, agency: 'Lumen & Co', agency_id: agency }, 'agency');
  const status = () => A.page.getByTestId('proposal-status').first();

  let link;
  await check('the agency sends the proposal and the email delivered to the client carries its link', async () => {
    await A.page.goto(`${BASE}/proposals/${proposal}`);
    await A.page.getByRole('button', { name: 'Send', exact: true }).click();
    await status().filter({ hasText: 'Sent' }).waitFor();
    const mail = await until('the client\'s email', () => mails(maildir).find((m) => m.includes(`To: ${clientEmail}`) || m.includes(`<${clientEmail}>`)));
    const m = mail.match(new RegExp(`${escapeRegExp(BASE)}/p/([A-Za-z0-9_-]{43})`));
    assert(m, `no ${BASE}/p/<token> link in the email:\n${mail.slice(0, 2000)}`);
    link = m[0];
    assert(!mail.includes(`/p/${proposal}`), 'the email still links the proposal id');
    const stored = sql(`SELECT encode(token_sha256, 'hex') FROM client_links WHERE proposal_id = ${lit(proposal)} AND revoked_at IS NULL`);
    assert(stored === createHash('sha256').update(Buffer.from(m[1], 'base64url')).digest('hex'), 'the emailed token is not the stored link');
    return link.replace(m[1], `${m[1].slice(0, 6)}…`);
  });

  const C = await newPage(null, 'client');
  let viewedLagMs;
  await check('the link opens the client page, and the agency\'s app shows "viewed" within a second', async () => {
    const opened = C.page.waitForResponse((r) => r.url().endsWith('/view') && r.request().method() === 'POST');
    await C.page.goto(link);
    const response = await opened;
    const openedAt = Date.now();
    assert(response.status() === 200, `the open answered ${response.status()}`);
    const seenAt = await A.page
      .waitForFunction(() => document.querySelector('[data-testid=proposal-status]')?.textContent?.includes('Viewed') && Date.now(), null, { polling: 'raf', timeout: 10_000 })
      .then((h) => h.jsonValue());
    viewedLagMs = seenAt - openedAt;
    assert(viewedLagMs < 1000, `the agency saw "viewed" ${viewedLagMs} ms after the open`);
    assert((await C.page.getByTestId('client-title').innerText()) === title, 'the title');
    assert((await C.page.getByTestId('client-agency').innerText()).includes('Lumen & Co'), 'the agency');
    assert((await C.page.getByTestId('client-total').innerText()).includes('5,400.00'), 'the total');
    assert((await C.page.getByTestId('client-state').innerText()).includes('Awaiting'), 'the state');
    const items = await C.page.getByTestId('client-items').innerText();
    assert(items.includes('Identity workshop') && items.includes('Design days'), 'the items');
    const body = await C.page.locator('body').innerText();
    for (const id of [proposal, agency, client, user]) assert(!body.includes(id), `the page shows the id ${id}`);
    return `viewed on the agency's page ${viewedLagMs} ms after the open`;
  });

  await check('the PDF is offered and the client accepts with a typed name; the agency sees "accepted"', async () => {
    await C.page.getByTestId('client-pdf').waitFor({ timeout: 60_000 });
    if (SHOTS) await C.page.screenshot({ path: join(SHOTS, 'client-page-open.png'), fullPage: true });
    audits.push(await audit(C.page, 'open'));
    await C.page.getByTestId('client-name').fill('Carla Client');
    await C.page.getByTestId('client-consent').check();
    await C.page.getByTestId('client-accept').click();
    await C.page.getByTestId('client-state').filter({ hasText: 'Accepted' }).waitFor();
    assert((await C.page.getByTestId('client-done').innerText()).includes('Carla Client'), 'the signer on the page');
    await status().filter({ hasText: 'Accepted' }).waitFor({ timeout: 10_000 });
    const [signer, version, sha, ip] = sql(
      `SELECT signer_name, proposal_version, pdf_sha256, coalesce(host(ip_address), '') FROM proposal_responses WHERE proposal_id = ${lit(proposal)}`,
    ).split('|');
    const rendered = sql(`SELECT pdf_sha256 FROM pdf_renditions WHERE proposal_id = ${lit(proposal)} AND proposal_version = ${version} AND status = 'ready'`);
    assert(signer === 'Carla Client' && sha === rendered, `signature ${signer} ${sha} vs the rendition ${rendered}`);
    assert(ip === '127.0.0.1', `the signature's address: ${ip}`);
    return `signed version ${version}, PDF ${sha.slice(0, 12)}…`;
  });

  await check('the signed copy: offered on the page, emailed to the client and the agency, naming the signer and the hash, equal to a re-render', async () => {
    const [response, signedSha] = sql(
      `SELECT r.id, r.pdf_sha256 FROM proposal_responses r WHERE r.proposal_id = ${lit(proposal)}`,
    ).split('|');
    const link = C.page.getByTestId('client-signed-copy');
    await link.waitFor({ timeout: 60_000 });
    if (SHOTS) await C.page.screenshot({ path: join(SHOTS, 'client-page-accepted.png'), fullPage: true });
    audits.push(await audit(C.page, 'accepted'));
    const href = await link.getAttribute('href');
    const pageSha = await C.page.evaluate(async (url) => {
      const bytes = await (await fetch(url, { cache: 'no-store' })).arrayBuffer();
      return Array.from(new Uint8Array(await crypto.subtle.digest('SHA-256', bytes)), (b) => b.toString(16).padStart(2, '0')).join('');
    }, href);
    // Both emails as delivered to the sink, each with its application/pdf part decoded.
    const owner = sql(`SELECT email FROM users WHERE id = ${lit(user)}`);
    const attached = await until('both signed copy emails', () => {
      const found = signedCopyEmails(join(WORK, 'maildir'));
      const toClient = found.find((m) => m.to.includes(clientEmail));
      const toOwner = found.find((m) => m.to.includes(owner));
      return toClient && toOwner && [toClient, toOwner];
    }, 60_000);
    const [toClient, toOwner] = attached;
    assert(toClient.sha256 === toOwner.sha256, 'the client and the agency got different signed copies');
    assert(toClient.sha256 === pageSha, `the page offers ${pageSha}, the email carries ${toClient.sha256}`);
    const text = spawnSync('pdftotext', ['-layout', toClient.path, '-'], { encoding: 'utf8' }).stdout.replace(/\s+/g, ' ');
    assert(text.includes('Signature certificate') && text.includes('Carla Client'), `the signer is not in the signed copy:\n${text.slice(-1500)}`);
    assert(text.includes(signedSha), `the signed PDF's hash ${signedSha} is not in the signed copy`);
    // Made again from the record and the stored PDF by another process: the same bytes.
    const out = join(WORK, 'rerender');
    const r = spawnSync(join(BIN, 'render-proposal'), ['--signed-copy', response, '--out-dir', out], { encoding: 'utf8' });
    assert(r.status === 0, `render-proposal --signed-copy failed: ${r.stderr}`);
    const again = readFileSync(join(out, `signed-${response}.pdf`));
    assert(Buffer.compare(again, readFileSync(toClient.path)) === 0, 'a re-render differs from the emailed signed copy');
    if (SHOTS) {
      const pages = Number(/Pages:\s+(\d+)/.exec(spawnSync('pdfinfo', [toClient.path], { encoding: 'utf8' }).stdout)?.[1]);
      spawnSync('pdftoppm', ['-png', '-r', '60', '-singlefile', '-f', String(pages), toClient.path, join(SHOTS, 'signed-copy-certificate')]);
    }
    return `${toClient.name}, ${again.length} bytes, sha256 ${toClient.sha256.slice(0, 12)}…, identical on the page, in both emails and re-rendered`;
  });
  await check('a tampered link opens the one "not valid" page, which names nothing', async () => {
    const tampered = link.slice(0, -1) + (link.endsWith('A') ? 'B' : 'A');
    await C.page.goto(tampered);
    await C.page.getByTestId('client-invalid').waitFor();
    const body = await C.page.locator('body').innerText();
    assert(!body.includes('Brand refresh') && !body.includes('Lumen'), `the invalid page gives something away: ${body}`);
    audits.push(await audit(C.page, 'not valid'));
  });
  await check('the client page, open, accepted and not valid: axe-core finds no serious or critical violation', async () => audits.join(', '));
  assert(pageErrors.length === 0, `uncaught errors in the pages: ${pageErrors.join('; ')}`);
} catch (e) {
  if (!outcome.failures) console.error(`web-tests: FAIL ${e?.stack ?? e}`);
  outcome.failures = Math.max(outcome.failures, 1);
} finally {
  await browser.close();
  for (const c of children) c.kill('SIGTERM');
}
process.exit(outcome.failures ? 1 : 0);
