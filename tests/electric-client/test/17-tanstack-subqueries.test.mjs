// 17. TanStack DB's Electric collection in `syncMode: 'on-demand'` and `'progressive'` on a
// subquery shape (issue 16): proposals `client_id IN (SELECT id FROM clients WHERE region = $1)`
// of agency A, viewed through a live query `priority > 5`. The view loads its subset through
// subset snapshots (on-demand: not the shape's other rows), then follows what moves: rows moving
// into and out of the subset (their priority changes) and into and out of the subquery shape
// (their client changes region, in the log as `move-in` / `move-out`), while another agency's
// client entering the region moves nothing in. After every write the view equals the same query
// run in PostgreSQL with the agency pinned inside the subquery, and no 409 restarted the shape.
import assert from 'node:assert/strict'
import crypto from 'node:crypto'
import { createCollection, createLiveQueryCollection, gt } from '@tanstack/db'
import { electricCollectionOptions } from '@tanstack/electric-db-collection'
import { harnessTest, uniq, sortRows, recordingFetch, assertLoadedThroughSubsets } from './harness.mjs'

const test = harnessTest()

for (const syncMode of ['on-demand', 'progressive']) {
  test(`${syncMode} on a subquery shape: the view loads its subset, then rows move in and out of it and of the shape`, async (_t, h) => {
    const A = crypto.randomUUID()
    const B = crypto.randomUUID()
    const C = uniq(syncMode === 'on-demand' ? 'tsqod_c' : 'tsqpr_c')
    const P = uniq(syncMode === 'on-demand' ? 'tsqod_p' : 'tsqpr_p')
    await h.sql(`CREATE TABLE ${C} (id int4 PRIMARY KEY, agency_id uuid NOT NULL, region text NOT NULL)`)
    await h.sql(
      `CREATE TABLE ${P} (id int4 PRIMARY KEY, agency_id uuid NOT NULL, client_id int4 NOT NULL, priority int4 NOT NULL, title text NOT NULL)`,
    )
    await h.sql(`ALTER TABLE ${C} REPLICA IDENTITY FULL`)
    await h.sql(`ALTER TABLE ${P} REPLICA IDENTITY FULL`)
    // A's clients 1..6 (odd: north, even: south), B's 7..8 (south). 200 proposals of A spread
    // over all eight clients (some of B's clients: A's rows that must never move in through B).
    await h.sql(`INSERT INTO ${C} SELECT g, CASE WHEN g <= 6 THEN $1::uuid ELSE $2::uuid END,
      CASE WHEN g <= 6 AND g % 2 = 1 THEN 'north' ELSE 'south' END FROM generate_series(1, 8) g`, [A, B])
    await h.sql(`INSERT INTO ${P} SELECT g, $1::uuid, 1 + g % 8, g % 10, 'p' || g FROM generate_series(1, 200) g`, [A])
    await h.sql(`INSERT INTO ${P} SELECT g, $1::uuid, 1 + g % 8, 9, 'b' || g FROM generate_series(201, 220) g`, [B])

    const fetchLog = []
    h.fetchLogs.push({ label: `${P} ${syncMode}`, log: fetchLog })
    const items = createCollection(
      electricCollectionOptions({
        id: `${P}-${syncMode}`,
        getKey: (r) => r.id,
        syncMode,
        shapeOptions: {
          url: h.shapeUrl,
          params: { table: P, replica: 'full', where: `client_id IN (SELECT id FROM ${C} WHERE region = $1)`, params: ['north'] },
          headers: { Authorization: `Bearer ${h.token({ agencyId: A, role: 'viewer' })}` },
          fetchClient: recordingFetch(fetchLog),
        },
      }),
    )
    const view = createLiveQueryCollection((q) =>
      q.from({ t: items }).where(({ t }) => gt(t.priority, 5)).select(({ t }) => ({ id: t.id, client_id: t.client_id, priority: t.priority, title: t.title })),
    )
    // A live query nobody subscribes to is garbage-collected after its gcTime: keep one on it.
    const watching = view.subscribeChanges(() => {})
    const expected = async () =>
      sortRows(
        (
          await h.sql(
            `SELECT id, client_id, priority, title FROM ${P} WHERE agency_id = $1 AND priority > 5
               AND client_id IN (SELECT id FROM ${C} WHERE agency_id = $1 AND region = 'north')`,
            [A],
          )
        ).rows,
      )
    const seen = () => sortRows(view.toArray.map((r) => ({ id: r.id, client_id: r.client_id, priority: r.priority, title: r.title })))
    try {
      await view.preload()
      await h.eventually(async () => assert.deepEqual(seen(), await expected()), { timeoutMs: 20_000, streams: [] })
      assertLoadedThroughSubsets(fetchLog, syncMode)
      if (syncMode === 'on-demand') {
        // The view's subset only: not the shape's rows of priority ≤ 5 (about 75 rows in all).
        const inShape = (await h.sql(`SELECT count(*)::int AS n FROM ${P} WHERE agency_id = $1 AND client_id IN (1, 3, 5)`, [A])).rows[0].n
        assert.ok(items.size < inShape, `on-demand loaded ${items.size} of the shape's ${inShape} rows`)
      }
      const writes = [
        `UPDATE ${P} SET priority = 9 WHERE id = 2`, // client 3, into the view's subset
        `UPDATE ${P} SET priority = 1 WHERE id = 8`, // client 1: priority 8 → out of the subset
        `UPDATE ${C} SET region = 'north' WHERE id = 2`, // A's client 2: its proposals move in
        `UPDATE ${C} SET region = 'north' WHERE id = 7`, // B's client: nothing moves in
        `INSERT INTO ${P} VALUES (1000, '${A}', 2, 9, 'new')`,
        `UPDATE ${C} SET region = 'east' WHERE id = 1`, // client 1: its proposals move out
        `UPDATE ${P} SET client_id = 1 WHERE id = 1000`, // a proposal moves to a client outside
        `UPDATE ${P} SET client_id = 5, title = 'back' WHERE id IN (SELECT id FROM ${P} WHERE client_id = 1 AND priority > 5 LIMIT 2)`,
        `UPDATE ${C} SET region = 'north' WHERE id = 1`, // client 1 comes back
      ]
      for (const sql of writes) {
        await h.sql(sql)
        await h.eventually(async () => assert.deepEqual(seen(), await expected(), `after ${sql}`), { timeoutMs: 20_000, streams: [] })
      }
      assert.ok(items.toArray.every((r) => r.agency_id === A), "no row of another agency")
      assert.ok(!items.toArray.some((r) => r.client_id === 7 || r.client_id === 8), "nothing moved in through B's clients")
      const events = fetchLog.flatMap((e) => {
        try {
          return JSON.parse(e.body ?? '[]')
        } catch {
          return []
        }
      })
      const moveIns = events.filter((m) => Array.isArray(m) ? false : m?.headers?.event === 'move-in')
      assert.ok(moveIns.length >= 2, `${syncMode}: moves arrived as move-in events (${moveIns.length})`)
      assert.ok(!fetchLog.some((e) => e.status === 409), `${syncMode}: no 409 restarted the shape`)
    } finally {
      watching.unsubscribe()
      await view.cleanup()
      await items.cleanup()
    }
  })
}
