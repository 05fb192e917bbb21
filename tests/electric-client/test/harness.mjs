// Test harness for the @electric-sql/client conformance suite: real processes, never mocks.
//
// Every test file (node --test runs each file in its own process) calls `startHarness()`, which
//   * connects to the run's fresh database (created and migrated by run.sh),
//   * starts one `wal-ingest` (the run's slot, subject root and streams; files run one after the
//     other, so each file's ingester resumes the slot where the previous one stopped),
//   * starts one `shape-edge` on a free port (`startEdge()` may be called again: restart),
// and gives the tests helpers: JWTs, a recording fetchClient, ShapeStream/Shape factories,
// polling `eventually`, and diagnostics (process log tails + the HTTP exchange) on failure.
//
// Environment (set by run.sh):
//   ELECTRIC_TEST_DATABASE_URL  the run's database (wal_level=logical, migrations applied)
//   ELECTRIC_TEST_RUN_ID        [a-z0-9_] suffix shared by every name of the run
//   ELECTRIC_TEST_LOG_DIR       where process logs (and pid files for run.sh's cleanup) go
//   FOLIO_NATS_URL, WAL_INGEST_BIN, SHAPE_EDGE_BIN

import { spawn } from 'node:child_process'
import crypto from 'node:crypto'
import fs from 'node:fs'
import net from 'node:net'
import os from 'node:os'
import path from 'node:path'
import assert from 'node:assert/strict'
import { after, before, test as nodeTest } from 'node:test'
import pg from 'pg'
import { ShapeStream, Shape, FetchError, isChangeMessage, isControlMessage } from '@electric-sql/client'

export { ShapeStream, Shape, FetchError, isChangeMessage, isControlMessage }

const DEFAULT_WAIT_MS = 15_000

function requireEnv(name) {
  const v = process.env[name]
  if (!v) throw new Error(`${name} is not set: run this suite through tests/electric-client/run.sh`)
  return v
}

/** A free TCP port on loopback (listen on 0, read it, close). */
export async function freePort() {
  return new Promise((resolve, reject) => {
    const srv = net.createServer()
    srv.unref()
    srv.on('error', reject)
    srv.listen(0, '127.0.0.1', () => {
      const { port } = srv.address()
      srv.close(() => resolve(port))
    })
  })
}

export const sleep = (ms) => new Promise((r) => setTimeout(r, ms))

/** Unique lower-case identifier part for tables etc. */
export function uniq(prefix = 't') {
  return `${prefix}_${Date.now().toString(36)}_${crypto.randomBytes(3).toString('hex')}`
}

