// 13. Transactions are atomic for the client: Electric appends only whole transactions to a shape,
// so `up-to-date` (which the client and TanStack DB treat as "a consistent state to render") and
// `headers.last` fall only on transaction boundaries, however many responses a transaction spans.
//
// One writer (pg, straight to Postgres) runs transactions of 1 to 5,300 rows of the shape table T
// (INSERT … SELECT generate_series, multi-row UPDATE, DELETE), with writes to two other tables
// before, between and after T's statements, plus transactions touching only T or only the others.
// The oracle mirrors every table from the rows the statements return (… RETURNING) and records
// the committed state after each COMMIT (checked against the tables at the end). Subscribers apply
// the messages themselves (insert = set, update = merge, delete = remove): long-poll and SSE, the
// whole table and `where` shapes, started at the tail before the writes, and fresh shapes whose
// initial sync races the commits; the other tables have shapes too. Once the writer is done:
//   * at every up-to-date the subscriber's rows equal a committed state, never going back;
//   * no up-to-date falls inside a transaction (the change messages before and after it belong to
//     different transactions, and the one before it carries `last: true`);
//   * `last: true` is on the final message of each transaction for the shape and nowhere else.
// The mix of transactions is random: the seed is printed, ELECTRIC_TEST_SEED=<n> replays it.
import assert from 'node:assert/strict'
import { harnessTest, uniq, ident, sleep } from './harness.mjs'

const test = harnessTest()

/** Deterministic PRNG (mulberry32). */
function prng(seed) {
  let a = seed >>> 0
  return () => {
    a = (a + 0x6d2b79f5) >>> 0
    let t = a
    t = Math.imul(t ^ (t >>> 15), t | 1)
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61)
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296
  }
}

/** Two 32-bit lanes of a string hash. */
function rowHash(s) {
  let h1 = 0x811c9dc5 ^ s.length
  let h2 = 0x9747b28c
  for (let i = 0; i < s.length; i++) {
    const c = s.charCodeAt(i)
    h1 = Math.imul(h1 ^ c, 0x01000193)
    h2 = Math.imul(h2 ^ c, 0x5bd1e995)
    h2 ^= h2 >>> 15
  }
  h1 = Math.imul(h1 ^ (h1 >>> 16), 0x85ebca6b)
  h1 ^= h1 >>> 13
  h2 = Math.imul(h2 ^ (h2 >>> 13), 0xc2b2ae35)
  h2 ^= h2 >>> 16
  return [h1 >>> 0, h2 >>> 0]
}

/** An order-independent fingerprint of a set of rows: count and lane-wise sums of row hashes. */
class Fingerprint {
  constructor() {
    this.count = 0
    this.a = 0
    this.b = 0
  }
  add(s) {
    const [x, y] = rowHash(s)
    this.a = (this.a + x) >>> 0
    this.b = (this.b + y) >>> 0
    this.count++
  }
  remove(s) {
    const [x, y] = rowHash(s)
    this.a = (this.a - x) >>> 0
    this.b = (this.b - y) >>> 0
    this.count--
  }
  get value() {
    return `${this.count}:${this.a.toString(16)}:${this.b.toString(16)}`
  }
}

// The views a subscriber can have: a table's rows as canonical strings, optionally filtered.
const WHERE = 'n < 500'
const views = {
  T: { table: 'T', row: (r) => `${r.id}|${r.n}|${r.title}`, filter: () => true },
  Tw: { table: 'T', row: (r) => `${r.id}|${r.n}|${r.title}`, filter: (r) => r.n < 500 }, // = WHERE
  O1: { table: 'O1', row: (r) => `${r.id}|${r.note}`, filter: () => true },
  O2: { table: 'O2', row: (r) => `${r.id}|${r.v}`, filter: () => true },
}
for (const [k, v] of Object.entries(views)) v.key = k

/**
 * Applies a subscriber's messages to its own row map and records, at each up-to-date, the
 * fingerprint of what it holds and where in the transaction sequence it stands.
 */
class Tracker {
  constructor(label, view, s) {
    this.label = label
    this.view = view
    this.s = s
    this.rows = new Map() // key -> row
    this.fp = new Fingerprint()
    this.rep = [] // replication change messages in order: {txid, last, offset, batch}
    this.seen = new Set() // offsets of replication messages (re-deliveries are counted, not re-checked)
    this.redelivered = 0
    this.utd = [] // {fp, count, repIndex}
    this.refetches = 0
    this.batches = 0
    this.unsubscribe = s.stream.subscribe((batch) => this.apply(batch))
  }

