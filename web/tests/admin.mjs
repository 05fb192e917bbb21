// The agency's administration (issue 21) in Debian's Chromium against the real cluster that
// tests/run.sh started, plus the notifier and an SMTP sink (tests/notifier.mjs) and a webhook
// receiver started here:
//   1. the demo admin invites an address; the link is read from the email the notifier
//      delivered; a fresh context opens /invite/<token> and accepts with a name; the admin's
//      members list shows the new member without a reload; the same link again gets the one
//      generic refusal;
//   2. the admin changes the new member's role; demoting themselves, the last admin, is
//      refused in words on the page and the role stays;
//   3. a webhook endpoint on a private address is refused next to the URL field; one on the
//      receiver shows its secret once; "Send test event" reaches the receiver, signed with that
//      secret, and the attempt shows in the endpoint's attempt list;
//   then replays, rotates (during the grace period a delivery verifies with either secret),
//   edits (a private address refused next to the field), disables (a proposal changed meanwhile
//   is recorded as failed), enables, recovers (that message reaches the receiver) and deletes
//   the endpoint; sets an agency email default; removes the new member;
//   4. a viewer, signed in from the development sign-in page, sets an email preference that a
//      reload keeps, sees the agency's default applied and the mandatory email locked, and no
//      admin area (and is refused it);
//   5. axe-core on each of these pages: no serious or critical violation.
// Env (from run.sh): WEB_TEST_BASE, WEB_TEST_DB, WEB_TEST_WORK, WEB_TEST_BIN, CHROMIUM, the
// cluster's FOLIO_… names (run.sh lets proposals-api register loopback webhook URLs:
// FOLIO_WEBHOOK_ALLOWED_SUBNETS); optional FOLIO_WEB_SCREENSHOTS=<dir>.
import { createHash, createHmac, timingSafeEqual } from 'node:crypto';
import { createServer } from 'node:http';
import { readFileSync } from 'node:fs';
import { join, dirname } from 'node:path';
import { fileURLToPath } from 'node:url';
import { startNotifier, mails } from './notifier.mjs';
import { audit } from './axe.mjs';
import { env, outcome, check, assert, sql, lit, until, escapeRegExp, launch } from './lib.mjs';

const BASE = env('WEB_TEST_BASE');
const WORK = env('WEB_TEST_WORK');
const BIN = env('WEB_TEST_BIN');
const SHOTS = process.env.FOLIO_WEB_SCREENSHOTS;
const ROOT = join(dirname(fileURLToPath(import.meta.url)), '..', '..');
const children = [];
const audits = [];

/** A Standard Webhooks receiver on loopback: every request kept with its headers and body. */
async function startReceiver() {
  const received = [];
  const server = createServer((req, res) => {
    const chunks = [];
    req.on('data', (c) => chunks.push(c));
    req.on('end', () => {
      received.push({ path: req.url, headers: req.headers, body: Buffer.concat(chunks).toString('utf8') });
      res.writeHead(200, { 'content-type': 'text/plain' }).end('thanks');
    });
  });
  await new Promise((r) => server.listen(0, '127.0.0.1', r));
  return { received, port: server.address().port, close: () => server.close() };
}
/** Whether `secret` (whsec_…) signed the request, per the Standard Webhooks scheme. */
function signedWith(secret, { headers, body }) {
  const key = Buffer.from(secret.replace(/^whsec_/, ''), 'base64');
  const want = createHmac('sha256', key).update(`${headers['webhook-id']}.${headers['webhook-timestamp']}.${body}`).digest();
  return String(headers['webhook-signature'] ?? '')
    .split(' ')
    .map((s) => Buffer.from(s.replace(/^v1,/, ''), 'base64'))
    .some((sig) => sig.length === want.length && timingSafeEqual(sig, want));
}

const { browser, newPage, pageErrors } = await launch({ viewport: { width: 1200, height: 900 }, timeout: 15_000 });
/** Waits for the page's message to read `want`; on timeout says what it read instead. */
async function message(page, want, timeout = 15_000) {
  try {
    await page.getByTestId('message').filter({ hasText: want }).waitFor({ timeout });
  } catch {
    const got = await page.getByTestId('message').innerText().catch(() => '(no message)');
    throw new Error(`expected the message ${want}, the page says "${got}"`);
  }
}

