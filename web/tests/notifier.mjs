// The notifier and an SMTP sink next to the cluster tests/run.sh started, for the browser tests
// that read what Folio emails (client.mjs, admin.mjs). The sink is aiosmtpd, as the notifier's
// own tests use it (scripts/notifier-test-deps.sh), storing each message in a maildir.
import { spawn, execFileSync } from 'node:child_process';
import { readFileSync, readdirSync, openSync, existsSync } from 'node:fs';
import { join } from 'node:path';

/**
 * Starts the SMTP sink (messages into `maildir`) and the notifier from `bin`, sending through
 * it with links that start with `base` (the gateway, as in production). Both are pushed onto
 * `children` for the caller to stop. Every script of a run uses the same consumer names: the
 * invitation jobs are a work queue, on which JetStream allows one consumer per subject, and the
 * run's streams are its own anyway. `env` adds to the notifier's environment.
 */
export async function startNotifier({ root, bin, work, base, maildir, children, env = {} }) {
  const python = execFileSync(join(root, 'scripts/notifier-test-deps.sh'), { encoding: 'utf8' }).trim();
  const sink = spawn(python, [join(root, 'services/notifier/tests/support/smtp_sink.py'), maildir], { stdio: ['ignore', 'pipe', 'inherit'] });
  children.push(sink);
  const port = await new Promise((resolve, reject) => {
    let buf = '';
    sink.stdout.on('data', (d) => {
      buf += d;
      const m = buf.match(/PORT (\d+)/);
      if (m) resolve(Number(m[1]));
    });
    sink.on('exit', () => reject(new Error('the SMTP sink exited')));
  });
  const log = join(work, 'notifier.log');
  // The log is shared by every notifier of the run: count this one's start line.
  const starts = () => (existsSync(log) ? readFileSync(log, 'utf8').split('notifier listening').length - 1 : 0);
  const before = starts();
  const notifier = spawn(join(bin, 'notifier'), [], {
    env: {
      ...process.env,
      FOLIO_SMTP_URL: `smtp://127.0.0.1:${port}`,
      FOLIO_PUBLIC_BASE_URL: base,
      FOLIO_NOTIFIER_HTTP_ADDR: '127.0.0.1:0',
      FOLIO_ADMIN_ADDR: '127.0.0.1:0',
      FOLIO_NOTIFIER_CONSUMER: 'notifier_web',
      FOLIO_SCHEDULER_POLL: '100ms',
      RUST_LOG: 'info',
      ...env,
    },
    stdio: ['ignore', openSync(log, 'a'), openSync(log, 'a')],
  });
  children.push(notifier);
  const end = Date.now() + 30_000;
  while (starts() <= before) {
    if (notifier.exitCode !== null) throw new Error(`the notifier exited (${notifier.exitCode}); see ${log}`);
    if (Date.now() > end) throw new Error('timed out waiting for the notifier to listen');
    await new Promise((r) => setTimeout(r, 100));
  }
  return { smtpPort: port, log };
}

/** Every message the sink stored, raw, quoted-printable soft breaks and `=3D` undone. */
export function mails(maildir) {
  const out = [];
  for (const sub of ['new', 'cur']) {
    const dir = join(maildir, sub);
    if (!existsSync(dir)) continue;
    for (const f of readdirSync(dir)) out.push(readFileSync(join(dir, f), 'utf8').replace(/=\r?\n/g, '').replace(/=3D/g, '='));
  }
  return out;
}
