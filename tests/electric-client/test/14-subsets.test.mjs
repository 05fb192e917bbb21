// 14. Subset snapshots (issue 16): the client's `requestSnapshot` (GET and POST) on a
// `changes_only` stream from `now`, as TanStack DB's on-demand collections use it, and
// `fetchSnapshot` on a full stream (progressive mode). The invariant: once a subset is loaded,
// the client's rows at every up-to-date are a state the database was in, in commit order, and
// the last one is the database's — while a writer races the subset request.
import assert from 'node:assert/strict'
import crypto from 'node:crypto'
import { harnessTest, uniq, sortRows, controlMessages } from './harness.mjs'

const test = harnessTest()

/** Records the Shape's rows at every batch that ends up to date, after the Shape applied it. */
function recordUpToDates(s) {
  const states = []
  let loaded = false
  s.stream.subscribe((batch) => {
    if (controlMessages(batch, 'subset-end').length) loaded = true
    if (loaded && controlMessages(batch, 'up-to-date').length) states.push(sortRows(s.shape.currentRows))
  })
  return states
}

test('requestSnapshot while a writer races it: every up-to-date is a database state, in order', async (_t, h) => {
  const table = uniq('sub')
  await h.sql(`CREATE TABLE ${table} (id int4 PRIMARY KEY, grp int4 NOT NULL, v int4 NOT NULL, title text NOT NULL)`)
  await h.sql(`ALTER TABLE ${table} REPLICA IDENTITY FULL`)
  await h.sql(`INSERT INTO ${table} SELECT i, i % 3, 0, 'row ' || i FROM generate_series(1, 40) i`)
  const dbState = async () => sortRows((await h.sql(`SELECT id, grp, v, title FROM ${table}`)).rows)

  for (const method of ['GET', 'POST']) {
    const s = h.openShape({ params: { table }, log: 'changes_only', offset: 'now', subsetMethod: method, label: `${table} ${method}` })
    await h.upToDate(s)
    const states = recordUpToDates(s)
    // The database's states in commit order: one writer, each write its own transaction, the
    // state read right after each commit.
    const dbStates = [await dbState()]
    let nextId = method === 'GET' ? 1000 : 2000
    const writer = (async () => {
      for (let i = 0; i < 60; i++) {
        const k = 1 + ((i * 7) % 40)
        if (i % 10 === 3) await h.sql(`INSERT INTO ${table} VALUES ($1, $2, 0, 'new')`, [nextId++, i % 3])
        else if (i % 10 === 7) await h.sql(`DELETE FROM ${table} WHERE id = (SELECT min(id) FROM ${table} WHERE id >= $1)`, [k])
        else await h.sql(`UPDATE ${table} SET v = v + 1, title = 'w' || $2 WHERE id IN ($1, $1 + 1)`, [k, i])
        dbStates.push(await dbState())
        if (i % 4 === 0) await new Promise((r) => setTimeout(r, 3))
      }
    })()
    await new Promise((r) => setTimeout(r, 15))
    // TanStack DB's "load everything" subset.
    await s.shape.requestSnapshot({ where: 'true = true' })
    await writer
    await h.sql(`INSERT INTO ${table} VALUES ($1, 0, 0, 'sentinel')`, [nextId])
    dbStates.push(await dbState())
    await h.eventually(() => {
      assert.ok(s.stream.isUpToDate)
      assert.deepEqual(sortRows(s.shape.currentRows), dbStates.at(-1), `${method}: the client's rows are the database's`)
    })
    const requests = s.fetchLog.filter((e) => new URL(e.url).searchParams.get('subset__where') || e.requestHeaders['content-type'])
    assert.ok(requests.length >= 1, `${method}: a subset request was made`)
    assert.ok(requests.every((e) => e.status === 200), `${method}: ${requests.map((e) => e.status)}`)
    // One request per subset: `electric-snapshot: true` keeps the client from prefetching the
    // same query again as if it were the next chunk of a log.
    assert.equal(requests.length, 1, `${method}: ${requests.map((e) => e.url).join(' ')}`)
    // Every state the client showed at an up-to-date is one the database was in, in order.
    let at = 0
    for (const [i, state] of states.entries()) {
      const found = dbStates.findIndex((d, j) => j >= at && JSON.stringify(d) === JSON.stringify(state))
      assert.ok(found >= 0, `${method}: up-to-date #${i} shows a state the database never had: ${JSON.stringify(state).slice(0, 400)}`)
      at = found
    }
    assert.ok(states.length >= 2, `${method}: up-to-dates checked: ${states.length}`)
    console.log(`${method}: ${states.length} up-to-dates checked against ${dbStates.length} database states`)
    s.abort()
  }
})