  put(key, row) {
    const old = this.rows.get(key)
    if (old) this.fp.remove(this.view.row(old))
    this.rows.set(key, row)
    this.fp.add(this.view.row(row))
  }

  apply(batch) {
    const b = this.batches++
    for (const m of batch) {
      const hd = m.headers ?? {}
      if (hd.control === 'up-to-date') {
        this.utd.push({ fp: this.fp.value, count: this.rows.size, repIndex: this.rep.length })
        continue
      }
      if (hd.control === 'must-refetch') {
        this.refetches++
        this.rows.clear()
        this.fp = new Fingerprint()
        continue
      }
      if (hd.control !== undefined || m.key === undefined) continue
      if (hd.lsn !== undefined) {
        const offset = `${hd.lsn}_${hd.op_position}`
        if (this.seen.has(offset)) this.redelivered++
        else {
          this.seen.add(offset)
          this.rep.push({ txid: hd.txids?.[0], last: hd.last === true, offset, batch: b })
        }
      }
      const old = this.rows.get(m.key)
      if (hd.operation === 'insert') this.put(m.key, { ...m.value })
      else if (hd.operation === 'update') this.put(m.key, { ...(old ?? {}), ...m.value })
      else if (hd.operation === 'delete') {
        if (old) {
          this.fp.remove(this.view.row(old))
          this.rows.delete(m.key)
        }
      }
    }
  }

  get lastFp() {
    return this.utd.at(-1)?.fp
  }
}

/**
 * The oracle: the writer's mirror of every table, kept from the rows its statements return
 * (INSERT/UPDATE … RETURNING the new rows, DELETE … RETURNING the key), and after each COMMIT the
 * fingerprint of every view: the list of committed states. At the end it is checked against the
 * tables themselves.
 */
class Oracle {
  constructor() {
    this.rows = { T: new Map(), O1: new Map(), O2: new Map() }
    this.fps = Object.fromEntries(Object.keys(views).map((v) => [v, new Fingerprint()]))
    this.states = [] // {xid, label, fps: {view: fp}}
  }
  set(table, row) {
    const old = this.rows[table].get(row.id)
    this.unset(table, row.id)
    const next = { ...(old ?? {}), ...row }
    this.rows[table].set(row.id, next)
    for (const [v, def] of Object.entries(views)) if (def.table === table && def.filter(next)) this.fps[v].add(def.row(next))
  }
  unset(table, id) {
    const old = this.rows[table].get(id)
    if (!old) return
    for (const [v, def] of Object.entries(views)) if (def.table === table && def.filter(old)) this.fps[v].remove(def.row(old))
    this.rows[table].delete(id)
  }
  commit(xid, label) {
    this.states.push({ xid, label, fps: Object.fromEntries(Object.entries(this.fps).map(([v, f]) => [v, f.value])) })
  }
  /** view -> Map(fp -> sorted indices of the committed states with that fingerprint) */
  index(view) {
    const m = new Map()
    this.states.forEach((s, i) => {
      const fp = s.fps[view]
      if (!m.has(fp)) m.set(fp, [])
      m.get(fp).push(i)
    })
    return m
  }
}

