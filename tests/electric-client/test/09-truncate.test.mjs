// 9. TRUNCATE invalidates the shape: the client sees 409 + must-refetch and ends with the
// table's new contents under a new handle.
import assert from 'node:assert/strict'
import { harnessTest, uniq, sortRows, controlMessages } from './harness.mjs'

const test = harnessTest()

test('TRUNCATE → 409 must-refetch → the Shape holds the new contents', async (_t, h) => {
  const table = uniq('trunc')
  await h.sql(`CREATE TABLE ${table} (id int4 PRIMARY KEY, title text NOT NULL)`)
  await h.sql(`INSERT INTO ${table} VALUES (1, 'a'), (2, 'b'), (3, 'c')`)

  const s = h.openShape({ params: { table } })
  await h.upToDate(s)
  assert.equal(s.shape.currentRows.length, 3)
  const oldHandle = s.stream.shapeHandle
  // Make sure the stream is in live mode first (the truncate must reach a follower).
  await h.sql(`INSERT INTO ${table} VALUES (4, 'd')`)
  await h.eventually(() => assert.equal(s.shape.currentRows.length, 4))

  await h.sql(`TRUNCATE ${table}`)
  await h.sql(`INSERT INTO ${table} VALUES (10, 'x'), (11, 'y')`)
  await h.eventually(() =>
    assert.deepEqual(sortRows(s.shape.currentRows), [
      { id: 10, title: 'x' },
      { id: 11, title: 'y' },
    ]),
  )
  const conflicts = s.fetchLog.filter((e) => e.status === 409)
  assert.ok(conflicts.length >= 1, 'a 409 answered a request after the truncate')
  const newHandle = conflicts[0].headers['electric-handle']
  assert.ok(newHandle, '409 carries the new electric-handle')
  assert.notEqual(newHandle, oldHandle, 'the new handle differs from the old one')
  assert.ok(controlMessages(s.messages, 'must-refetch').length >= 1, 'subscribers saw must-refetch')
  assert.notEqual(s.stream.shapeHandle, oldHandle, 'stream continues on a new handle')
  // The refetch started over from -1 with the new handle.
  const after409 = s.fetchLog.slice(s.fetchLog.indexOf(conflicts.at(-1)) + 1)
  assert.equal(new URL(after409[0].url).searchParams.get('offset'), '-1')

  // And the new shape keeps following the table.
  await h.sql(`UPDATE ${table} SET title = 'xx' WHERE id = 10`)
  await h.eventually(() =>
    assert.deepEqual(sortRows(s.shape.currentRows), [
      { id: 10, title: 'xx' },
      { id: 11, title: 'y' },
    ]),
  )
  // A fresh client with the old handle is sent to the new one too.
  const stale = h.openStream({ params: { table }, offset: s.fetchLog[0].headers['electric-offset'], handle: oldHandle, label: 'old handle' })
  await h.eventually(() => assert.ok(stale.fetchLog.some((e) => e.status === 409), 'old handle → 409'))
})