test('a partial subset (where, params, order, limit) loads only its rows, then follows their changes', async (_t, h) => {
  const table = uniq('subp')
  await h.sql(`CREATE TABLE ${table} (id int4 PRIMARY KEY, priority int4, title text NOT NULL)`)
  await h.sql(`INSERT INTO ${table} SELECT i, i % 10, 'task ' || i FROM generate_series(1, 100) i`)
  const s = h.openShape({ params: { table }, log: 'changes_only', offset: 'now', subsetMethod: 'POST' })
  await h.upToDate(s)
  await s.shape.requestSnapshot({ where: '"priority" > $1', params: { 1: 6 }, orderBy: '"priority" DESC, "title"', limit: 7 })
  const expected = (
    await h.sql(`SELECT id, priority, title FROM ${table} WHERE priority > 6 ORDER BY priority DESC, title, id LIMIT 7`)
  ).rows
  await h.eventually(() => assert.deepEqual(sortRows(s.shape.currentRows), sortRows(expected)))
  const body = JSON.parse(s.fetchLog.find((e) => e.requestHeaders['content-type'] === 'application/json')?.body ?? '{}')
  assert.equal(body.data?.length, 7, 'the subset response holds only the page')
  assert.ok(body.data.every((m) => m.headers.snapshot_mark === body.metadata.snapshot_mark))

  // Changes to loaded rows arrive; rows never loaded stay out (changes_only); new rows arrive.
  const loaded = expected.map((r) => r.id)
  await h.sql(`UPDATE ${table} SET title = 'changed' WHERE id = $1`, [loaded[0]])
  await h.sql(`UPDATE ${table} SET title = 'not loaded' WHERE id = 1`)
  await h.sql(`DELETE FROM ${table} WHERE id = $1`, [loaded[1]])
  await h.sql(`INSERT INTO ${table} VALUES (500, 9, 'new')`)
  await h.eventually(() => {
    const rows = sortRows(s.shape.currentRows)
    assert.equal(rows.find((r) => r.id === loaded[0])?.title, 'changed')
    assert.ok(!rows.some((r) => r.id === loaded[1]), 'deleted row left')
    assert.ok(rows.some((r) => r.id === 500), 'inserted row arrived')
    assert.ok(!rows.some((r) => r.id === 1), 'a row never loaded stays out')
  })
  const db = sortRows((await h.sql(`SELECT id, priority, title FROM ${table}`)).rows)
  for (const row of s.shape.currentRows) assert.deepEqual(row, db.find((d) => d.id === row.id))
})

test('fetchSnapshot on a full stream and the tenant predicate: a subset never reaches another agency', async (_t, h) => {
  const A = crypto.randomUUID()
  const B = crypto.randomUUID()
  await h.sql('INSERT INTO agencies (id, name) VALUES ($1, $2), ($3, $4)', [A, 'Sub A', B, 'Sub B'])
  for (const [agency, name] of [[A, 'a1'], [A, 'a2'], [B, 'b1']]) {
    await h.sql('INSERT INTO clients (id, agency_id, name, email) VALUES ($1, $2, $3, $4)', [crypto.randomUUID(), agency, name, `${name}@example.com`])
  }
  const s = h.openStream({ params: { table: 'clients' }, token: { agencyId: A } })
  await h.upToDate(s)
  const mine = await s.stream.fetchSnapshot({ where: 'name LIKE $1', params: { 1: 'a%' }, orderBy: 'name', limit: 10 })
  assert.deepEqual(mine.data.map((m) => m.value.name), ['a1', 'a2'])
  for (const k of ['xmin', 'xmax', 'database_lsn']) assert.equal(typeof mine.metadata[k], 'string', k)
  assert.ok(Array.isArray(mine.metadata.xip_list))
  assert.equal(typeof mine.metadata.snapshot_mark, 'number')
  for (const where of [`agency_id = '${B}'`, `agency_id = '${B}' OR true`, 'true) OR (true']) {
    let rows = []
    try {
      rows = (await s.stream.fetchSnapshot({ where })).data
    } catch (e) {
      assert.equal(e.status, 400, `${where}: ${e}`)
    }
    assert.ok(rows.every((m) => m.value.agency_id === A), `${where}: ${JSON.stringify(rows)}`)
  }
  let refused
  try {
    await s.stream.fetchSnapshot({ where: 'true', orderBy: 'pg_sleep(1)', limit: 1 })
  } catch (e) {
    refused = e
  }
  assert.equal(refused?.status, 400)
  assert.ok(refused.json?.errors?.subset?.order_by, JSON.stringify(refused.json))
})
