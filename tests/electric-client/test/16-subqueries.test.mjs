// 16. Subquery shapes (issue 16, item 2): `client_id IN (SELECT id FROM clients WHERE region = $1)`
// followed by the unmodified client while one writer changes both tables.
//
// A change of the clients table that alters what the subquery yields (a client of the agency
// entering or leaving the region) moves proposals in or out in the log, as Electric does: a
// `move-out` event then deletes, a `move-in` event then inserts flagged `is_move_in` and the
// `snapshot-end` of the snapshot they were read in; the events carry the moving transaction's
// txids. The oracle records the database's answer to the same SELECT — with the agency pinned
// inside the subquery too — after every commit. Asserted:
//   * at every up-to-date the client's rows equal a committed state, never going back;
//   * the client ends with the final state, and the plain `Shape` agrees;
//   * moves happened in the log (no 409) and the shape was followed live between them;
//   * another agency's clients in the region never let a row in (the writer gives agency A
//     proposals of agency B's clients).
import assert from 'node:assert/strict'
import crypto from 'node:crypto'
import { harnessTest, uniq, sleep, recordingFetch } from './harness.mjs'

const test = harnessTest()

test('a subquery shape equals the database at every up-to-date while both tables change', async (_t, h) => {
  const A = crypto.randomUUID()
  const B = crypto.randomUUID()
  const C = uniq('sq_clients')
  const P = uniq('sq_proposals')
  await h.sql(`CREATE TABLE ${C} (id int4 PRIMARY KEY, agency_id uuid NOT NULL, region text NOT NULL, name text)`)
  await h.sql(`CREATE TABLE ${P} (id int4 PRIMARY KEY, agency_id uuid NOT NULL, client_id int4 NOT NULL, v int4 NOT NULL)`)
  await h.sql(`ALTER TABLE ${C} REPLICA IDENTITY FULL`)
  await h.sql(`ALTER TABLE ${P} REPLICA IDENTITY FULL`)
  // Clients 1..12 are A's, 13..18 B's; the same regions for both.
  await h.sql(
    `INSERT INTO ${C} SELECT g, CASE WHEN g <= 12 THEN $1::uuid ELSE $2::uuid END, (ARRAY['north','south'])[1 + g % 2], 'c' || g FROM generate_series(1, 18) g`,
    [A, B],
  )
  await h.sql(
    `INSERT INTO ${P} SELECT g, CASE WHEN g % 5 = 0 THEN $2::uuid ELSE $1::uuid END, 1 + g % 18, g % 10 FROM generate_series(1, 60) g`,
    [A, B],
  )

  const expectedSql = `SELECT id, agency_id, client_id, v FROM ${P} WHERE agency_id = $1
     AND client_id IN (SELECT id FROM ${C} WHERE agency_id = $1 AND region = 'north') ORDER BY id`
  const rowText = (r) => `${r.id}|${r.agency_id}|${r.client_id}|${r.v}`
  const state = async () => (await h.sql(expectedSql, [A])).rows.map(rowText).join(',')

  const states = [await state()]
  assert.ok(states[0].length > 0, 'rows in the shape at the start')

  const s = h.openShape({
    params: { table: P, where: `client_id IN (SELECT id FROM ${C} WHERE region = $1)`, params: ['north'] },
    token: { agencyId: A, role: 'viewer' },
    label: 'subquery shape',
  })
  // The client's own view of the log: insert/update/delete on keys, cleared on must-refetch.
  const rows = new Map()
  const seen = []
  let refetches = 0
  let changes = 0
  let moveEvents = 0
  let movedIn = 0
  s.stream.subscribe((batch) => {
    for (const m of batch) {
      const hd = m.headers ?? {}
      if (hd.event === 'move-in' || hd.event === 'move-out') {
        moveEvents++
        assert.ok(Array.isArray(hd.txids) && hd.txids.length > 0, `a ${hd.event} event carries txids: ${JSON.stringify(m)}`)
      }
      if (hd.is_move_in) movedIn++
      if (hd.control === 'must-refetch') {
        refetches++
        rows.clear()
      } else if (hd.control === 'up-to-date') {
        seen.push([...rows.values()].sort((x, y) => Number(x.id) - Number(y.id)).map(rowText).join(','))
      } else if (hd.operation) {
        if (hd.txids) changes++
        if (hd.operation === 'delete') rows.delete(m.key)
        else rows.set(m.key, { ...(rows.get(m.key) ?? {}), ...m.value })
      }
    }
  })
  await h.upToDate(s)

  const writer = await h.pool.connect()
  let nextId = 1000
  try {
    for (let i = 0; i < 150; i++) {
      await writer.query('BEGIN')
      const ops = 1 + Math.floor(Math.random() * 3)
      for (let k = 0; k < ops; k++) {
        const kind = Math.floor(Math.random() * 20)
        const client = 1 + Math.floor(Math.random() * 18)
        const v = Math.floor(Math.random() * 10)
        if (kind === 0) {
          await writer.query(`UPDATE ${C} SET region = $1 WHERE id = $2`, [Math.random() < 0.5 ? 'north' : 'south', client])
        } else if (kind <= 3) {
          await writer.query(`UPDATE ${C} SET name = $1 WHERE id = $2`, [`n${i}`, client])
        } else if (kind <= 9) {
          nextId++
          await writer.query(`INSERT INTO ${P} VALUES ($1, $2, $3, $4)`, [nextId, client % 4 === 0 ? B : A, client, v])
        } else if (kind <= 16) {
          await writer.query(
            `UPDATE ${P} SET v = $1, client_id = $2 WHERE id = (SELECT id FROM ${P} ORDER BY random() LIMIT 1)`,
            [v, client],
          )
        } else {
          await writer.query(`DELETE FROM ${P} WHERE id = (SELECT id FROM ${P} ORDER BY random() LIMIT 1)`)
        }
      }
      await writer.query('COMMIT')
      states.push(await state())
      await sleep(Math.floor(Math.random() * 20))
    }
  } finally {
    writer.release()
  }

  const final = states[states.length - 1]
  await h.eventually(() => assert.equal(seen[seen.length - 1], final, 'the client reaches the final state'), {
    timeoutMs: 30_000,
  })
  let at = 0
  seen.forEach((got, n) => {
    const j = states.findIndex((st, idx) => idx >= at && st === got)
    assert.ok(j >= 0, `up-to-date #${n} matches no committed state at or after #${at}: ${got}`)
    at = j
  })
  const shapeRows = s.shape.currentRows.map((r) => ({ ...r })).sort((x, y) => Number(x.id) - Number(y.id))
  assert.equal(shapeRows.map(rowText).join(','), final, "the client's Shape holds the database's rows")
  assert.ok(shapeRows.every((r) => r.agency_id === A), "no row of another agency")
  assert.equal(refetches, 0, 'moves are followed in the log, never by starting over')
  assert.ok(moveEvents > 0 && movedIn > 0, `clients moved in or out of the region (${moveEvents} move events, ${movedIn} rows moved in)`)
  assert.ok(changes > 10, `the shape was followed live between moves (${changes} changes)`)
  console.log(
    `subqueries: ${seen.length} up-to-dates checked, ${moveEvents} move events, ${movedIn} rows moved in, ${changes} live changes`,
  )
})

