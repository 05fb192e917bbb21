// Deletes the JetStream streams (KV and object buckets are streams too) whose name contains the
// run's id, case-insensitively: wal-ingest's EL<id>_CHANGES / EL<id>_JOBS and whatever the edge
// created under FOLIO_DS_PREFIX=el<id>. Speaks the NATS text protocol (no client library, no nats
// CLI). Best effort: prints what it did, never fails the run.
//
//   node lib/nats-cleanup.mjs nats://127.0.0.1:4333 <run id>
import net from 'node:net'

const [natsUrl = 'nats://127.0.0.1:4333', runId] = process.argv.slice(2)
if (!runId || runId.length < 6) {
  console.error('nats-cleanup: refusing to run without a specific run id')
  process.exit(0)
}
const u = new URL(natsUrl)
// The id must not be part of a longer number (run 17_12 must not delete run 17_123's streams).
const needle = new RegExp(`(^|[^0-9])${runId.replace(/[^A-Za-z0-9_]/g, '')}([^0-9]|$)`, 'i')

const sock = net.connect(Number(u.port || 4222), u.hostname)
sock.setTimeout(5000, () => {
  console.error('nats-cleanup: timed out')
  sock.destroy()
  process.exit(0)
})
sock.on('error', (e) => {
  console.error(`nats-cleanup: ${e.message}`)
  process.exit(0)
})

let buf = Buffer.alloc(0)
const waiters = new Map() // sid -> resolve
let sid = 0
const inbox = `_INBOX.folio_el_cleanup_${process.pid}`

function request(subject, payload) {
  const id = ++sid
  const reply = `${inbox}.${id}`
  const body = Buffer.from(payload ?? '')
  sock.write(`PUB ${subject} ${reply} ${body.length}\r\n`)
  sock.write(body)
  sock.write('\r\n')
  return new Promise((resolve) => waiters.set(reply, resolve))
}

sock.on('data', (chunk) => {
  buf = Buffer.concat([buf, chunk])
  for (;;) {
    const eol = buf.indexOf('\r\n')
    if (eol < 0) return
    const line = buf.subarray(0, eol).toString()
    if (line.startsWith('MSG ')) {
      const parts = line.split(' ')
      const size = Number(parts[parts.length - 1])
      if (buf.length < eol + 2 + size + 2) return
      const payload = buf.subarray(eol + 2, eol + 2 + size).toString()
      buf = buf.subarray(eol + 2 + size + 2)
      const w = waiters.get(parts[1])
      if (w) {
        waiters.delete(parts[1])
        w(payload)
      }
      continue
    }
    buf = buf.subarray(eol + 2)
    if (line.startsWith('PING')) sock.write('PONG\r\n')
    if (line.startsWith('-ERR')) console.error(`nats-cleanup: ${line}`)
  }
})

sock.once('data', async () => {
  sock.write('CONNECT {"verbose":false,"pedantic":false,"name":"folio-electric-cleanup"}\r\n')
  sock.write(`SUB ${inbox}.* 1\r\n`)
  const names = []
  for (let offset = 0; ; ) {
    const r = JSON.parse(await request('$JS.API.STREAM.NAMES', JSON.stringify({ offset })))
    if (r.error) {
      console.error(`nats-cleanup: ${JSON.stringify(r.error)}`)
      break
    }
    const page = r.streams ?? []
    names.push(...page)
    offset += page.length
    if (!page.length || offset >= (r.total ?? 0)) break
  }
  const mine = names.filter((n) => needle.test(n))
  for (const n of mine) {
    const r = JSON.parse(await request(`$JS.API.STREAM.DELETE.${n}`, ''))
    console.error(`nats-cleanup: delete ${n}: ${r.success ? 'ok' : JSON.stringify(r.error)}`)
  }
  sock.end()
  process.exit(0)
})
