// 3. `where` with positional `params`; rows move in and out of the shape on update.
import assert from 'node:assert/strict'
import { harnessTest, uniq, sortRows } from './harness.mjs'

const test = harnessTest()

test('where + params: snapshot, move-in, move-out, live inserts', async (_t, h) => {
  const table = uniq('wh')
  await h.sql(`CREATE TABLE ${table} (id int4 PRIMARY KEY, n int4 NOT NULL, title text NOT NULL, note text)`)
  await h.sql(`INSERT INTO ${table} VALUES
    (1, 11, 'xylophone', 'in'),      -- matches
    (2,  5, 'xenon', 'n too small'),
    (3, 50, 'alpha', 'no x'),
    (4, 12, 'BOX', 'matches (ILIKE)'),
    (5, 10, 'x', 'n not > 10')`)

  const s = h.openShape({ params: { table, where: 'n > $1 AND title ILIKE $2', params: ['10', '%x%'] } })
  await h.upToDate(s)
  const first = s.fetchLog[0]
  const q = new URL(first.url).searchParams
  assert.equal(q.get('where'), 'n > $1 AND title ILIKE $2')
  assert.equal(q.get('params[1]'), '10')
  assert.equal(q.get('params[2]'), '%x%')

  const expect = async (rows, what) =>
    h.eventually(() => assert.deepEqual(sortRows(s.shape.currentRows), rows, what))
  const row1 = { id: 1, n: 11, title: 'xylophone', note: 'in' }
  const row4 = { id: 4, n: 12, title: 'BOX', note: 'matches (ILIKE)' }
  await expect([row1, row4], 'snapshot holds only the matching rows')

  // Move in: row 2 now matches; the Shape must get the whole row, not just the changed column.
  await h.sql(`UPDATE ${table} SET n = 20 WHERE id = 2`)
  const row2 = { id: 2, n: 20, title: 'xenon', note: 'n too small' }
  await expect([row1, row2, row4], 'row 2 moved in with all its columns')

  // Move out: row 1 no longer matches.
  await h.sql(`UPDATE ${table} SET title = 'piano' WHERE id = 1`)
  await expect([row2, row4], 'row 1 moved out')

  // Update inside the shape.
  await h.sql(`UPDATE ${table} SET note = 'still in' WHERE id = 4`)
  const row4b = { ...row4, note: 'still in' }
  await expect([row2, row4b], 'update of a row that stays in')

  // Update of a row outside the shape, staying outside: invisible.
  await h.sql(`UPDATE ${table} SET note = 'still out' WHERE id = 3`)
  // Live inserts: one matching, one not; the matching one is the sync point.
  await h.sql(`INSERT INTO ${table} VALUES (6, 1, 'xx', 'out'), (7, 99, 'Max', 'in')`)
  const row7 = { id: 7, n: 99, title: 'Max', note: 'in' }
  await expect([row2, row4b, row7], 'matching insert in, non-matching insert out')

  // Move out by the other condition and move back in.
  await h.sql(`UPDATE ${table} SET n = 0 WHERE id = 2`)
  await expect([row4b, row7], 'row 2 moved out again')
  await h.sql(`UPDATE ${table} SET n = 21, note = 'back' WHERE id = 2`)
  await expect([{ id: 2, n: 21, title: 'xenon', note: 'back' }, row4b, row7], 'row 2 moved back in')

  // Delete inside and outside the shape.
  await h.sql(`DELETE FROM ${table} WHERE id IN (3, 4)`)
  await expect([{ id: 2, n: 21, title: 'xenon', note: 'back' }, row7], 'delete')
  assert.equal(s.fetchLog.filter((e) => e.status >= 400).length, 0, 'no error or 409 responses')
})

test('params given as an object, and a different value set is a different shape', async (_t, h) => {
  const table = uniq('wh2')
  await h.sql(`CREATE TABLE ${table} (id int4 PRIMARY KEY, kind text NOT NULL)`)
  await h.sql(`INSERT INTO ${table} VALUES (1, 'a'), (2, 'b'), (3, 'a'), (4, 'c')`)
  const a = h.openShape({ params: { table, where: 'kind = $1', params: { 1: 'a' } } })
  const b = h.openShape({ params: { table, where: 'kind = $1', params: ['b'] } })
  await h.upToDate(a)
  await h.upToDate(b)
  assert.deepEqual(sortRows(a.shape.currentRows), [
    { id: 1, kind: 'a' },
    { id: 3, kind: 'a' },
  ])
  assert.deepEqual(sortRows(b.shape.currentRows), [{ id: 2, kind: 'b' }])
  assert.notEqual(a.stream.shapeHandle, b.stream.shapeHandle, 'different params, different shape handle')
  await h.sql(`UPDATE ${table} SET kind = 'b' WHERE id = 1`)
  await h.eventually(() => {
    assert.deepEqual(sortRows(a.shape.currentRows), [{ id: 3, kind: 'a' }])
    assert.deepEqual(sortRows(b.shape.currentRows), [
      { id: 1, kind: 'b' },
      { id: 2, kind: 'b' },
    ])
  })
})