test('subquery shapes that cannot be served answer 400 with the reason', async (_t, h) => {
  const s = h.openStream({
    params: { table: 'proposals', where: 'client_id IN (SELECT name FROM clients)' },
    label: 'type mismatch',
  })
  await h.eventually(() => assert.equal(s.errors.length, 1, 'the stream reports an error'), { streams: [] })
  const err = s.errors[0]
  assert.equal(err.status, 400, `status ${err.status}: ${err.text ?? JSON.stringify(err.json)}`)
  assert.match(err.json?.errors?.where?.[0] ?? '', /left side of `IN \(SELECT \.\.\.\)` has type uuid but subquery returns text/)
  assert.equal(s.messages.length, 0, 'no data delivered')
})

test("TanStack DB's Electric collection on a subquery shape: rows move in and out with the other table, never another agency's", async (_t, h) => {
  const { createCollection } = await import('@tanstack/db')
  const { electricCollectionOptions } = await import('@tanstack/electric-db-collection')
  const A = crypto.randomUUID()
  const B = crypto.randomUUID()
  const C = uniq('tsq_clients')
  const P = uniq('tsq_proposals')
  await h.sql(`CREATE TABLE ${C} (id int4 PRIMARY KEY, agency_id uuid NOT NULL, region text NOT NULL)`)
  await h.sql(`CREATE TABLE ${P} (id int4 PRIMARY KEY, agency_id uuid NOT NULL, client_id int4 NOT NULL, title text NOT NULL)`)
  await h.sql(`ALTER TABLE ${C} REPLICA IDENTITY FULL`)
  await h.sql(`ALTER TABLE ${P} REPLICA IDENTITY FULL`)
  // A's clients 1 (north) and 2 (south); B's client 3 (south). A has proposals of all three.
  await h.sql(`INSERT INTO ${C} VALUES (1, $1, 'north'), (2, $1, 'south'), (3, $2, 'south')`, [A, B])
  await h.sql(`INSERT INTO ${P} VALUES (10, $1, 1, 'p10'), (11, $1, 1, 'p11'), (20, $1, 2, 'p20'), (30, $1, 3, 'p30'), (40, $2, 3, 'p40')`, [A, B])
  const fetchLog = []
  h.fetchLogs.push({ label: `${P} tanstack`, log: fetchLog })
  const items = createCollection(
    electricCollectionOptions({
      id: P,
      getKey: (r) => r.id,
      shapeOptions: {
        url: h.shapeUrl,
        params: { table: P, where: `client_id IN (SELECT id FROM ${C} WHERE region = $1)`, params: ['north'] },
        headers: { Authorization: `Bearer ${h.token({ agencyId: A, role: 'viewer' })}` },
        fetchClient: recordingFetch(fetchLog),
      },
    }),
  )
  const watching = items.subscribeChanges(() => {})
  const expected = async () =>
    (
      await h.sql(
        `SELECT id FROM ${P} WHERE agency_id = $1 AND client_id IN (SELECT id FROM ${C} WHERE agency_id = $1 AND region = 'north') ORDER BY id`,
        [A],
      )
    ).rows.map((r) => r.id)
  const seen = () => items.toArray.map((r) => r.id).sort((x, y) => x - y)
  try {
    await items.preload()
    await h.eventually(async () => assert.deepEqual(seen(), await expected()), { timeoutMs: 20_000, streams: [] })
    assert.deepEqual(seen(), [10, 11])
    const steps = [
      [`UPDATE ${C} SET region = 'north' WHERE id = 2`, [10, 11, 20]], // client 2 moves in
      [`UPDATE ${C} SET region = 'north' WHERE id = 3`, [10, 11, 20]], // B's client: nothing moves in
      [`INSERT INTO ${P} VALUES (21, '${A}', 2, 'p21')`, [10, 11, 20, 21]],
      [`UPDATE ${C} SET region = 'east' WHERE id = 1`, [20, 21]], // client 1 moves out
      [`UPDATE ${P} SET client_id = 2 WHERE id = 10`, [10, 20, 21]],
    ]
    for (const [sql, want] of steps) {
      await h.sql(sql)
      await h.eventually(async () => assert.deepEqual(seen(), await expected(), `after ${sql}`), { timeoutMs: 20_000, streams: [] })
      assert.deepEqual(seen(), want, `after ${sql}`)
    }
    // A write that only moves rows resolves TanStack's awaitTxId (the move events carry its
    // txid), and the collection holds the moved rows once it does.
    const moves = [
      [`UPDATE ${C} SET region = 'north' WHERE id = 1`, [10, 11, 20, 21]],
      [`UPDATE ${C} SET region = 'south' WHERE id = 2`, [11]],
    ]
    for (const [sql, want] of moves) {
      const c = await h.pool.connect()
      let txid
      try {
        await c.query('BEGIN')
        await c.query(sql)
        txid = Number((await c.query('SELECT pg_current_xact_id()::xid::text AS txid')).rows[0].txid)
        await c.query('COMMIT')
      } finally {
        c.release()
      }
      await items.utils.awaitTxId(txid, 10_000)
      assert.deepEqual(seen(), want, `once ${txid} (${sql}) is seen`)
      assert.deepEqual(seen(), await expected(), `after ${sql}`)
    }
    assert.ok(items.toArray.every((r) => r.agency_id === A), "no row of another agency")
  } finally {
    watching.unsubscribe()
    await items.cleanup()
  }
})
