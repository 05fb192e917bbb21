// 11. Types and names: a quoted mixed-case table in another schema, and the values the client's
// default parser produces from the edge's text values + electric-schema header.
import assert from 'node:assert/strict'
import crypto from 'node:crypto'
import { harnessTest, sortRows, ident } from './harness.mjs'

const test = harnessTest()

test('quoted schema/table names and value parsing (snapshot and live)', async (_t, h) => {
  const schema = `Sales EU ${crypto.randomBytes(2).toString('hex')}`
  const table = 'Odd Table'
  const rel = `${ident(schema)}.${ident(table)}`
  await h.sql(`CREATE SCHEMA ${ident(schema)}`)
  await h.sql(`CREATE TABLE ${rel} (
    id int4 PRIMARY KEY,
    small int2,
    big int8,
    dbl float8,
    num numeric(12,3),
    flag bool,
    txt text,
    u uuid,
    d date,
    ts timestamptz,
    doc jsonb,
    tags text[],
    nums int4[],
    grid int4[][],
    "MixedCase" text NOT NULL DEFAULT 'Mixed'
  )`)
  const uuid = 'a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11'
  const insertFull = (id) =>
    h.sql(
      `INSERT INTO ${rel} (id, small, big, dbl, num, flag, txt, u, d, ts, doc, tags, nums, grid)
       VALUES ($1, -32768, 9223372036854775807, 3.141592653589793, 12345.678, true,
               $2, $3, '2024-02-29', '2024-05-06 09:08:09.123+02', $4::jsonb,
               ARRAY['a b', 'c"d', NULL, 'e,f', 'NULL', 'back\\slash', '{x}'], ARRAY[1, -2, 3], '{{1,2},{3,4}}')`,
      [id, 'line1\nline2 "quoted" \\ ünïcödé ✓', uuid, JSON.stringify({ a: [1, 2, { b: null }], s: 'x y', n: 1.5, t: true })],
    )
  await insertFull(1)
  await h.sql(`INSERT INTO ${rel} (id, flag) VALUES (2, false)`)

  const full = (id) => ({
    id,
    small: -32768,
    big: 9223372036854775807n,
    dbl: 3.141592653589793,
    num: '12345.678',
    flag: true,
    txt: 'line1\nline2 "quoted" \\ ünïcödé ✓',
    u: uuid,
    d: '2024-02-29',
    ts: '2024-05-06 07:08:09.123+00',
    doc: { a: [1, 2, { b: null }], s: 'x y', n: 1.5, t: true },
    tags: ['a b', 'c"d', null, 'e,f', 'NULL', 'back\\slash', '{x}'],
    nums: [1, -2, 3],
    grid: [
      [1, 2],
      [3, 4],
    ],
    MixedCase: 'Mixed',
  })
  const nulls = (id) => ({
    id,
    small: null,
    big: null,
    dbl: null,
    num: null,
    flag: false,
    txt: null,
    u: null,
    d: null,
    ts: null,
    doc: null,
    tags: null,
    nums: null,
    grid: null,
    MixedCase: 'Mixed',
  })

  const s = h.openShape({ params: { table: `${ident(schema)}.${ident(table)}` } })
  await h.upToDate(s)
  assert.equal(new URL(s.fetchLog[0].url).searchParams.get('table'), `"${schema}"."Odd Table"`)
  assert.deepEqual(sortRows(s.shape.currentRows), [full(1), nulls(2)], 'snapshot values')

  const sch = JSON.parse(s.fetchLog[0].headers['electric-schema'])
  assert.equal(sch.id.type, 'int4')
  assert.equal(sch.id.pk_index, 0)
  assert.equal(sch.big.type, 'int8')
  assert.equal(sch.tags.type, 'text', 'array columns: type is the element type')
  assert.equal(sch.tags.dims, 1)
  assert.equal(sch.grid.dims, 2)
  assert.equal(sch.MixedCase.not_null, true)
  assert.equal(sch.num.type, 'numeric')

  // Live: the same values through replication, and an update merged into a snapshot row.
  await insertFull(3)
  await h.sql(`UPDATE ${rel} SET doc = '{"z": [true, false]}', tags = '{}', nums = ARRAY[7], "MixedCase" = 'Changed', big = -9223372036854775808 WHERE id = 2`)
  await h.eventually(() =>
    assert.deepEqual(
      sortRows(s.shape.currentRows),
      [full(1), { ...nulls(2), doc: { z: [true, false] }, tags: [], nums: [7], MixedCase: 'Changed', big: -9223372036854775808n }, full(3)],
      'live values parse like snapshot values',
    ),
  )
  const keys = s.shape.currentRows.length
  assert.equal(keys, 3, 'the update merged into the snapshot row (same key in both paths)')
  await h.sql(`DELETE FROM ${rel} WHERE id = 1`)
  await h.eventually(() => assert.deepEqual(sortRows(s.shape.currentRows).map((r) => r.id), [2, 3]))
})

test('quoted names with a dot and a quote', async (_t, h) => {
  const schema = `we"ird.${crypto.randomBytes(2).toString('hex')}`
  const table = 'Tab.le "x"'
  const rel = `${ident(schema)}.${ident(table)}`
  await h.sql(`CREATE SCHEMA ${ident(schema)}`)
  await h.sql(`CREATE TABLE ${rel} ("Id" int8 PRIMARY KEY, "Full Name" text)`)
  await h.sql(`INSERT INTO ${rel} VALUES (1, 'a')`)
  const s = h.openShape({ params: { table: rel } })
  await h.upToDate(s)
  assert.deepEqual(s.shape.currentRows, [{ Id: 1n, 'Full Name': 'a' }])
  await h.sql(`UPDATE ${rel} SET "Full Name" = 'b' WHERE "Id" = 1`)
  await h.sql(`INSERT INTO ${rel} VALUES (2, 'c')`)
  await h.eventually(() =>
    assert.deepEqual(sortRows(s.shape.currentRows, 'Id'), [
      { Id: 1n, 'Full Name': 'b' },
      { Id: 2n, 'Full Name': 'c' },
    ]),
  )
})
