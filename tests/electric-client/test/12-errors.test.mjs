// 12. Validation errors reach the client as FetchError 400 with Electric's error body.
import assert from 'node:assert/strict'
import { harnessTest, uniq } from './harness.mjs'

const test = harnessTest()

async function expect400(h, params, field) {
  const s = h.openStream({ params, label: JSON.stringify(params) })
  await h.eventually(() => assert.equal(s.errors.length, 1, 'the stream reports an error'), { streams: [] })
  const err = s.errors[0]
  assert.equal(err.name, 'FetchError', String(err))
  assert.equal(err.status, 400, `status ${err.status}: ${err.text ?? JSON.stringify(err.json)}`)
  assert.match(err.headers['content-type'] ?? '', /application\/json/)
  assert.equal(err.json?.message, 'Invalid request', `body: ${err.text ?? JSON.stringify(err.json)}`)
  assert.deepEqual(Object.keys(err.json.errors ?? {}), [field], `errors name the ${field} parameter: ${JSON.stringify(err.json)}`)
  const msgs = err.json.errors[field]
  assert.ok(Array.isArray(msgs) && msgs.length >= 1 && msgs.every((m) => typeof m === 'string' && m.length > 0), JSON.stringify(err.json))
  assert.equal(s.messages.length, 0, 'no data delivered')
  assert.equal(s.fetchLog.length, 1, 'a 400 is final (one request)')
  return err
}

test('a syntax error in where → 400 {"message":"Invalid request","errors":{"where":[…]}}', async (_t, h) => {
  const table = uniq('err')
  await h.sql(`CREATE TABLE ${table} (id int4 PRIMARY KEY, title text)`)
  const err = await expect400(h, { table, where: '1 x 1' }, 'where')
  // Electric's wording (libpg_query position on "SELECT 1 WHERE <where>"); informative only.
  if (err.json.errors.where[0] !== 'At location 17: syntax error at or near "x"') {
    console.log(`note: where error text differs from Electric's: ${JSON.stringify(err.json.errors.where)}`)
  }
})

test('where on an unknown column, a non-boolean where, an unknown table → 400', async (_t, h) => {
  const table = uniq('err2')
  await h.sql(`CREATE TABLE ${table} (id int4 PRIMARY KEY, title text)`)
  await expect400(h, { table, where: 'nope = 1' }, 'where')
  await expect400(h, { table, where: 'id + 1' }, 'where')
  await expect400(h, { table: uniq('missing') }, 'table')
})