/** Checks one subscriber against the oracle; returns counters and examples of violations. */
function analyse(tr, oracle) {
  const idx = oracle.index(tr.view.key)
  const rep = tr.rep
  const out = {
    label: tr.label,
    upToDates: tr.utd.length,
    insideTxn: 0,
    notCommitted: 0,
    backwards: 0,
    lastMidTxn: 0,
    missingLast: 0,
    redelivered: tr.redelivered,
    refetches: tr.refetches,
    httpErrors: tr.s.fetchLog.filter((e) => e.status >= 400).length,
    requests: tr.s.fetchLog.length,
    maxBatchesPerTxn: 0,
    examples: [],
  }
  const txnSize = new Map()
  for (const r of rep) txnSize.set(r.txid, (txnSize.get(r.txid) ?? 0) + 1)
  const posInTxn = (i) => {
    // 1-based position of rep[i] within its transaction's messages
    let k = 0
    for (let j = i; j >= 0 && rep[j].txid === rep[i].txid; j--) k++
    return k
  }
  const example = (describe) => {
    if (out.examples.length < 8) out.examples.push(describe())
  }
  let at = 0 // lowest committed state index still possible (states never go back)
  for (const [u, st] of tr.utd.entries()) {
    const before = rep[st.repIndex - 1]
    const after = rep[st.repIndex]
    if (before && ((after && after.txid === before.txid) || !before.last)) {
      out.insideTxn++
      example(
        () => `up-to-date #${u} after ${posInTxn(st.repIndex - 1)} of ${txnSize.get(before.txid)} messages of xid ${before.txid}` +
          ` (last=${before.last}; client held ${st.count} rows)`,
      )
    }
    const candidates = idx.get(st.fp)
    if (!candidates) {
      out.notCommitted++
      example(() => `up-to-date #${u}: ${st.count} rows, not a committed state`)
      continue
    }
    const next = candidates.find((i) => i >= at)
    if (next === undefined) {
      out.backwards++
      example(() => `up-to-date #${u}: committed state #${candidates.at(-1)} after #${at} (went back)`)
      continue
    }
    at = next
  }
  const batchesOf = new Map()
  for (const [i, r] of rep.entries()) {
    const n = rep[i + 1]
    if (n && n.txid === r.txid && r.last) {
      out.lastMidTxn++
      example(() => `last=true on message ${posInTxn(i)} of ${txnSize.get(r.txid)} of xid ${r.txid}`)
    }
    if ((!n || n.txid !== r.txid) && !r.last) {
      out.missingLast++
      example(() => `final message of xid ${r.txid} (${txnSize.get(r.txid)} messages) without last=true`)
    }
    if (!batchesOf.has(r.txid)) batchesOf.set(r.txid, new Set())
    batchesOf.get(r.txid).add(r.batch)
  }
  for (const s of batchesOf.values()) out.maxBatchesPerTxn = Math.max(out.maxBatchesPerTxn, s.size)
  out.violations =
    out.insideTxn + out.notCommitted + out.backwards + out.lastMidTxn + out.missingLast + out.refetches + out.httpErrors
  return out
}

