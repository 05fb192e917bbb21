// 7. SSE live mode (`liveSse: true` in client 1.5): live changes arrive over text/event-stream.
import assert from 'node:assert/strict'
import { harnessTest, uniq, sortRows, isLiveUrl } from './harness.mjs'

const test = harnessTest()

test('SSE: live changes arrive over an event stream', async (_t, h) => {
  const table = uniq('sse')
  await h.sql(`CREATE TABLE ${table} (id int4 PRIMARY KEY, title text NOT NULL)`)
  await h.sql(`INSERT INTO ${table} VALUES (1, 'a')`)

  const s = h.openShape({ params: { table }, liveSse: true })
  await h.upToDate(s)
  assert.deepEqual(await s.shape.rows, [{ id: 1, title: 'a' }])

  // Wait for the SSE request to be open before writing, so the change is pushed on it.
  await h.eventually(() => assert.ok(s.fetchLog.some((e) => isLiveUrl(e.url) && e.status === 200), 'SSE connection open'))

  await h.sql(`INSERT INTO ${table} VALUES (2, 'b')`)
  await h.eventually(() =>
    assert.deepEqual(sortRows(s.shape.currentRows), [
      { id: 1, title: 'a' },
      { id: 2, title: 'b' },
    ]),
  )
  await h.sql(`UPDATE ${table} SET title = 'aa' WHERE id = 1`)
  await h.sql(`DELETE FROM ${table} WHERE id = 2`)
  await h.sql(`INSERT INTO ${table} VALUES (3, 'c')`)
  await h.eventually(() =>
    assert.deepEqual(sortRows(s.shape.currentRows), [
      { id: 1, title: 'aa' },
      { id: 3, title: 'c' },
    ]),
  )

  const live = s.fetchLog.filter((e) => isLiveUrl(e.url))
  assert.ok(live.length >= 1)
  for (const e of live) {
    const q = new URL(e.url).searchParams
    assert.equal(q.get('live_sse'), 'true', `every live request used SSE (no fallback to long-polling): ${e.url}`)
    assert.match(e.requestHeaders.accept ?? '', /text\/event-stream/)
  }
  const ok = live.filter((e) => e.status === 200)
  assert.ok(ok.length >= 1, 'an SSE response')
  for (const e of ok) {
    assert.match(e.headers['content-type'] ?? '', /^text\/event-stream/, 'SSE content type')
    assert.ok(e.headers['electric-cursor'] !== undefined, 'SSE response carries electric-cursor')
  }
  // The changes arrived as SSE data events.
  assert.ok(ok.some((e) => /^data: ?\{.*"key"/m.test(e.body)), `an SSE body carried a change message: ${ok.map((e) => e.body).join('\n---\n').slice(0, 800)}`)
  assert.equal(s.fetchLog.filter((e) => e.status >= 400).length, 0, 'no error or 409 responses')
})

test('SSE: reconnecting after the server ends the stream loses and repeats nothing', async (_t, h) => {
  const table = uniq('sse2')
  await h.sql(`CREATE TABLE ${table} (id int4 PRIMARY KEY, title text NOT NULL)`)
  await h.sql(`INSERT INTO ${table} VALUES (1, 'a')`)
  const s = h.openShape({ params: { table }, liveSse: true })
  await h.upToDate(s)
  const sse = () => s.fetchLog.filter((e) => isLiveUrl(e.url) && e.status === 200)
  await h.eventually(() => assert.ok(sse().length >= 1, 'SSE connection open'))

  // Changes on the first connection (several ops in one transaction, then another transaction).
  const c = await h.pool.connect()
  try {
    await c.query('BEGIN')
    await c.query(`INSERT INTO ${table} VALUES (2, 'b'), (3, 'c')`)
    await c.query(`UPDATE ${table} SET title = 'aa' WHERE id = 1`)
    await c.query('COMMIT')
  } finally {
    c.release()
  }
  await h.sql(`DELETE FROM ${table} WHERE id = 3`)
  await h.eventually(() => assert.deepEqual(sortRows(s.shape.currentRows).map((r) => r.id), [1, 2]))
  const connections = sse().length

  // FOLIO_SHAPE_SSE_TIMEOUT (4 s) ends the connection; the client reconnects from the offset it
  // built from the last up-to-date's global_last_seen_lsn ("<lsn>_0").
  await h.eventually(() => assert.ok(sse().length > connections, 'the client reconnected'), { timeoutMs: 15_000 })
  const reconnect = sse().at(-1)
  await h.sql(`INSERT INTO ${table} VALUES (4, 'd')`)
  await h.eventually(() => assert.deepEqual(sortRows(s.shape.currentRows).map((r) => r.id), [1, 2, 4]))

  const ops = s.messages.filter((m) => m.key).map((m) => `${m.headers.operation} ${m.value.id}`)
  assert.deepEqual(
    ops,
    ['insert 1', 'insert 2', 'insert 3', 'update 1', 'delete 3', 'insert 4'],
    `each change exactly once across the reconnect (resumed at offset ${new URL(reconnect.url).searchParams.get('offset')})`,
  )
  for (const e of s.fetchLog.filter((e) => isLiveUrl(e.url))) {
    assert.equal(new URL(e.url).searchParams.get('live_sse'), 'true', `still SSE after the reconnect: ${e.url}`)
  }
  assert.equal(s.fetchLog.filter((e) => e.status >= 400).length, 0, 'no error or 409 responses')
})
