// 1. Initial sync of a large table arrives complete, in several chunked responses.
import assert from 'node:assert/strict'
import { harnessTest, uniq, isLiveUrl } from './harness.mjs'

const test = harnessTest()

const ROWS = 3000
const CHUNK_BYTES = 10_000 // FOLIO_SHAPE_CHUNK_BYTES given to the edge
const BIG = 9007199254740993n // 2^53 + 1: only exact as a BigInt

test('3,000-row snapshot arrives complete through several responses', async (_t, h) => {
  const table = uniq('big')
  await h.sql(`CREATE TABLE ${table} (id int4 PRIMARY KEY, n int8 NOT NULL, title text NOT NULL, payload text, flag bool NOT NULL)`)
  // ~100 bytes of row data each.
  await h.sql(
    `INSERT INTO ${table}
     SELECT i, $1::int8 + i, 'title-' || i, repeat(chr(97 + i % 26), 60 + i % 7), i % 3 = 0
     FROM generate_series(1, ${ROWS}) i`,
    [BIG.toString()],
  )

  const s = h.openShape({ params: { table } })
  await h.upToDate(s, 30_000)
  const rows = await s.shape.rows

  assert.equal(rows.length, ROWS, 'every row arrived')
  const byId = new Map(rows.map((r) => [r.id, r]))
  assert.equal(byId.size, ROWS, 'no duplicate ids')
  for (let i = 1; i <= ROWS; i++) {
    const r = byId.get(i)
    assert.ok(r, `row ${i} present (ids parse as numbers)`)
    assert.deepEqual(
      r,
      {
        id: i,
        n: BIG + BigInt(i),
        title: `title-${i}`,
        payload: String.fromCharCode(97 + (i % 26)).repeat(60 + (i % 7)),
        flag: i % 3 === 0,
      },
      `row ${i} has the right parsed values`,
    )
  }

  // Chunking: several non-live responses; no non-final response much larger than a chunk.
  const nonLive = s.fetchLog.filter((e) => !isLiveUrl(e.url) && e.status === 200)
  assert.ok(nonLive.length > 1, `more than one non-live response (${nonLive.length})`)
  await h.eventually(() => assert.ok(nonLive.every((e) => e.complete), 'bodies recorded'))
  const totalBytes = nonLive.reduce((n, e) => n + e.body.length, 0)
  assert.ok(
    nonLive.length >= Math.floor(totalBytes / CHUNK_BYTES / 2),
    `${totalBytes} bytes of snapshot came in only ${nonLive.length} responses with ${CHUNK_BYTES}-byte chunks`,
  )
  const nonFinal = nonLive.filter((e) => !('electric-up-to-date' in e.headers))
  const largest = Math.max(...nonFinal.map((e) => e.body.length))
  assert.ok(largest <= 2 * CHUNK_BYTES, `a non-final response carried ${largest} bytes (chunk size ${CHUNK_BYTES})`)
  assert.equal(s.fetchLog.filter((e) => e.status >= 400).length, 0, 'no error responses')
})
