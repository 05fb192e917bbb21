// 8. Resume on another edge process: a client that stored `lastOffset` + `shapeHandle` comes back
// (to a NEW shape-edge, after writes made while no edge ran) and gets exactly the changes it
// missed — no 409, no refetch, nothing lost, nothing repeated.
import assert from 'node:assert/strict'
import { harnessTest, uniq, changeMessages, isChangeMessage } from './harness.mjs'

const test = harnessTest()

const ops = (messages) => changeMessages(messages).map((m) => [m.headers.operation, m.value.id])

/** The stream's position as of its last delivered batch, which must end with up-to-date. */
function checkpoint(s) {
  const i = s.batches.length - 1
  const last = s.batches[i].at(-1)
  assert.equal(last?.headers?.control, 'up-to-date', 'checkpoint taken at an up-to-date batch')
  return s.positions[i]
}

async function resumeScenario(h, { liveChangeBeforeStop }) {
  const table = uniq('resume')
  await h.sql(`CREATE TABLE ${table} (id int4 PRIMARY KEY, title text NOT NULL)`)
  await h.sql(`INSERT INTO ${table} SELECT i, 'row-' || i FROM generate_series(1, 5) i`)

  const first = h.openStream({ params: { table }, label: 'before restart' })
  await h.upToDate(first)
  assert.equal(changeMessages(first.messages).length, 5)
  if (liveChangeBeforeStop) {
    await h.sql(`INSERT INTO ${table} VALUES (6, 'row-6')`)
    await h.eventually(() => {
      assert.deepEqual(ops(first.messages).at(-1), ['insert', 6])
      assert.ok(!isChangeMessage(first.messages.at(-1)), 'batch closed by up-to-date')
    })
  }
  const { offset, handle } = checkpoint(first)
  assert.ok(offset && offset !== '-1', `a real offset was stored (${offset})`)
  assert.ok(handle, 'a handle was stored')
  first.abort()
  const oldEdge = h.edge
  await h.stopEdge()

  // Written while no edge runs.
  await h.sql(`INSERT INTO ${table} VALUES (7, 'row-7'), (8, 'row-8')`)
  await h.sql(`UPDATE ${table} SET title = 'one' WHERE id = 1`)
  await h.sql(`DELETE FROM ${table} WHERE id = 2`)
  const c = await h.pool.connect()
  try {
    await c.query('BEGIN')
    await c.query(`INSERT INTO ${table} VALUES (9, 'row-9')`)
    await c.query(`UPDATE ${table} SET title = 'three' WHERE id = 3`)
    await c.query('COMMIT')
  } finally {
    c.release()
  }

  await h.startEdge()
  assert.notEqual(h.edge.port, oldEdge.port, 'a new edge process on a new port')
  const second = h.openStream({ params: { table }, offset, handle, label: 'after restart' })
  const expected = [
    ['insert', 7],
    ['insert', 8],
    ['update', 1],
    ['delete', 2],
    ['insert', 9],
    ['update', 3],
  ]
  const no409 = () =>
    assert.deepEqual(
      second.fetchLog.filter((e) => e.status === 409).map((e) => e.url),
      [],
      'no 409 (the stored handle is still valid on the new edge)',
    )
  await h.eventually(() => {
    no409()
    assert.deepEqual(ops(second.messages), expected, 'exactly the missed changes, in commit order')
  })
  // A later write is the sync point: anything replayed twice would have arrived before it.
  await h.sql(`INSERT INTO ${table} VALUES (10, 'row-10')`)
  await h.eventually(() => assert.deepEqual(ops(second.messages), [...expected, ['insert', 10]], 'nothing repeated'))

  const values = Object.fromEntries(changeMessages(second.messages).map((m) => [`${m.headers.operation} ${m.value.id}`, m.value]))
  assert.deepEqual(values['insert 7'], { id: 7, title: 'row-7' })
  assert.deepEqual(values['update 1'], { id: 1, title: 'one' })

  const q = new URL(second.fetchLog[0].url).searchParams
  assert.equal(q.get('offset'), offset, 'first request resumed at the stored offset')
  assert.equal(q.get('handle'), handle, 'with the stored handle')
  no409()
  assert.deepEqual(
    second.fetchLog.filter((e) => new URL(e.url).searchParams.get('offset') === '-1').map((e) => e.url),
    [],
    'no refetch from -1',
  )
  assert.equal(second.stream.shapeHandle, handle, 'handle unchanged')
  assert.equal(second.fetchLog.filter((e) => e.status >= 400).length, 0, 'no error responses')
}

test('resume after a live change, on a new edge process', async (_t, h) => {
  await resumeScenario(h, { liveChangeBeforeStop: true })
})

test('resume right after the snapshot, on a new edge process', async (_t, h) => {
  await resumeScenario(h, { liveChangeBeforeStop: false })
})