const receiver = await startReceiver();
try {
  const maildir = join(WORK, 'maildir-admin');
  await check('admin: the notifier and an SMTP sink start; a webhook receiver listens on loopback', async () => {
    // The notifier delivers to loopback only because this run allows it, as proposals-api does.
    const { smtpPort } = await startNotifier({
      root: ROOT, bin: BIN, work: WORK, base: BASE, maildir, children,
      env: { FOLIO_WEBHOOK_ALLOWED_SUBNETS: '127.0.0.1/32' },
    });
    return `SMTP on :${smtpPort}, receiver on :${receiver.port}`;
  });

  // The demo agency's users, as the development sign-in lists them (dev-users.json).
  const users = JSON.parse(readFileSync(join(WORK, 'gateway', 'dev-users.json'), 'utf8'));
  const admin = users.find((u) => u.role === 'admin');
  const viewer = users.find((u) => u.role === 'viewer');
  assert(admin && viewer, `dev-users.json has no admin or no viewer: ${users.map((u) => u.role)}`);
  const adminId = JSON.parse(Buffer.from(admin.token.split('.')[1], 'base64url')).sub;
  const A = await newPage(admin, 'admin');
  // Each run has a database of its own: a fixed address is new in it.
  const invitee = 'nia@northwind.example';
  const row = (email) => A.page.locator(`[data-testid=member-row][data-email="${email}"]`);

  let link;
  await check('admin: inviting an address emails a single-use link to it', async () => {
    await A.page.goto(BASE);
    await A.page.getByTestId('admin-link').click();
    await A.page.getByRole('heading', { name: 'Members' }).waitFor();
    await row(admin.email).waitFor();
    await A.page.getByRole('button', { name: 'Send invitation' }).click();
    await message(A.page, 'enter the address');
    await A.page.getByLabel('Email address').fill('not an address');
    await A.page.getByRole('button', { name: 'Send invitation' }).click();
    await A.page.getByTestId('field-error-email').filter({ hasText: 'not an email address' }).waitFor();
    await A.page.getByLabel('Email address').fill(invitee);
    await A.page.getByLabel('Role', { exact: true }).selectOption({ label: 'Viewer — reads proposals' });
    await A.page.getByLabel('Link works for').selectOption({ label: '1 day' });
    await A.page.getByRole('button', { name: 'Send invitation' }).click();
    await message(A.page, `Invitation emailed to ${invitee}`);
    await A.page.locator(`[data-testid=invitation-row][data-email="${invitee}"]`).filter({ hasText: 'Viewer' }).waitFor();
    const mail = await until('the invitation email', () => mails(maildir).find((m) => m.includes(invitee)));
    const m = mail.match(new RegExp(`${escapeRegExp(BASE)}/invite/([A-Za-z0-9_-]{43})`));
    assert(m, `no ${BASE}/invite/<token> link in the email:\n${mail.slice(0, 1500)}`);
    link = m[0];
    const [stored, validFor] = sql(`SELECT encode(token_sha256, 'hex'), round(extract(epoch FROM expires_at - created_at)) FROM invitations WHERE email = ${lit(invitee)}`).split('|');
    assert(stored === createHash('sha256').update(m[1]).digest('hex'), 'the emailed token is not the stored invitation');
    assert(validFor === '86400', `the link works for ${validFor} s, not the day chosen`);
    return `${BASE}/invite/${m[1].slice(0, 6)}…`;
  });

  await check('invitee: the link opens the invitation page; accepting with a name joins; the admin sees them live; the link then fails', async () => {
    const I = await newPage(null, 'invitee');
    const response = await I.page.goto(link);
    const headers = response.headers();
    assert(headers['cache-control'] === 'no-store' && headers['referrer-policy'] === 'no-referrer', `the invitation page's headers: ${JSON.stringify(headers)}`);
    await I.page.getByTestId('invite-accept').click();
    await I.page.getByText('Enter your name').waitFor();
    await I.page.getByTestId('invite-name').fill('Nia Newcomer');
    if (SHOTS) await I.page.screenshot({ path: join(SHOTS, 'invite.png') });
    audits.push(await audit(I.page, 'invitation'));
    await I.page.getByTestId('invite-accept').click();
    const done = await I.page.getByTestId('invite-done').innerText();
    assert(done.includes('Welcome, Nia Newcomer') && done.includes('viewer') && done.includes(invitee), `the page after accepting: ${done}`);
    // The admin's list reads the members again on its own: no reload.
    await row(invitee).filter({ hasText: 'Nia Newcomer' }).waitFor({ timeout: 10_000 });
    assert(await A.page.locator(`[data-testid=invitation-row][data-email="${invitee}"]`).count() === 0, 'the accepted invitation is still listed as pending');
    const again = await newPage(null, 'invitee-again');
    await again.page.goto(link);
    await again.page.getByTestId('invite-name').fill('Someone Else');
    await again.page.getByTestId('invite-accept').click();
    const refused = await again.page.getByTestId('invite-invalid').innerText();
    assert(/not valid/.test(refused) && /used already, or it has expired/.test(refused), `the second use: ${refused}`);
    assert(sql(`SELECT count(*) FROM users WHERE email = ${lit(invitee)}`) === '1', 'the link made a second member');
    const token = link.split('/').pop();
    const log = readFileSync(join(WORK, 'gateway', 'access.log'), 'utf8');
    assert(log.includes('POST /folio.api.v1.InvitationService/AcceptInvitation') && !log.includes(token), 'the access log holds the invitation token (or logs nothing)');
    await I.context.close();
    await again.context.close();
  });

  await check('admin: an invitation resent gets a new link (the old one fails), a revoked one fails too; the audit log lists it all, newest first', async () => {
    const other = 'second.reader@example.com';
    await A.page.getByLabel('Email address').fill(other);
    await A.page.getByRole('button', { name: 'Send invitation' }).click();
    await message(A.page, `Invitation emailed to ${other}`);
    const pending = A.page.locator(`[data-testid=invitation-row][data-email="${other}"]`);
    const links = () => mails(maildir).filter((m) => m.includes(other)).map((m) => m.match(new RegExp(`${escapeRegExp(BASE)}/invite/([A-Za-z0-9_-]{43})`))?.[0]).filter(Boolean);
    const first = (await until('the first invitation email', () => links().length === 1 && links()))[0];
    await pending.getByTestId('invitation-resend').click();
    await message(A.page, `A new link was emailed to ${other}`);
    const second = (await until('the resent invitation email', () => links().length === 2 && links())).find((l) => l !== first);
    assert(second && second !== first, 'the resend emailed the same link');
    await pending.getByTestId('invitation-revoke').click();
    await message(A.page, `The invitation of ${other} was revoked`);
    await pending.waitFor({ state: 'detached' });
    // Neither link works now: one generic answer for both.
    const X = await newPage(null, 'revoked-invitee');
    for (const l of [first, second]) {
      await X.page.goto(l);
      await X.page.getByTestId('invite-name').fill('Too Late');
      await X.page.getByTestId('invite-accept').click();
      await X.page.getByTestId('invite-invalid').waitFor();
    }
    await X.context.close();
    assert(sql(`SELECT count(*) FROM users WHERE email = ${lit(other)}`) === '0', 'a revoked invitation made a member');
    await A.page.getByRole('link', { name: 'Audit log' }).click();
    const actions = await until('the audit rows', async () => {
      const rows = await A.page.getByTestId('audit-row').evaluateAll((rs) => rs.map((r) => r.dataset.action));
      return rows.length >= 5 && rows;
    });
    assert(
      actions.slice(0, 5).join(' ') === 'member.invitation_revoked member.invitation_resent member.invited member.joined member.invited',
      `the audit log reads: ${actions.join(', ')}`,
    );
    assert((await A.page.getByTestId('audit-row').first().innerText()).includes(other), 'the revocation does not name the address');
    audits.push(await audit(A.page, 'audit log'));
    await A.page.getByRole('link', { name: 'Members' }).click();
    return `${actions.length} audit events`;
  });

  await check('admin: a role change is saved; demoting the last admin is refused in words and the role stays', async () => {
    await row(invitee).getByTestId('member-role').selectOption({ label: 'Editor' });
    await message(A.page, 'Nia Newcomer is now editor');
    assert(sql(`SELECT role FROM users WHERE email = ${lit(invitee)}`) === 'editor', 'the role in the database');
    await row(admin.email).getByTestId('member-role').selectOption({ label: 'Viewer' });
    await message(A.page, "last admin can be neither demoted nor removed");
    const alert = await A.page.getByRole('alert').innerText();
    assert(alert.startsWith(`${admin.name}'s role was not changed`), `the refusal reads: ${alert}`);
    assert((await row(admin.email).getByTestId('member-role').inputValue()) === '3', 'the select does not show the kept admin role');
    assert(sql(`SELECT role FROM users WHERE id = ${lit(adminId)}`) === 'admin', 'the admin was demoted');
    if (SHOTS) await A.page.screenshot({ path: join(SHOTS, 'admin-members.png'), fullPage: true });
    audits.push(await audit(A.page, 'members'));
    return alert;
  });

  await check('admin: a private-network URL is refused next to the field; an endpoint on the receiver shows its secret once', async () => {
    await A.page.getByRole('navigation', { name: 'Administration' }).getByRole('link', { name: 'Webhooks' }).click();
    await A.page.getByRole('button', { name: 'New endpoint' }).click();
    await A.page.locator('input[data-event-type="proposal.accepted"]').waitFor();
    await A.page.locator('#ep-url').fill('http://10.20.30.40/hooks');
    await A.page.getByRole('button', { name: 'Create endpoint' }).click();
    const fieldError = A.page.getByTestId('field-error-url');
    await fieldError.waitFor();
    const said = await fieldError.innerText();
    assert(/10\.20\.30\.40|private/.test(said), `the URL's error: ${said}`);
    assert((await A.page.locator('#ep-url').getAttribute('aria-describedby')) === (await fieldError.getAttribute('id')), 'the error is not tied to the URL field');
    await message(A.page, 'Not created: URL');
    const url = `http://127.0.0.1:${receiver.port}/folio`;
    await A.page.locator('#ep-url').fill(url);
    await A.page.locator('#ep-description').fill('CRM sync');
    await A.page.locator('input[data-event-type="proposal.accepted"]').check();
    await A.page.locator('input[data-event-type="proposal.declined"]').check();
    await A.page.getByRole('button', { name: 'Create endpoint' }).click();
    const secret = await A.page.getByTestId('secret-value').innerText();
    audits.push(await audit(A.page, 'webhooks with the secret'));
    assert(/^whsec_[A-Za-z0-9+/=]{20,}$/.test(secret), `the secret shown: ${secret}`);
    await A.page.locator(`[data-testid=endpoint-row][data-url="${url}"]`).waitFor();
    const [types, description] = sql(`SELECT array_to_string(ARRAY(SELECT unnest(event_types) ORDER BY 1), ','), description FROM webhook_endpoints WHERE url = ${lit(url)}`).split('|');
    assert(types.split(',').sort().join(',') === 'proposal.accepted,proposal.declined' && description === 'CRM sync', `stored: ${types} ${description}`);
    await A.page.getByRole('button', { name: 'I have stored it' }).click();
    await A.page.reload();
    await A.page.locator(`[data-testid=endpoint-row][data-url="${url}"]`).waitFor();
    assert(!(await A.page.locator('body').innerText()).includes(secret), 'the secret is shown again after a reload');
    A.secret = secret;
    A.url = url;
  });

  await check('admin: "Send test event" reaches the receiver signed with that secret, and its attempt is listed', async () => {
    await A.page.locator(`[data-testid=endpoint-row][data-url="${A.url}"]`).getByRole('link').click();
    await A.page.getByTestId('endpoint-url').filter({ hasText: A.url }).waitFor();
    const sentAt = Date.now();
    await A.page.getByTestId('send-test').click();
    await message(A.page, 'webhook.test event is queued');
    const got = await until('the test event at the receiver', () => receiver.received.find((r) => r.body.includes('"webhook.test"')));
    const lag = Date.now() - sentAt;
    assert(got.path === '/folio' && signedWith(A.secret, got), `the delivery is not signed with the secret shown (${got.headers['webhook-signature']})`);
    const attempt = A.page.locator(`[data-testid=attempt-row][data-webhook-id="${got.headers['webhook-id']}"]`);
    await attempt.filter({ hasText: 'Succeeded' }).waitFor({ timeout: 10_000 });
    assert((await attempt.getByTestId('attempt-code').innerText()) === '200', 'the attempt\'s response code');
    await A.page.getByTestId('delivery').getByTestId('delivery-status').filter({ hasText: 'Delivered' }).waitFor();
    if (SHOTS) await A.page.screenshot({ path: join(SHOTS, 'admin-webhooks.png'), fullPage: true });
    audits.push(await audit(A.page, 'endpoint'));
    return `delivered ${lag} ms after the click, webhook-id ${got.headers['webhook-id']}`;
  });

  await check('admin: replay, rotation (both secrets sign during the grace period), edit, disable and enable, recovery, delete', async () => {
    const first = receiver.received.find((r) => r.body.includes('"webhook.test"'));
    const id = first.headers['webhook-id'];
    await A.page.getByTestId('replay').click();
    await message(A.page, `queued again with its original webhook-id ${id}`);
    await until('the replayed message', () => receiver.received.filter((r) => r.headers['webhook-id'] === id).length === 2);

    await A.page.getByRole('button', { name: 'Rotate secret…' }).click();
    await A.page.getByLabel('Old secret keeps signing for').selectOption({ label: '1 hour' });
    await A.page.getByRole('button', { name: 'Rotate now' }).click();
    await message(A.page, 'deliveries carry both signatures until');
    const rotated = await A.page.getByTestId('secret-value').innerText();
    assert(rotated.startsWith('whsec_') && rotated !== A.secret, 'no new secret shown');
    await A.page.getByRole('button', { name: 'I have stored it' }).click();
    await A.page.getByTestId('endpoint-state').filter({ hasText: 'old secret signs until' }).waitFor();
    const before = receiver.received.length;
    await A.page.getByTestId('send-test').click();
    const next = await until('a test event after the rotation', () => receiver.received.slice(before).find((r) => r.body.includes('"webhook.test"')));
    assert(signedWith(rotated, next) && signedWith(A.secret, next), `during the grace period both secrets must sign: ${next.headers['webhook-signature']}`);

    await A.page.getByRole('button', { name: 'Edit', exact: true }).click();
    await A.page.locator('#edit-url').fill('http://192.168.7.7/folio');
    await A.page.locator('input[data-event-type="proposal.declined"]').uncheck();
    await A.page.locator('input[data-event-type="proposal.updated"]').check();
    await A.page.getByRole('button', { name: 'Save', exact: true }).click();
    await A.page.getByTestId('field-error-url').filter({ hasText: '192.168.7.7' }).waitFor();
    await A.page.locator('#edit-url').fill(A.url);
    await A.page.getByRole('button', { name: 'Save', exact: true }).click();
    await message(A.page, 'Saved.');
    const [endpoint, types] = sql(`SELECT id, array_to_string(ARRAY(SELECT unnest(event_types) ORDER BY 1), ',') FROM webhook_endpoints WHERE url = ${lit(A.url)}`).split('|');
    assert(types === 'proposal.accepted,proposal.updated', `the edited filter: ${types}`);

    // An outage: while the endpoint is disabled, a proposal changes; its message is recorded as
    // failed, and "Deliver again" after enabling delivers it.
    await A.page.getByRole('button', { name: 'Disable' }).click();
    await message(A.page, 'Disabled: events are recorded as failed');
    await A.page.getByTestId('endpoint-state').filter({ hasText: 'Disabled' }).waitFor();
    assert(await A.page.getByTestId('send-test').isDisabled(), 'a disabled endpoint offers a test event');
    const renamed = `Renamed during the outage ${Date.now()}`;
    sql(`UPDATE proposals SET title = ${lit(renamed)}, version = version + 1, updated_at = now()
          WHERE id = (SELECT id FROM proposals WHERE agency_id = ${lit(admin.agency_id)} ORDER BY id LIMIT 1)`);
    await until('the message recorded as failed', () => sql(`SELECT count(*) FROM notification_deliveries WHERE recipient = ${lit(endpoint)} AND event_type = 'proposal.updated' AND status = 'failed'`) === '1');
    await A.page.getByRole('button', { name: 'Enable' }).click();
    await message(A.page, 'Enabled: new events are delivered again');
    await A.page.getByRole('button', { name: 'Deliver again' }).click();
    await message(A.page, '1 failed message is queued again');
    await until('the recovered message at the receiver', () => receiver.received.find((r) => r.body.includes(renamed) && r.body.includes('"proposal.updated"')));
    await A.page.getByRole('button', { name: 'Deliver again' }).click();
    await message(A.page, 'No failed message since');

    await A.page.getByRole('button', { name: 'Delete…' }).click();
    await A.page.getByRole('button', { name: 'Delete the endpoint' }).click();
    await A.page.getByRole('heading', { name: 'Webhook endpoints' }).waitFor();
    await A.page.getByText('No endpoint yet').waitFor();
    return `replayed ${id}; after rotating, a delivery verified with the old and the new secret; the outage's message recovered`;
  });

  await check('admin: an agency email default applies to members who chose nothing; removing the new member', async () => {
    await A.page.getByRole('navigation', { name: 'Administration' }).getByRole('link', { name: 'Email defaults' }).click();
    const expiring = A.page.locator('[data-testid=preference][data-event-type="proposal.expiring"]');
    await expiring.getByRole('switch').uncheck();
    await message(A.page, 'proposal.expiring emails are not sent');
    await expiring.filter({ hasText: 'set by an admin' }).getByRole('button', { name: 'Clear' }).waitFor();
    assert(await A.page.locator('[data-testid=preference][data-event-type="proposal.sent"]').getByTestId('locked').count() === 1, 'the mandatory email is not locked for the agency');
    await A.page.getByRole('navigation', { name: 'Administration' }).getByRole('link', { name: 'Members' }).click();
    await row(invitee).getByRole('button', { name: 'Remove…' }).click();
    await row(invitee).getByTestId('confirm-remove').click();
    await message(A.page, 'Nia Newcomer was removed');
    await row(invitee).waitFor({ state: 'detached' });
    assert(sql(`SELECT count(*) FROM users WHERE email = ${lit(invitee)}`) === '0', 'the removed member is still stored');
  });

  await check('viewer: signs in from the demo list, keeps an email preference across a reload (then clears it), sees the agency default and the mandatory email locked, gets no admin area', async () => {
    const V = await newPage(null, 'viewer');
    const adminCalls = [];
    V.page.on('request', (r) => /\/folio\.api\.v1\.(MemberService|WebhookService)\//.test(r.url()) && adminCalls.push(r.url()));
    await V.page.goto(BASE);
    await V.page.getByRole('button', { name: new RegExp(`^${escapeRegExp(viewer.name)}`) }).click();
    await V.page.getByRole('navigation', { name: 'Sections' }).waitFor();
    assert(await V.page.getByTestId('admin-link').count() === 0, 'a viewer is offered the admin area');
    await V.page.getByRole('link', { name: 'Email settings' }).click();
    const viewed = V.page.locator('[data-testid=preference][data-event-type="proposal.viewed"]');
    const box = viewed.getByRole('switch');
    assert(await box.isChecked(), 'proposal.viewed is not sent to begin with (expected Folio’s default: sent)');
    await box.uncheck();
    await message(V.page, 'proposal.viewed emails are not sent');
    const expiring = V.page.locator('[data-testid=preference][data-event-type="proposal.expiring"]');
    assert(!(await expiring.getByRole('switch').isChecked()) && (await expiring.innerText()).includes('agency’s default'), 'the agency default does not apply to the viewer');
    const sent = V.page.locator('[data-testid=preference][data-event-type="proposal.sent"]');
    assert(await sent.getByTestId('locked').count() === 1 && await sent.getByRole('switch').count() === 0, 'the mandatory email can be switched');
    await V.page.reload();
    await viewed.filter({ hasText: 'your choice' }).waitFor();
    assert(!(await viewed.getByRole('switch').isChecked()), 'the choice was not kept after a reload');
    const stored = sql(`SELECT opted_out FROM notification_preferences p JOIN users u ON u.id = p.user_id WHERE u.email = ${lit(viewer.email)} AND p.event_type = 'proposal.viewed'`);
    assert(stored === 't', `stored opt-out: ${stored || 'none'}`);
    audits.push(await audit(V.page, 'email settings'));
    await viewed.getByRole('button', { name: 'Use agency default' }).click();
    await message(V.page, 'proposal.viewed emails follow the agency’s default again (sent)');
    await viewed.filter({ hasText: 'Folio’s default' }).waitFor();
    assert(await viewed.getByRole('switch').isChecked(), 'cleared, proposal.viewed is not back on');
    await V.page.goto(`${BASE}/admin/members`);
    await V.page.getByTestId('admin-refused').waitFor();
    assert(await V.page.getByTestId('members').count() === 0, 'a viewer sees the members');
    assert(adminCalls.length === 0, `the viewer's pages called admin RPCs: ${adminCalls}`);
    await V.context.close();
  });
  await check('admin pages: axe-core finds no serious or critical violation', async () => audits.join(', '));
  assert(pageErrors.length === 0, `uncaught errors in the pages: ${pageErrors.join('; ')}`);
} catch (e) {
  if (!outcome.failures) console.error(`web-tests: FAIL ${e?.stack ?? e}`);
  outcome.failures = Math.max(outcome.failures, 1);
} finally {
  await browser.close();
  receiver.close();
  for (const c of children) c.kill('SIGTERM');
}
process.exit(outcome.failures ? 1 : 0);
