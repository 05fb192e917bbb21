// 10. Tenant isolation on `clients` (a table with agency_id) and authentication.
import assert from 'node:assert/strict'
import crypto from 'node:crypto'
import { harnessTest, signJwt } from './harness.mjs'

const test = harnessTest()

const names = (s) => s.shape.currentRows.map((r) => r.name).sort()

test("an agency's token sees only its own clients, whatever the where clause", async (_t, h) => {
  const A = crypto.randomUUID()
  const B = crypto.randomUUID()
  await h.sql('INSERT INTO agencies (id, name) VALUES ($1, $2), ($3, $4)', [A, 'Agency A', B, 'Agency B'])
  const client = (agency, name) =>
    h.sql('INSERT INTO clients (id, agency_id, name, email) VALUES ($1, $2, $3, $4)', [crypto.randomUUID(), agency, name, `${name}@example.com`])
  await client(A, 'a1')
  await client(A, 'a2')
  await client(B, 'b1')
  await client(B, 'b2')

  const tokA = { agencyId: A, role: 'viewer' }
  const all = h.openShape({ params: { table: 'clients' }, token: tokA, label: 'A: all' })
  const whereB = h.openShape({ params: { table: 'clients', where: `agency_id = '${B}'` }, token: tokA, label: 'A: where agency B' })
  const markers = h.openShape({
    params: { table: 'clients', where: `agency_id = $1 OR name = $2`, params: [B, 'marker'] },
    token: { agencyId: A, role: 'editor' },
    label: 'A: agency B or marker',
  })
  const allB = h.openShape({ params: { table: 'clients' }, token: { agencyId: B, role: 'admin' }, label: 'B: all' })
  for (const s of [all, whereB, markers, allB]) await h.upToDate(s)

  assert.deepEqual(names(all), ['a1', 'a2'], "A's token: A's clients only")
  assert.ok(all.shape.currentRows.every((r) => r.agency_id === A))
  assert.deepEqual(names(whereB), [], "where agency_id = B with A's token: nothing")
  assert.deepEqual(names(markers), [])
  assert.deepEqual(names(allB), ['b1', 'b2'], "B's token: B's clients only")

  // Live: B's insert (named like the marker) first, then A's; A's is the sync point.
  await client(B, 'marker')
  await client(A, 'marker')
  await client(B, 'b3')
  await h.eventually(() => assert.deepEqual(names(allB), ['b1', 'b2', 'b3', 'marker'], "B's live inserts reach B"))
  await h.eventually(() => assert.deepEqual(names(all), ['a1', 'a2', 'marker']))
  await h.eventually(() => assert.deepEqual(names(markers), ['marker']))
  assert.ok(markers.shape.currentRows.every((r) => r.agency_id === A), "the marker row A sees is A's")
  assert.deepEqual(names(whereB), [], 'still nothing for A filtering on B')

  // A client moved from A to B leaves A's shape and enters B's.
  await h.sql("UPDATE clients SET agency_id = $1 WHERE name = 'a2' AND agency_id = $2", [B, A])
  await h.eventually(() => assert.deepEqual(names(all), ['a1', 'marker'], 'moved client left A'))
  await h.eventually(() => assert.deepEqual(names(allB), ['a2', 'b1', 'b2', 'b3', 'marker'], 'moved client entered B'))
  assert.deepEqual(names(whereB), [], 'A filtering on B still sees nothing')

  // No message A received ever carried B's agency.
  for (const s of [all, whereB, markers]) {
    for (const m of s.messages) {
      if (m.value?.agency_id !== undefined) assert.equal(m.value.agency_id, A, `${s.label}: ${JSON.stringify(m)}`)
    }
  }
})

test('a where clause cannot break out of the tenant filter', async (_t, h) => {
  const A = crypto.randomUUID()
  const B = crypto.randomUUID()
  await h.sql('INSERT INTO agencies (id, name) VALUES ($1, $2), ($3, $4)', [A, 'A2', B, 'B2'])
  await h.sql('INSERT INTO clients (id, agency_id, name, email) VALUES ($1, $2, $3, $4), ($5, $6, $7, $8)', [
    crypto.randomUUID(), A, 'mine', 'm@example.com',
    crypto.randomUUID(), B, 'theirs', 't@example.com',
  ])
  for (const where of ['true) OR (true', "true) OR agency_id IS NOT NULL OR (true", 'true --', 'true; SELECT 1']) {
    const s = h.openShape({ params: { table: 'clients', where }, token: { agencyId: A }, label: `where ${where}` })
    await h.eventually(() => assert.ok(s.errors.length > 0 || s.stream.isUpToDate), { streams: [] })
    if (s.errors.length) {
      assert.equal(s.errors[0].status, 400, `${where}: rejected with 400 (${s.errors[0].message})`)
    } else {
      const rows = s.shape.currentRows
      assert.ok(
        rows.every((r) => r.agency_id === A),
        `where ${JSON.stringify(where)} leaked other agencies' rows: ${JSON.stringify(rows.map((r) => [r.name, r.agency_id]))}`,
      )
    }
  }
})

test('authentication: no token, a bad signature, an expired token → 401', async (_t, h) => {
  const cases = [
    ['no token', false],
    ['bad signature', signJwt('not-the-secret', { sub: crypto.randomUUID(), agency_id: h.defaultAgency, role: 'viewer', iat: Math.floor(Date.now() / 1000), exp: Math.floor(Date.now() / 1000) + 600 })],
    ['expired', h.token({ expiresIn: -600 })],
    ['garbage', 'not.a.jwt'],
  ]
  for (const [what, token] of cases) {
    const s = h.openStream({ params: { table: 'clients' }, token, label: what })
    await h.eventually(() => assert.equal(s.errors.length, 1, `${what}: the stream reports an error`), { streams: [] })
    const err = s.errors[0]
    assert.equal(err.name, 'FetchError', `${what}: ${err}`)
    assert.equal(err.status, 401, `${what}: status ${err.status}`)
    assert.match(err.headers['content-type'] ?? '', /application\/json/, `${what}: JSON error body`)
    assert.equal(typeof err.json, 'object', `${what}: body ${err.text}`)
    assert.equal(s.messages.length, 0, `${what}: no data`)
  }
})
