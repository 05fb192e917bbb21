// 4. Column projection: `columns: ['id', 'title']` — other columns never reach the client.
import assert from 'node:assert/strict'
import { harnessTest, uniq, sortRows, changeMessages } from './harness.mjs'

const test = harnessTest()

test('columns projection in snapshot, schema header and live changes', async (_t, h) => {
  const table = uniq('cols')
  await h.sql(`CREATE TABLE ${table} (id int4 PRIMARY KEY, title text NOT NULL, secret text, n int4)`)
  await h.sql(`INSERT INTO ${table} VALUES (1, 'a', 's1', 1), (2, 'b', 's2', 2)`)

  const s = h.openShape({ params: { table, columns: ['id', 'title'] } })
  await h.upToDate(s)
  assert.equal(new URL(s.fetchLog[0].url).searchParams.get('columns'), '"id","title"', 'client 1.5 quotes column names')
  assert.deepEqual(sortRows(s.shape.currentRows), [
    { id: 1, title: 'a' },
    { id: 2, title: 'b' },
  ])
  const schema = JSON.parse(s.fetchLog[0].headers['electric-schema'])
  assert.deepEqual(Object.keys(schema).sort(), ['id', 'title'], `electric-schema lists only the selected columns: ${JSON.stringify(schema)}`)

  await h.sql(`INSERT INTO ${table} VALUES (3, 'c', 's3', 3)`)
  await h.sql(`UPDATE ${table} SET secret = 'changed', n = 99 WHERE id = 1`) // only unselected columns change
  await h.sql(`UPDATE ${table} SET title = 'bb', secret = 'x' WHERE id = 2`)
  await h.eventually(() =>
    assert.deepEqual(sortRows(s.shape.currentRows), [
      { id: 1, title: 'a' },
      { id: 2, title: 'bb' },
      { id: 3, title: 'c' },
    ]),
  )
  await h.sql(`DELETE FROM ${table} WHERE id = 3`)
  await h.eventually(() =>
    assert.deepEqual(sortRows(s.shape.currentRows), [
      { id: 1, title: 'a' },
      { id: 2, title: 'bb' },
    ]),
  )
  for (const m of changeMessages(s.messages)) {
    for (const field of ['value', 'old_value']) {
      if (!m[field]) continue
      const extra = Object.keys(m[field]).filter((k) => !['id', 'title'].includes(k))
      assert.deepEqual(extra, [], `${m.headers.operation} ${m.key} ${field} carries unselected columns: ${JSON.stringify(m[field])}`)
    }
  }
})

test('columns must include the primary key (400)', async (_t, h) => {
  const table = uniq('colspk')
  await h.sql(`CREATE TABLE ${table} (id int4 PRIMARY KEY, title text)`)
  const s = h.openStream({ params: { table, columns: ['title'] } })
  await h.eventually(() => assert.equal(s.errors.length, 1), { streams: [] })
  const err = s.errors[0]
  assert.equal(err.name, 'FetchError')
  assert.equal(err.status, 400)
  assert.equal(err.json?.message, 'Invalid request', JSON.stringify(err.json))
  assert.ok(Array.isArray(err.json?.errors?.columns) && err.json.errors.columns.length > 0, JSON.stringify(err.json))
})
