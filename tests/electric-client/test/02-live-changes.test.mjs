// 2. Live insert / update / delete reach a subscribed Shape.
import assert from 'node:assert/strict'
import { harnessTest, uniq, sortRows, isLiveUrl } from './harness.mjs'

const test = harnessTest()

test('live insert, update, delete and a multi-row transaction reach a Shape', async (_t, h) => {
  const table = uniq('live')
  await h.sql(`CREATE TABLE ${table} (id int4 PRIMARY KEY, title text NOT NULL, n int4)`)
  await h.sql(`INSERT INTO ${table} VALUES (1, 'one', 10), (2, 'two', 20)`)

  const s = h.openShape({ params: { table } })
  await h.upToDate(s)
  assert.deepEqual(sortRows(await s.shape.rows), [
    { id: 1, title: 'one', n: 10 },
    { id: 2, title: 'two', n: 20 },
  ])
  let notifications = 0
  s.shape.subscribe(() => notifications++)

  const expect = async (rows, what) => {
    await h.eventually(() => assert.deepEqual(sortRows(s.shape.currentRows), rows, what))
  }

  await h.sql(`INSERT INTO ${table} VALUES (3, 'three', NULL)`)
  await expect(
    [
      { id: 1, title: 'one', n: 10 },
      { id: 2, title: 'two', n: 20 },
      { id: 3, title: 'three', n: null },
    ],
    'after insert',
  )

  await h.sql(`UPDATE ${table} SET title = 'uno' WHERE id = 1`)
  await expect(
    [
      { id: 1, title: 'uno', n: 10 },
      { id: 2, title: 'two', n: 20 },
      { id: 3, title: 'three', n: null },
    ],
    'after update of a snapshot row',
  )

  await h.sql(`UPDATE ${table} SET n = 33 WHERE id = 3`)
  await expect(
    [
      { id: 1, title: 'uno', n: 10 },
      { id: 2, title: 'two', n: 20 },
      { id: 3, title: 'three', n: 33 },
    ],
    'after update of a live-inserted row',
  )

  await h.sql(`DELETE FROM ${table} WHERE id = 2`)
  await expect(
    [
      { id: 1, title: 'uno', n: 10 },
      { id: 3, title: 'three', n: 33 },
    ],
    'after delete',
  )

  // One transaction: insert, update it, delete another, update a third; the Shape sees the end state.
  const c = await h.pool.connect()
  try {
    await c.query('BEGIN')
    await c.query(`INSERT INTO ${table} VALUES (4, 'four', 4)`)
    await c.query(`UPDATE ${table} SET title = 'vier' WHERE id = 4`)
    await c.query(`DELETE FROM ${table} WHERE id = 1`)
    await c.query(`UPDATE ${table} SET title = 'drei', n = NULL WHERE id = 3`)
    await c.query('COMMIT')
  } finally {
    c.release()
  }
  await expect(
    [
      { id: 3, title: 'drei', n: null },
      { id: 4, title: 'vier', n: 4 },
    ],
    'after a multi-statement transaction',
  )
  assert.ok(notifications >= 5, `subscriber notified for each change (${notifications})`)

  // The changes came through live requests, and nothing needed a refetch.
  assert.ok(s.fetchLog.some((e) => isLiveUrl(e.url) && e.status === 200), 'live long-poll requests answered')
  assert.equal(s.fetchLog.filter((e) => e.status >= 400).length, 0, 'no error or 409 responses')
})

test('a primary-key change moves the row to its new key', async (_t, h) => {
  const table = uniq('pkchg')
  await h.sql(`CREATE TABLE ${table} (id int4 PRIMARY KEY, title text NOT NULL)`)
  await h.sql(`INSERT INTO ${table} VALUES (1, 'a'), (2, 'b')`)
  const s = h.openShape({ params: { table } })
  await h.upToDate(s)
  await h.sql(`UPDATE ${table} SET id = 10 WHERE id = 1`)
  await h.eventually(() =>
    assert.deepEqual(sortRows(s.shape.currentRows), [
      { id: 2, title: 'b' },
      { id: 10, title: 'a' },
    ]),
  )
})
