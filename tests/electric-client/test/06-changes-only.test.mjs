// 6. `log: 'changes_only'` with `offset: 'now'`: no snapshot rows, later changes arrive.
import assert from 'node:assert/strict'
import { harnessTest, uniq, sortRows, changeMessages, controlMessages } from './harness.mjs'

const test = harnessTest()

test('changes_only from now: no snapshot, then live changes', async (_t, h) => {
  const table = uniq('co')
  await h.sql(`CREATE TABLE ${table} (id int4 PRIMARY KEY, title text NOT NULL)`)
  await h.sql(`INSERT INTO ${table} SELECT i, 'old-' || i FROM generate_series(1, 50) i`)

  const s = h.openShape({ params: { table }, log: 'changes_only', offset: 'now' })
  await h.upToDate(s)
  const q = new URL(s.fetchLog[0].url).searchParams
  assert.equal(q.get('offset'), 'now')
  assert.equal(q.get('log'), 'changes_only')
  assert.equal(s.fetchLog[0].status, 200)
  assert.deepEqual(changeMessages(s.messages), [], 'no snapshot rows')
  assert.ok(controlMessages(s.messages, 'up-to-date').length >= 1, 'up-to-date delivered')
  assert.deepEqual(s.shape.currentRows, [])

  await h.sql(`INSERT INTO ${table} VALUES (100, 'new')`)
  await h.sql(`UPDATE ${table} SET title = 'changed' WHERE id IN (1, 100)`)
  await h.sql(`DELETE FROM ${table} WHERE id = 2`)
  await h.sql(`INSERT INTO ${table} VALUES (101, 'sync point')`)
  await h.eventually(() =>
    assert.deepEqual(
      changeMessages(s.messages).map((m) => [m.headers.operation, m.value.id]),
      [
        ['insert', 100],
        ['update', 1],
        ['update', 100],
        ['delete', 2],
        ['insert', 101],
      ],
    ),
  )
  // Shape in changes_only applies updates/deletes only to rows it saw inserted.
  assert.deepEqual(sortRows(s.shape.currentRows), [
    { id: 100, title: 'changed' },
    { id: 101, title: 'sync point' },
  ])
  assert.equal(s.fetchLog.filter((e) => e.status >= 400).length, 0, 'no error or 409 responses')
})

test('changes_only from the start: snapshot-end only, no rows', async (_t, h) => {
  const table = uniq('co2')
  await h.sql(`CREATE TABLE ${table} (id int4 PRIMARY KEY, title text NOT NULL)`)
  await h.sql(`INSERT INTO ${table} VALUES (1, 'a'), (2, 'b')`)
  const s = h.openStream({ params: { table }, log: 'changes_only' })
  await h.upToDate(s)
  assert.deepEqual(changeMessages(s.messages), [], 'no snapshot rows')
  await h.sql(`INSERT INTO ${table} VALUES (3, 'c')`)
  await h.eventually(() =>
    assert.deepEqual(
      changeMessages(s.messages).map((m) => [m.headers.operation, m.value]),
      [['insert', { id: 3, title: 'c' }]],
    ),
  )
})
