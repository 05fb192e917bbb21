// The harness itself: fresh database with Folio's migrations, wal-ingest streaming the run's
// slot, a shape-edge answering /v1/health, and a restart onto a new port.
import assert from 'node:assert/strict'
import { harnessTest } from './harness.mjs'

const test = harnessTest()

test('database is fresh, migrated and published', async (_t, h) => {
  const { rows } = await h.sql(
    `SELECT current_database() AS db,
            (SELECT count(*)::int FROM pg_publication WHERE pubname = 'folio_changes') AS pubs,
            (SELECT setting FROM pg_settings WHERE name = 'wal_level') AS wal_level,
            to_regclass('public.clients') IS NOT NULL AS has_clients`,
  )
  assert.match(rows[0].db, /^folio_test_electric_\d+_\d+$/)
  assert.equal(rows[0].pubs, 1)
  assert.equal(rows[0].wal_level, 'logical')
  assert.equal(rows[0].has_clients, true)
  const slot = await h.sql('SELECT database, plugin, active FROM pg_replication_slots WHERE slot_name = $1', [h.names.slot])
  assert.equal(slot.rows.length, 1, `slot ${h.names.slot} exists`)
  assert.equal(slot.rows[0].database, rows[0].db)
  assert.equal(slot.rows[0].plugin, 'pgoutput')
  assert.equal(slot.rows[0].active, true, 'wal-ingest streams the slot')
})

test('edge health, and a restart serves on a new port', async (_t, h) => {
  const first = h.edge
  let res = await fetch(`${first.url}/v1/health`)
  assert.equal(res.status, 200)
  assert.deepEqual(await res.json(), { status: 'active' })

  const second = await h.startEdge()
  assert.notEqual(second.port, first.port)
  assert.ok(first.exited, 'the first edge was stopped')
  assert.equal(first.exitInfo.signal ?? null, null, `first edge exited by itself after SIGTERM (${JSON.stringify(first.exitInfo)})`)
  assert.equal(first.exitInfo.code, 0, 'first edge exited 0 after SIGTERM')
  res = await fetch(`${second.url}/v1/health`)
  assert.equal(res.status, 200)
  assert.deepEqual(await res.json(), { status: 'active' })
  await assert.rejects(fetch(`${first.url}/v1/health`), 'nothing listens on the old port')
})