function b64url(buf) {
  return Buffer.from(buf).toString('base64').replace(/=+$/, '').replace(/\+/g, '-').replace(/\//g, '_')
}

/** HS256 JWT signed with `secret`. */
export function signJwt(secret, claims) {
  const header = b64url(JSON.stringify({ alg: 'HS256', typ: 'JWT' }))
  const payload = b64url(JSON.stringify(claims))
  const sig = b64url(crypto.createHmac('sha256', secret).update(`${header}.${payload}`).digest())
  return `${header}.${payload}.${sig}`
}

function tail(file, lines = 40) {
  try {
    const text = fs.readFileSync(file, 'utf8')
    const all = text.split('\n')
    return all.slice(-lines - 1).join('\n')
  } catch (e) {
    return `<cannot read ${file}: ${e.message}>`
  }
}

function truncate(s, n = 600) {
  if (s == null) return s
  return s.length > n ? `${s.slice(0, n)}… (${s.length} chars)` : s
}

/**
 * A fetch that records every request (URL, status, headers, body) into `log`.
 * Bodies are read from a clone, so the client sees the response untouched (SSE included).
 */
export function recordingFetch(log) {
  return async (input, init = {}) => {
    const url = typeof input === 'string' ? input : input instanceof URL ? input.toString() : input.url
    const reqHeaders = {}
    for (const [k, v] of new Headers(init.headers ?? {})) {
      if (k !== 'authorization') reqHeaders[k] = v
    }
    const entry = { url, requestHeaders: reqHeaders, started: Date.now(), status: undefined, headers: undefined, body: '' }
    log.push(entry)
    let res
    try {
      res = await fetch(input, init)
    } catch (e) {
      entry.error = `${e?.name}: ${e?.message}${e?.cause ? ` (${e.cause.message ?? e.cause})` : ''}`
      throw e
    }
    entry.status = res.status
    entry.headers = Object.fromEntries(res.headers)
    if (res.body) {
      const reader = res.clone().body.getReader()
      const dec = new TextDecoder()
      ;(async () => {
        try {
          for (;;) {
            const { done, value } = await reader.read()
            if (done) break
            entry.body += dec.decode(value, { stream: true })
          }
          entry.complete = true
        } catch (e) {
          entry.bodyError = `${e?.name}: ${e?.message}`
        } finally {
          entry.finished = Date.now()
        }
      })()
    } else {
      entry.complete = true
      entry.finished = Date.now()
    }
    return res
  }
}

export function describeExchange(entry) {
  const u = new URL(entry.url)
  const q = [...u.searchParams].map(([k, v]) => `${k}=${v}`).join('&')
  const lines = [`GET ${u.pathname}?${q}`]
  if (Object.keys(entry.requestHeaders ?? {}).length) lines.push(`  request headers: ${JSON.stringify(entry.requestHeaders)}`)
  if (entry.error) lines.push(`  → network error: ${entry.error}`)
  else if (entry.status === undefined) lines.push('  → (no response yet)')
  else {
    const interesting = Object.entries(entry.headers ?? {}).filter(
      ([k]) => k.startsWith('electric-') || ['content-type', 'cache-control', 'etag', 'retry-after'].includes(k),
    )
    lines.push(`  → ${entry.status} ${interesting.map(([k, v]) => `${k}: ${truncate(v, 300)}`).join(' | ')}`)
    lines.push(`  body${entry.complete ? '' : ' (so far)'}: ${truncate(entry.body, 700)}`)
  }
  return lines.join('\n')
}

/** Asserts that a TanStack view loaded through Electric subset snapshots (GET `subset__*`
 * parameters or a POST's JSON body) and that each answered 200; returns those requests. */
export function assertLoadedThroughSubsets(fetchLog, syncMode) {
  const isSubset = (e) => new URL(e.url).searchParams.has('subset__where') || e.requestHeaders['content-type'] === 'application/json'
  const subsets = fetchLog.filter(isSubset)
  assert.ok(subsets.length >= 1, `${syncMode}: loaded through a subset snapshot (${fetchLog.map((e) => e.url).join(' ')})`)
  assert.ok(subsets.every((e) => e.status === 200), subsets.map((e) => `${e.status} ${e.body}`).join('\n'))
  return subsets
}

export function isLiveUrl(url) {
  const v = new URL(url).searchParams.get('live')
  return v !== null && v !== 'false'
}

/** The run: env + processes. One per test file. */
class Harness {
  constructor() {
    this.dbUrl = requireEnv('ELECTRIC_TEST_DATABASE_URL')
    this.natsUrl = requireEnv('FOLIO_NATS_URL')
    this.walIngestBin = requireEnv('WAL_INGEST_BIN')
    this.shapeEdgeBin = requireEnv('SHAPE_EDGE_BIN')
    this.runId = requireEnv('ELECTRIC_TEST_RUN_ID')
    if (!/^[a-z0-9_]+$/.test(this.runId)) throw new Error(`ELECTRIC_TEST_RUN_ID must be [a-z0-9_]: ${this.runId}`)
    this.logDir = process.env.ELECTRIC_TEST_LOG_DIR || fs.mkdtempSync(path.join(os.tmpdir(), 'electric-client-'))
    fs.mkdirSync(this.logDir, { recursive: true })
    this.fileTag = path.basename(process.argv[1] ?? 'test', '.test.mjs').replace(/[^A-Za-z0-9_.-]/g, '_')
    this.jwtSecret = process.env.ELECTRIC_TEST_JWT_SECRET || crypto.randomBytes(32).toString('hex')
    this.processes = new Set()
    this.edge = undefined
    this.edges = [] // every edge started by this file, in order
    this.spawnCounts = {}
    this.walIngest = undefined
    this.streams = [] // every stream opened through the harness (aborted in stop())
    this.fetchLogs = [] // [{label, log}]
    this.deaths = [] // unexpected process exits
    this.pool = new pg.Pool({ connectionString: this.dbUrl, max: 4 })
    this.pool.on('error', () => {})
    this.defaultAgency = crypto.randomUUID()
    process.on('exit', () => {
      for (const p of this.processes) {
        try {
          p.child.kill('SIGKILL')
        } catch {}
      }
    })
  }

  /** Names shared by every process of the run (so a second edge shares state). */
  get names() {
    const r = this.runId
    return {
      slot: `t_electric_${r}`,
      subjectRoot: `el${r}`,
      changesStream: `EL${r}_CHANGES`,
      jobsStream: `EL${r}_JOBS`,
      dsPrefix: `el${r}`,
    }
  }

  baseEnv() {
    const env = {}
    for (const [k, v] of Object.entries(process.env)) {
      if (k.startsWith('FOLIO_') || k === 'RUST_LOG' || k.startsWith('OTEL_') || k.startsWith('ELECTRIC_')) continue
      env[k] = v
    }
    env.RUST_LOG = process.env.ELECTRIC_TEST_RUST_LOG || 'warn'
    env.FOLIO_NATS_URL = this.natsUrl
    env.FOLIO_DATABASE_URL = this.dbUrl
    return env
  }

  spawnProcess(kind, bin, env) {
    if (!fs.existsSync(bin)) throw new Error(`${kind} binary not found at ${bin} (build it, or set ${kind === 'wal-ingest' ? 'WAL_INGEST_BIN' : 'SHAPE_EDGE_BIN'})`)
    const n = (this.spawnCounts[kind] = (this.spawnCounts[kind] ?? 0) + 1) - 1
    const logFile = path.join(this.logDir, `${this.fileTag}.${kind}.${n}.log`)
    const fd = fs.openSync(logFile, 'a')
    const child = spawn(bin, [], { env, stdio: ['ignore', fd, fd] })
    fs.closeSync(fd)
    const proc = { kind, child, logFile, env, stopping: false, exited: false, exitInfo: undefined }
    proc.exitPromise = new Promise((resolve) => {
      child.on('exit', (code, signal) => {
        proc.exited = true
        proc.exitInfo = { code, signal }
        this.processes.delete(proc)
        try {
          fs.rmSync(path.join(this.logDir, `pid.${child.pid}`), { force: true })
        } catch {}
        if (!proc.stopping) {
          const msg = `${kind} (pid ${child.pid}) exited unexpectedly (code ${code}, signal ${signal}); log ${logFile}:\n${tail(logFile)}`
          this.deaths.push(msg)
          console.error(`\n[harness] ${msg}\n`)
        }
        resolve(proc.exitInfo)
      })
      child.on('error', (e) => {
        proc.exited = true
        this.deaths.push(`${kind} failed to spawn: ${e.message}`)
        resolve({ code: -1, signal: null })
      })
    })
    if (child.pid) fs.writeFileSync(path.join(this.logDir, `pid.${child.pid}`), `${bin}\n`)
    this.processes.add(proc)
    return proc
  }

  async stopProcess(proc, { signal = 'SIGTERM', graceMs = 15_000 } = {}) {
    if (!proc || proc.exited) return proc?.exitInfo
    proc.stopping = true
    proc.child.kill(signal)
    const timer = sleep(graceMs).then(() => 'timeout')
    const r = await Promise.race([proc.exitPromise, timer])
    if (r === 'timeout') {
      console.error(`[harness] ${proc.kind} (pid ${proc.child.pid}) did not exit ${graceMs} ms after ${signal}; killing it. Log tail:\n${tail(proc.logFile)}`)
      proc.child.kill('SIGKILL')
      await proc.exitPromise
    }
    return proc.exitInfo
  }

  async waitHttp(proc, url, check, what, timeoutMs = 30_000, notFoundGraceMs = 3000) {
    const started = Date.now()
    const deadline = started + timeoutMs
    let last = 'no answer'
    while (Date.now() < deadline) {
      if (proc.exited) {
        throw new Error(`${proc.kind} exited during start-up (${JSON.stringify(proc.exitInfo)}); log ${proc.logFile}:\n${tail(proc.logFile)}`)
      }
      try {
        const res = await fetch(url, { signal: AbortSignal.timeout(2000) })
        const body = await res.text()
        last = `${res.status} ${truncate(body, 200)}`
        if (check(res, body)) return
        // A route that does not exist will not appear: fail fast rather than wait.
        if ((res.status === 404 || res.status === 405) && Date.now() > started + notFoundGraceMs) break
      } catch (e) {
        last = `${e.name}: ${e.cause?.code ?? e.message}`
      }
      await sleep(100)
    }
    throw new Error(`${what} not ready after ${Date.now() - started} ms at ${url} (last: ${last}); log ${proc.logFile}:\n${tail(proc.logFile)}`)
  }

  async startWalIngest() {
    const adminPort = await freePort()
    const n = this.names
    const env = {
      ...this.baseEnv(),
      FOLIO_WAL_SLOT: n.slot,
      FOLIO_SUBJECT_ROOT: n.subjectRoot,
      FOLIO_CHANGES_STREAM: n.changesStream,
      FOLIO_JOBS_STREAM: n.jobsStream,
      FOLIO_ADMIN_ADDR: `127.0.0.1:${adminPort}`,
      FOLIO_SHUTDOWN_GRACE: '5s',
    }
    const proc = this.spawnProcess('wal-ingest', this.walIngestBin, env)
    proc.adminUrl = `http://127.0.0.1:${adminPort}`
    this.walIngest = proc
    await this.waitHttp(proc, `${proc.adminUrl}/readyz`, (res) => res.status === 200, 'wal-ingest /readyz')
    return proc
  }

  edgeEnv(port, adminPort) {
    const n = this.names
    return {
      ...this.baseEnv(),
      FOLIO_EDGE_ADDR: `127.0.0.1:${port}`,
      FOLIO_EDGE_PUBLIC_URL: `http://127.0.0.1:${port}`,
      FOLIO_ADMIN_ADDR: `127.0.0.1:${adminPort}`,
      FOLIO_CHANGES_STREAM: n.changesStream,
      FOLIO_SUBJECT_ROOT: n.subjectRoot,
      FOLIO_DS_PREFIX: n.dsPrefix,
      FOLIO_JWT_SECRET: this.jwtSecret,
      FOLIO_SHAPE_TABLES: '*',
      FOLIO_SHAPE_AUTO_PUBLISH: 'true',
      FOLIO_SHAPE_ENABLE_DELETE: 'true',
      FOLIO_SHAPE_CHUNK_BYTES: '10000',
      // SSE responses end after this (Electric: 60 s), so the SSE test sees the client reconnect
      // from the offset it derived from `global_last_seen_lsn` within the test's time.
      FOLIO_SHAPE_SSE_TIMEOUT: '4s',
      FOLIO_SHUTDOWN_GRACE: '5s',
    }
  }

  /**
   * Starts a shape-edge (stopping the current one first: a restart). Resolves once
   * `GET /v1/health` answers 200 {"status":"active"}.
   * `ready: 'admin'` waits for the admin /readyz instead (harness self-checks only).
   */
  async startEdge({ ready = 'health' } = {}) {
    if (this.edge && !this.edge.exited) await this.stopEdge()
    const port = await freePort()
    const adminPort = await freePort()
    const proc = this.spawnProcess('shape-edge', this.shapeEdgeBin, this.edgeEnv(port, adminPort))
    proc.port = port
    proc.url = `http://127.0.0.1:${port}`
    proc.adminUrl = `http://127.0.0.1:${adminPort}`
    this.edge = proc
    this.edges.push(proc)
    // The admin server's /readyz first (so a missing /v1/health route fails fast, below).
    await this.waitHttp(proc, `${proc.adminUrl}/readyz`, (res) => res.status === 200, 'shape-edge /readyz')
    if (ready !== 'admin') {
      await this.waitHttp(
        proc,
        `${proc.url}/v1/health`,
        (res, body) => {
          if (res.status !== 200) return false
          try {
            return JSON.parse(body).status === 'active'
          } catch {
            return false
          }
        },
        'shape-edge /v1/health',
      )
    }
    return proc
  }

  async stopEdge() {
    const proc = this.edge
    if (!proc) return
    return this.stopProcess(proc)
  }

  get edgeUrl() {
    assert.ok(this.edge && !this.edge.exited, 'no shape-edge running')
    return this.edge.url
  }

  get shapeUrl() {
    return `${this.edgeUrl}/v1/shape`
  }

  /** A signed token: {sub, agency_id, role, iat, exp}. */
  token({ agencyId = this.defaultAgency, role = 'viewer', expiresIn = 3600, secret = this.jwtSecret, ...extra } = {}) {
    const now = Math.floor(Date.now() / 1000)
    return signJwt(secret, { sub: crypto.randomUUID(), agency_id: agencyId, role, iat: now, exp: now + expiresIn, ...extra })
  }

  authHeaders(opts) {
    return { Authorization: `Bearer ${this.token(opts)}` }
  }

  async sql(text, params) {
    return this.pool.query(text, params)
  }

  /**
   * A ShapeStream against the current edge, with a recording fetchClient and a message log.
   * Returns { stream, messages, batches, errors, fetchLog, abort, controller }.
   * `token`: false = no Authorization header; a string = that token; an object = token() options.
   */
  openStream({ params, token = {}, label = params?.table ?? 'stream', url, subscribe = true, ...options } = {}) {
    const fetchLog = []
    this.fetchLogs.push({ label, log: fetchLog })
    const controller = new AbortController()
    const headers =
      token === false ? undefined : { Authorization: `Bearer ${typeof token === 'string' ? token : this.token(token)}` }
    const stream = new ShapeStream({
      url: url ?? this.shapeUrl,
      params,
      headers,
      fetchClient: recordingFetch(fetchLog),
      signal: controller.signal,
      subscribe,
      ...options,
    })
    // positions[i] = the stream's offset and handle when batch i was delivered (what an app
    // persisting its position would store alongside the batch).
    const handle = { label, stream, fetchLog, controller, messages: [], batches: [], positions: [], errors: [] }
    handle.abort = () => controller.abort()
    handle.unsubscribe = stream.subscribe(
      (batch) => {
        handle.batches.push(batch)
        handle.positions.push({ offset: stream.lastOffset, handle: stream.shapeHandle })
        handle.messages.push(...batch)
      },
      (err) => {
        handle.errors.push(err)
      },
    )
    this.streams.push(handle)
    return handle
  }

  /** openStream + a Shape on it. */
  openShape(opts) {
    const h = this.openStream(opts)
    h.shape = new Shape(h.stream)
    return h
  }

  /** Waits until the stream has reached up-to-date at least once (fails fast on a stream error). */
  async upToDate(h, timeoutMs = DEFAULT_WAIT_MS) {
    await this.eventually(() => assert.ok(h.stream.isUpToDate, `${h.label}: stream not up-to-date yet`), { timeoutMs, streams: [h] })
  }

  /**
   * Polls `fn` (which asserts or returns truthy) until it passes. Fails fast when a watched stream
   * reported an error or a process died; on timeout rethrows the last assertion error.
   */
  async eventually(fn, { timeoutMs = DEFAULT_WAIT_MS, intervalMs = 50, streams = this.streams } = {}) {
    const deadline = Date.now() + timeoutMs
    let lastErr
    for (;;) {
      for (const s of streams) {
        if (s.errors.length) {
          const e = s.errors[0]
          const err = new Error(`${s.label}: stream error ${e?.name}: ${e?.message}${e?.json ? ` body=${JSON.stringify(e.json)}` : ''}`)
          err.cause = e
          throw err
        }
      }
      if (this.deaths.length) throw new Error(`a process died: ${this.deaths[0]}`)
      try {
        const r = await fn()
        if (r !== false) return r
        lastErr = new Error('condition returned false')
      } catch (e) {
        lastErr = e
      }
      if (Date.now() > deadline) {
        lastErr.message = `timed out after ${timeoutMs} ms: ${lastErr.message}`
        throw lastErr
      }
      await sleep(intervalMs)
    }
  }

  /** Everything useful to understand a failure: HTTP exchanges and process logs. */
  diagnostics({ exchanges = 12 } = {}) {
    const out = []
    for (const { label, log } of this.fetchLogs) {
      if (!log.length) continue
      out.push(`--- HTTP exchange of "${label}" (${log.length} requests, last ${Math.min(exchanges, log.length)}):`)
      for (const e of log.slice(-exchanges)) out.push(describeExchange(e))
    }
    for (const p of [this.walIngest, ...this.edges]) {
      if (!p) continue
      out.push(`--- ${p.kind} log ${p.logFile}${p.exited ? ` (exited ${JSON.stringify(p.exitInfo)})` : ''}:\n${tail(p.logFile, 30)}`)
    }
    if (this.deaths.length) out.push(`--- unexpected exits:\n${this.deaths.join('\n')}`)
    return out.join('\n')
  }

  abortStreams() {
    for (const s of this.streams) {
      s.unsubscribe?.()
      s.controller.abort()
    }
    this.streams = []
  }

  async stop() {
    this.abortStreams()
    const procs = [...this.processes]
    await Promise.all(procs.filter((p) => p.kind === 'shape-edge').map((p) => this.stopProcess(p)))
    await Promise.all(procs.filter((p) => p.kind !== 'shape-edge').map((p) => this.stopProcess(p)))
    await this.pool.end().catch(() => {})
    // The client's up-to-date tracker arms a 60 s (not unref'd) timer to persist to localStorage,
    // which would keep each test file's process alive for a minute after its last test. Once
    // the file's tests and hooks are done, let the process go (exit code as node:test set it).
    setTimeout(() => process.exit(), 1000).unref()
  }
}

/**
 * Starts the file's processes (wal-ingest, then one shape-edge) and returns the harness.
 * Also inserts the default agency the default token belongs to.
 */
export async function startHarness({ edge = true, edgeReady = 'health' } = {}) {
  const h = new Harness()
  try {
    await h.sql('INSERT INTO agencies (id, name) VALUES ($1, $2)', [h.defaultAgency, `default ${h.fileTag}`])
    await h.startWalIngest()
    if (edge) await h.startEdge({ ready: edgeReady })
  } catch (e) {
    await h.stop().catch(() => {})
    throw e
  }
  return h
}

/**
 * The usual file set-up: the harness started before the file's tests and stopped after them,
 * and the `test()` that hands it to each test.
 */
export function harnessTest(options) {
  let h
  before(async () => {
    h = await startHarness(options)
  })
  after(async () => {
    await h?.stop()
  })
  return defineTest(() => h)
}

/**
 * `test()` whose failures print the harness diagnostics (HTTP exchange, process log tails),
 * and which aborts the streams it opened when it ends.
 */
export function defineTest(getHarness) {
  return (name, opts, fn) => {
    if (typeof opts === 'function') {
      fn = opts
      opts = {}
    }
    return nodeTest(name, { timeout: 90_000, ...opts }, async (t) => {
      const h = getHarness()
      assert.ok(h, 'harness failed to start (see before hook)')
      h.fetchLogs = []
      try {
        await fn(t, h)
      } catch (e) {
        console.error(`\n[harness] test "${name}" failed: ${e?.stack ?? e}\n${h.diagnostics()}\n`)
        throw e
      } finally {
        h.abortStreams()
      }
    })
  }
}

// ---------- row helpers ----------

/** Rows sorted by a key (default `id`), for deepEqual. BigInt-aware. */
export function sortRows(rows, key = 'id') {
  return [...rows].sort((a, b) => {
    const x = a[key]
    const y = b[key]
    if (typeof x === 'bigint' || typeof y === 'bigint') return BigInt(x) < BigInt(y) ? -1 : BigInt(x) > BigInt(y) ? 1 : 0
    return x < y ? -1 : x > y ? 1 : 0
  })
}

export function changeMessages(messages) {
  return messages.filter((m) => isChangeMessage(m))
}

export function controlMessages(messages, control) {
  return messages.filter((m) => isControlMessage(m) && (control === undefined || m.headers.control === control))
}

/** Quotes an identifier for SQL. */
export function ident(name) {
  return `"${name.replace(/"/g, '""')}"`
}
