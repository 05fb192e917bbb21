// 15. TanStack DB's Electric collection (@tanstack/electric-db-collection, the package the web
// app uses) in `syncMode: 'on-demand'` and `'progressive'` against the edge: a live query loads
// only its subset through subset snapshots, then follows the shape's changes; the view equals
// the same query run in PostgreSQL after every write.
import assert from 'node:assert/strict'
import { createCollection, createLiveQueryCollection, gt, eq } from '@tanstack/db'
import { electricCollectionOptions } from '@tanstack/electric-db-collection'
import { harnessTest, uniq, sortRows, recordingFetch, sleep, assertLoadedThroughSubsets } from './harness.mjs'

const test = harnessTest()

function collection(h, table, syncMode, fetchLog) {
  return createCollection(
    electricCollectionOptions({
      id: `${table}-${syncMode}`,
      getKey: (r) => r.id,
      syncMode,
      shapeOptions: {
        url: h.shapeUrl,
        // Full rows on updates: a row that moves into a loaded subset by an update arrives
        // whole (TanStack skips updates of rows it does not hold otherwise).
        params: { table, replica: 'full' },
        headers: h.authHeaders(),
        fetchClient: recordingFetch(fetchLog),
      },
    }),
  )
}

for (const syncMode of ['on-demand', 'progressive']) {
  test(`${syncMode}: a live query loads its subset, then follows changes, equal to PostgreSQL`, async (_t, h) => {
    const table = uniq(syncMode === 'on-demand' ? 'tsod' : 'tspr')
    await h.sql(`CREATE TABLE ${table} (id int4 PRIMARY KEY, priority int4 NOT NULL, title text NOT NULL)`)
    await h.sql(`ALTER TABLE ${table} REPLICA IDENTITY FULL`)
    await h.sql(`INSERT INTO ${table} SELECT i, i % 10, 'task ' || i FROM generate_series(1, 300) i`)
    const fetchLog = []
    h.fetchLogs.push({ label: `${table} ${syncMode}`, log: fetchLog })
    const items = collection(h, table, syncMode, fetchLog)
    const view = createLiveQueryCollection((q) =>
      q.from({ t: items }).where(({ t }) => gt(t.priority, 7)).select(({ t }) => ({ id: t.id, priority: t.priority, title: t.title })),
    )
    // A live query nobody subscribes to is garbage-collected after its gcTime (5 s), which
    // empties it: keep subscribers on it, as a rendered view does.
    const watching = [view.subscribeChanges(() => {})]
    const expected = async () =>
      sortRows((await h.sql(`SELECT id, priority, title FROM ${table} WHERE priority > 7`)).rows)
    const seen = () => sortRows(view.toArray.map((r) => ({ id: r.id, priority: r.priority, title: r.title })))
    try {
      await view.preload()
      await h.eventually(async () => assert.deepEqual(seen(), await expected()), { timeoutMs: 20_000, streams: [] })
      assertLoadedThroughSubsets(fetchLog, syncMode)
      if (syncMode === 'on-demand') {
        // Only the view's rows were loaded, not the table's 300.
        assert.ok(items.size < 100, `on-demand loaded ${items.size} rows`)
        assert.ok(fetchLog.some((e) => new URL(e.url).searchParams.get('log') === 'changes_only'))
      }

      // Idle for longer than a live query's gcTime: a watched view still follows what comes.
      await sleep(6_000)
      // Writes move rows into and out of the view, change rows in it, add and remove rows.
      const writes = [
        `UPDATE ${table} SET title = 'changed' WHERE id = 8`,
        `UPDATE ${table} SET priority = 9 WHERE id = 11`,
        `UPDATE ${table} SET priority = 1 WHERE id = 18`,
        `INSERT INTO ${table} VALUES (1000, 9, 'new')`,
        `DELETE FROM ${table} WHERE id = 9`,
        `UPDATE ${table} SET title = title || '!' WHERE priority > 7 AND id < 60`,
      ]
      for (const sql of writes) {
        await h.sql(sql)
        await h.eventually(async () => assert.deepEqual(seen(), await expected(), `after ${sql}`), { timeoutMs: 20_000, streams: [] })
      }
      // A second view with another predicate loads its own subset on the same collection.
      const one = createLiveQueryCollection((q) => q.from({ t: items }).where(({ t }) => eq(t.priority, 2)))
      watching.push(one.subscribeChanges(() => {}))
      await one.preload()
      const twos = async () => sortRows((await h.sql(`SELECT id, priority, title FROM ${table} WHERE priority = 2`)).rows)
      await h.eventually(async () =>
        assert.deepEqual(sortRows(one.toArray.map((r) => ({ id: r.id, priority: r.priority, title: r.title }))), await twos()),
      { timeoutMs: 20_000, streams: [] })
      await h.sql(`UPDATE ${table} SET title = 'two' WHERE id = 2`)
      await h.eventually(async () => assert.equal(one.toArray.find((r) => r.id === 2)?.title, 'two'), { timeoutMs: 20_000, streams: [] })
      await h.eventually(async () => assert.deepEqual(seen(), await expected()), { timeoutMs: 20_000, streams: [] })
      await one.cleanup()
    } finally {
      for (const w of watching) w.unsubscribe()
      await view.cleanup()
      await items.cleanup()
    }
  })
}
