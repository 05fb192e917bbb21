// 5. `replica: 'full'`: full rows on every change and `old_value` on updates; compare with the
// default mode's PK + changed columns.
import assert from 'node:assert/strict'
import { harnessTest, uniq, changeMessages } from './harness.mjs'

const test = harnessTest()

test('replica=full sends full rows and old_value; replica=default sends PK + changed columns', async (_t, h) => {
  const table = uniq('rep')
  await h.sql(`CREATE TABLE ${table} (id int4 PRIMARY KEY, title text NOT NULL, n int4, note text)`)
  await h.sql(`INSERT INTO ${table} VALUES (1, 'one', 1, 'first'), (2, 'two', 2, 'second')`)

  const full = h.openStream({ params: { table, replica: 'full' }, label: 'full' })
  const dflt = h.openStream({ params: { table }, label: 'default' })
  await h.upToDate(full)
  await h.upToDate(dflt)
  assert.equal(new URL(full.fetchLog[0].url).searchParams.get('replica'), 'full')
  const snapFull = changeMessages(full.messages)
  assert.equal(snapFull.length, 2)
  for (const m of snapFull) assert.equal(m.headers.operation, 'insert')
  const nSnap = { full: full.messages.length, dflt: dflt.messages.length }

  await h.sql(`UPDATE ${table} SET title = 'uno', n = 100 WHERE id = 1`)
  await h.sql(`DELETE FROM ${table} WHERE id = 2`)
  await h.sql(`INSERT INTO ${table} VALUES (3, 'three', NULL, 'third')`)

  const live = (s, n) => changeMessages(s.messages.slice(n))
  await h.eventually(() => assert.equal(live(full, nSnap.full).length, 3, 'full: three changes'))
  await h.eventually(() => assert.equal(live(dflt, nSnap.dflt).length, 3, 'default: three changes'))

  const [fu, fd, fi] = live(full, nSnap.full)
  assert.equal(fu.headers.operation, 'update')
  assert.deepEqual(fu.value, { id: 1, title: 'uno', n: 100, note: 'first' }, 'full: update value = whole new row')
  assert.deepEqual(fu.old_value, { title: 'one', n: 1 }, 'full: old_value = previous values of the changed columns')
  assert.equal(fd.headers.operation, 'delete')
  assert.deepEqual(fd.value, { id: 2, title: 'two', n: 2, note: 'second' }, 'full: delete value = whole old row')
  assert.equal(fi.headers.operation, 'insert')
  assert.deepEqual(fi.value, { id: 3, title: 'three', n: null, note: 'third' })
  assert.equal(fu.key, snapFull.find((m) => m.value.id === 1).key, 'same key in snapshot and live')

  const [du, dd, di] = live(dflt, nSnap.dflt)
  assert.equal(du.headers.operation, 'update')
  assert.deepEqual(du.value, { id: 1, title: 'uno', n: 100 }, 'default: update value = PK + changed columns')
  assert.equal(du.old_value, undefined, 'default: no old_value')
  assert.equal(dd.headers.operation, 'delete')
  assert.deepEqual(dd.value, { id: 2 }, 'default: delete value = PK only')
  assert.deepEqual(di.value, { id: 3, title: 'three', n: null, note: 'third' })

  // Replication messages carry txids / lsn / op_position; the transaction's last op says so.
  for (const m of [fu, fd, fi]) {
    assert.ok(Array.isArray(m.headers.txids) && m.headers.txids.every(Number.isInteger), `txids: ${JSON.stringify(m.headers)}`)
    assert.match(String(m.headers.lsn), /^\d+$/, `lsn: ${JSON.stringify(m.headers)}`)
    assert.equal(m.headers.last, true, `each single-statement transaction ends with last=true: ${JSON.stringify(m.headers)}`)
  }
})