test('up-to-date and last fall only on transaction boundaries (long-poll and SSE, 1 to 5,000-row transactions)', { timeout: 120_000 }, async (_t, h) => {
  const started = Date.now()
  const seed = Number(process.env.ELECTRIC_TEST_SEED ?? Date.now() % 1_000_000)
  const rnd = prng(seed)
  const ri = (lo, hi) => lo + Math.floor(rnd() * (hi - lo + 1))

  const names = { T: uniq('txn_t'), O1: uniq('txn_o1'), O2: uniq('txn_o2') }
  const [T, O1, O2] = [ident(names.T), ident(names.O1), ident(names.O2)]
  await h.sql(`CREATE TABLE ${T} (id int4 PRIMARY KEY, n int4 NOT NULL, title text NOT NULL)`)
  await h.sql(`CREATE TABLE ${O1} (id int4 GENERATED ALWAYS AS IDENTITY PRIMARY KEY, note text NOT NULL)`)
  await h.sql(`CREATE TABLE ${O2} (id int4 PRIMARY KEY, v int4 NOT NULL)`)

  const oracle = new Oracle()
  const writer = await h.pool.connect()
  try {
    // Statements: [table, sql, kind]; every number is generated here, so literals are inlined.
    let txno = 0
    let nextId = 1
    const st = {
      insT: (k) => {
        const a = nextId
        nextId += k
        return ['T', `INSERT INTO ${T} (id, n, title) SELECT g, (g * 37 + ${txno}) % 1000, 'i${txno}_' || g FROM generate_series(${a}, ${a + k - 1}) g RETURNING id, n, title`]
      },
      updT: (k) => {
        const set = [`n = (n + ${ri(1, 997)}) % 1000`, `title = 'u${txno}_' || id`, `n = (n * 7 + 1) % 1000, title = 'v${txno}'`][ri(0, 2)]
        return ['T', `UPDATE ${T} SET ${set} WHERE id IN (SELECT id FROM ${T} ORDER BY random() LIMIT ${k}) RETURNING id, n, title`]
      },
      delT: (k) => ['T', `DELETE FROM ${T} WHERE id IN (SELECT id FROM ${T} ORDER BY random() LIMIT ${k}) RETURNING id`, 'delete'],
      o1: (k) => ['O1', `INSERT INTO ${O1} (note) SELECT 'o${txno}_' || g FROM generate_series(1, ${k}) g RETURNING id, note`],
      o2: (k) => ['O2', `INSERT INTO ${O2} SELECT g, ${txno} FROM generate_series(1, ${k}) g ON CONFLICT (id) DO UPDATE SET v = excluded.v RETURNING id, v`],
    }
    const sizes = [] // rows of T changed, per transaction touching T
    const hooks = new Map() // transaction number -> run after its COMMIT
    const run = async (label, steps) => {
      txno++
      await writer.query('BEGIN')
      let tRows = 0
      for (const [kind, k] of steps) {
        const [table, sql, op] = st[kind](k)
        const r = await writer.query(sql)
        for (const row of r.rows) op === 'delete' ? oracle.unset(table, row.id) : oracle.set(table, row)
        if (table === 'T') tRows += r.rowCount
      }
      const { rows } = await writer.query('SELECT pg_current_xact_id()::xid::text AS xid')
      await writer.query('COMMIT')
      oracle.commit(Number(rows[0].xid), label)
      if (tRows) sizes.push(tRows)
      await hooks.get(txno)?.()
    }

    await run('seed', [['insT', 200], ['o1', 20], ['o2', 20]])

    const trackers = []
    const open = (label, view, table, opts = {}) => {
      const params = { table, ...(opts.where ? { where: opts.where } : {}) }
      const tr = new Tracker(label, views[view], h.openStream({ params, label, liveSse: !!opts.sse }))
      trackers.push(tr)
      return tr
    }
    // Subscribers at the tail before the writes (the shapes on O1/O2 also publish those tables).
    open('T long-poll', 'T', names.T)
    open('T SSE', 'T', names.T, { sse: true })
    open(`T SSE where ${WHERE}`, 'Tw', names.T, { where: WHERE, sse: true })
    open('O1 long-poll', 'O1', names.O1)
    open('O2 SSE', 'O2', names.O2, { sse: true })
    for (const tr of trackers) await h.upToDate(tr.s, 30_000)
    // The live requests are open: the first transactions find the clients waiting at the tail.
    await h.eventually(() => {
      for (const tr of trackers) {
        assert.ok(tr.s.fetchLog.some((e) => new URL(e.url).searchParams.get('live') === 'true'), `${tr.label}: live request open`)
      }
    })

    // Fresh syncs racing the commits, opened right after these transactions and not awaited. Each
    // is a new shape (a `where` no other subscriber uses, selecting the rows of its view), so the
    // edge takes a new snapshot while the writes go on instead of serving an existing shape's log.
    hooks.set(7, async () => open('T long-poll where id > 0, started during the writes', 'T', names.T, { where: 'id > 0' }))
    hooks.set(16, async () => open(`T SSE where ${WHERE} AND id > 0, started during the writes`, 'Tw', names.T, { where: `${WHERE} AND id > 0`, sse: true }))

    const fixed = [
      ['T insert 1', [['insT', 1]]],
      ['T insert 2', [['insT', 2]]],
      ['O1 only', [['o1', 3]]],
      ['T insert 35 (the issue)', [['insT', 35]]],
      ['O1, T insert 250, O2, T insert 250, O1', [['o1', 2], ['insT', 250], ['o2', 5], ['insT', 250], ['o1', 1]]],
      ['O2, T insert 2500, O1, T update 300, T insert 2500, O2', [['o2', 10], ['insT', 2500], ['o1', 10], ['updT', 300], ['insT', 2500], ['o2', 3]]],
      ['O2 only', [['o2', 20]]],
      ['T update 1500, O1, T delete 1500', [['updT', 1500], ['o1', 4], ['delT', 1500]]],
      ['T delete 1, T update 1', [['delT', 1], ['updT', 1]]],
    ]
    // Waits until every subscriber holds the latest committed state and waits at the tail (its
    // live request open), so the next transaction reaches clients that are idle at the head.
    const settle = () =>
      h.eventually(
        () => {
          const fps = oracle.states.at(-1).fps
          for (const tr of trackers) {
            assert.equal(tr.lastFp, fps[tr.view.key], `${tr.label}: at the latest committed state`)
            const e = tr.s.fetchLog.at(-1)
            assert.ok(e && new URL(e.url).searchParams.get('live') === 'true' && !e.complete && !e.error, `${tr.label}: waiting live`)
          }
        },
        { timeoutMs: 30_000 },
      )
    for (const [label, steps] of fixed) {
      await run(label, steps)
      await settle()
    }
    const size = () => {
      const p = rnd()
      return p < 0.5 ? ri(1, 5) : p < 0.85 ? ri(6, 100) : ri(101, 600)
    }
    const tSteps = () => Array.from({ length: ri(1, 3) }, () => {
      const q = rnd()
      return [q < 0.45 ? 'insT' : q < 0.8 ? 'updT' : 'delT', size()]
    })
    const other = () => [rnd() < 0.5 ? 'o1' : 'o2', ri(1, 30)]
    for (let i = 0; i < 30; i++) {
      const p = rnd()
      let steps
      if (p < 0.15) steps = [other(), ...(rnd() < 0.5 ? [other()] : [])] // other tables only
      else if (p < 0.4) steps = tSteps() // T only
      else {
        steps = rnd() < 0.6 ? [other()] : []
        for (const s of tSteps()) steps.push(s, ...(rnd() < 0.4 ? [other()] : []))
        if (rnd() < 0.6) steps.push(other())
      }
      await run(`random ${i}: ${steps.map(([k, n]) => `${k} ${n}`).join(', ')}`, steps)
      // Mostly back to back (commits race the clients), sometimes with clients idle at the tail.
      const q = rnd()
      if (q < 0.25) await settle()
      else if (q < 0.6) await sleep(ri(0, 40))
    }
    await run('O1, T insert 800, T update 400, O2 (clients at the tail)', [['o1', 1], ['insT', 800], ['updT', 400], ['o2', 2]])
    const writerMs = Date.now() - started

    // The oracle is the tables' content.
    const now = new Oracle()
    for (const [table, cols] of [['T', 'id, n, title'], ['O1', 'id, note'], ['O2', 'id, v']]) {
      for (const row of (await writer.query(`SELECT ${cols} FROM ${ident(names[table])}`)).rows) now.set(table, row)
    }
    now.commit(null, 'now')
    assert.deepEqual(now.states[0].fps, oracle.states.at(-1).fps, 'the oracle holds what the tables hold')

    // ---------- every subscriber converges on the final committed state ----------
    const final = oracle.states.at(-1).fps
    let notConverged
    await h
      .eventually(
        () => {
          for (const tr of trackers) assert.equal(tr.lastFp, final[tr.view.key], `${tr.label}: final state at an up-to-date`)
        },
        { timeoutMs: 45_000 },
      )
      .catch((e) => (notConverged = e))

    // ---------- analysis ----------
    const results = trackers.map((tr) => analyse(tr, oracle))
    const lines = [
      `seed ${seed}: ${oracle.states.length} transactions (${sizes.length} touching ${names.T}, 1 to ${Math.max(...sizes)} of its rows); ` +
        `writer ${writerMs} ms, total ${Date.now() - started} ms`,
      ...results.map(
        (r) =>
          `${r.label}: ${r.upToDates} up-to-dates, ${r.insideTxn} inside a transaction, ${r.notCommitted} not a committed state, ` +
          `${r.backwards} going back; last=true mid-transaction ${r.lastMidTxn}, transaction end without last ${r.missingLast}; ` +
          `${r.requests} requests, a transaction spans up to ${r.maxBatchesPerTxn} batches; re-delivered ${r.redelivered}, refetches ${r.refetches}, HTTP errors ${r.httpErrors}` +
          (r.examples.length ? `\n    e.g. ${r.examples.join('\n         ')}` : ''),
      ),
    ]
    console.log(lines.join('\n'))
    assert.ok(sizes.includes(1) && sizes.includes(35) && Math.max(...sizes) >= 5000, `transaction sizes: ${sizes.join(',')}`)
    const lp = results.find((r) => r.label === 'T long-poll')
    assert.ok(lp.maxBatchesPerTxn >= 2, `the 5,000-row transaction spanned several long-poll responses (${lp.maxBatchesPerTxn})`)
    assert.equal(
      results.reduce((a, r) => a + r.violations, 0),
      0,
      `up-to-date / last inside transactions or states that were never committed:\n${lines.join('\n')}`,
    )
    if (notConverged) throw notConverged
  } finally {
    writer.release()
  }
})
