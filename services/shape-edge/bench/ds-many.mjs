// Durable Streams at many streams: for each count in BENCH_STREAM_COUNTS, create that many JSON
// streams, measure the memory each idle stream costs, then append from many concurrent writers
// spread over all of them (single messages, and batches of BENCH_BATCH messages per append),
// and finally replay a few large streams from the start (catch-up MB/s).
//
//   node ds-many.mjs name=http://127.0.0.1:4437@PID[,PID…] other=http://127.0.0.1:4438@PID …
//
// A target is `name=URL[|URL…][@PID[,PID…]][#COUNT[,COUNT…]]`:
// - Several URLs joined by `|` are shards of one target: independent servers, each stream
//   living on exactly one of them, chosen by a stable hash (FNV-1a) of its path. This is how the
//   Rust server is measured at 100,000 streams: it keeps a file descriptor open per stream,
//   so one process stops at the fd limit (20,000 here); K processes with their own data dirs and
//   ports each hold ~1/K of the streams, e.g.
//     rust-ds='http://127.0.0.1:4472|http://127.0.0.1:4473|…@PID1,PID2,…'
// - The PIDs after `@` are the processes whose resident memory the target costs: the server
//   processes first, one per URL (the edge; the Rust server or its K shards), then what stands
//   behind them (the edge's nats-server). "server process" memory sums the first one-per-URL
//   PIDs, "with its JetStream" sums them all; no memory is reported without PIDs.
// - `#COUNTS` limits the stream counts measured for this target (e.g. `#10000` for a single
//   Rust process, which cannot hold 100,000 streams); the others are left blank.
// Every target is measured in turn, in one run, with the same client. Prints a Markdown table
// (ratio first target / BENCH_RATIO_TO) and writes the raw figures as JSON to BENCH_OUT (if set).
// Env: BENCH_STREAM_COUNTS (10000,100000), BENCH_CONCURRENCY (128 requests in flight),
//      BENCH_APPENDS (20000 per phase), BENCH_BATCH (10), BENCH_REPLAY_STREAMS (8),
//      BENCH_REPLAY_MB (8 per stream), BENCH_RATIO_TO (the target the ratio column divides by;
//      default the second), BENCH_STREAM_COUNTS= (empty: the replay phase only),
//      BENCH_REPLAY_ROUNDS (1: how many times the replay streams are read; MB/s over all rounds),
//      BENCH_REPLAY_WRITE=sequential (write the replay streams one after another, not at once).
// The replay row also reports CPU per MiB read, from /proc/<pid>/stat around the reads: the
// server process(es) and what stands behind them (the edge's nats-server, shared with whatever
// else uses it, so an upper bound).
import { writeFileSync } from "node:fs";
import { performance } from "node:perf_hooks";
import { cpuSeconds, rssKb } from "./proc.mjs";

const COUNTS = (process.env.BENCH_STREAM_COUNTS ?? "10000,100000").split(",").filter(Boolean).map(Number);
const targets = process.argv.slice(2).map((a) => {
  const [name, rest0] = a.split(/=(.*)/s);
  const [rest, counts] = rest0.split("#");
  const [urls, pids] = rest.split("@");
  const shards = urls.split("|").map((u) => u.replace(/\/$/, ""));
  return {
    name,
    shards,
    pids: pids ? pids.split(",").map(Number) : [],
    counts: counts ? counts.split(",").map(Number).filter((c) => COUNTS.includes(c)) : COUNTS,
  };
});
const CONCURRENCY = Number(process.env.BENCH_CONCURRENCY ?? 128);
const APPENDS = Number(process.env.BENCH_APPENDS ?? 20000);
const BATCH = Number(process.env.BENCH_BATCH ?? 10);
const REPLAY_STREAMS = Number(process.env.BENCH_REPLAY_STREAMS ?? 8);
const REPLAY_MB = Number(process.env.BENCH_REPLAY_MB ?? 8);
const REPLAY_ROUNDS = Number(process.env.BENCH_REPLAY_ROUNDS ?? 1);
const run = Date.now().toString(36);

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

// Runs `task(i)` for i in [0, total) with `concurrency` in flight; returns the seconds taken.
async function pool(total, concurrency, task) {
  let next = 0;
  const t0 = performance.now();
  await Promise.all(
    Array.from({ length: Math.min(concurrency, total) }, async () => {
      while (next < total) await task(next++);
    }),
  );
  return (performance.now() - t0) / 1000;
}

let failures = 0;
async function expectOk(res, what, ok = [200, 201, 204]) {
  await res.arrayBuffer();
  if (!ok.includes(res.status)) {
    if (failures++ < 5) console.error(`${what}: HTTP ${res.status}`);
    return false;
  }
  return true;
}

// FNV-1a, 32 bits: a stable shard for each stream path, the same in every run and process.
function fnv1a(str) {
  let h = 0x811c9dc5;
  for (let i = 0; i < str.length; i++) {
    h ^= str.charCodeAt(i);
    h = Math.imul(h, 0x01000193) >>> 0;
  }
  return h;
}
const streamUrl = (t, name) => {
  const path = `/v1/stream/many-${run}-${name}`;
  return `${t.shards.length === 1 ? t.shards[0] : t.shards[fnv1a(path) % t.shards.length]}${path}`;
};
// The server processes: one per shard URL; the PIDs after them (the edge's nats-server) are not.
const ownPids = (t) => t.pids.slice(0, Math.max(1, t.shards.length));
const behindPids = (t) => t.pids.slice(Math.max(1, t.shards.length));
// CPU time (user + system) of some processes, in ms.
const cpuMs = (pids) => cpuSeconds(pids) * 1000;
const message = (i) => ({ n: i, body: "m".repeat(88) }); // ~100 bytes as JSON

async function manyStreams(t, count) {
  const names = Array.from({ length: count }, (_, i) => `${count}-${i}`);
  // Let the previous phase's garbage settle before the baseline.
  await sleep(2000);
  const rss0 = t.pids.length ? rssKb(t.pids) : 0;
  const own0 = t.pids.length ? rssKb(ownPids(t)) : 0;
  const createS = await pool(count, CONCURRENCY, async (i) => {
    const res = await fetch(streamUrl(t, names[i]), { method: "PUT", headers: { "content-type": "application/json" } });
    await expectOk(res, "create");
  });
  await sleep(2000);
  const rss1 = t.pids.length ? rssKb(t.pids) : 0;
  const own1 = t.pids.length ? rssKb(ownPids(t)) : 0;
  const pick = () => names[Math.floor(Math.random() * count)];
  const single = await pool(APPENDS, CONCURRENCY, async (i) => {
    const res = await fetch(streamUrl(t, pick()), {
      method: "POST",
      headers: { "content-type": "application/json" },
      body: JSON.stringify(message(i)),
    });
    await expectOk(res, "append");
  });
  const batches = Math.ceil(APPENDS / BATCH);
  const batched = await pool(batches, CONCURRENCY, async (i) => {
    const body = JSON.stringify(Array.from({ length: BATCH }, (_, k) => message(i * BATCH + k)));
    const res = await fetch(streamUrl(t, pick()), { method: "POST", headers: { "content-type": "application/json" }, body });
    await expectOk(res, "batched append");
  });
  return {
    creates_per_s: count / createS,
    idle_bytes_per_stream: t.pids.length ? ((rss1 - rss0) * 1024) / count : undefined,
    idle_bytes_per_stream_own: t.pids.length ? ((own1 - own0) * 1024) / count : undefined,
    appends_per_s: APPENDS / single,
    batched_appends_per_s: batches / batched,
    batched_msgs_per_s: (batches * BATCH) / batched,
  };
}

// Writes REPLAY_STREAMS streams of REPLAY_MB each (64 KiB appends), then reads them all from the
// start, following Stream-Next-Offset until up to date.
async function replay(t) {
  const chunk = "r".repeat(64 * 1024);
  const perStream = Math.ceil((REPLAY_MB * 1024 * 1024) / chunk.length);
  const urls = [];
  for (let s = 0; s < REPLAY_STREAMS; s++) {
    const url = streamUrl(t, `replay-${t.name}-${s}`);
    await expectOk(await fetch(url, { method: "PUT", headers: { "content-type": "text/plain" } }), "create");
    urls.push(url);
  }
  const write = async (url) => {
    for (let i = 0; i < perStream; i++) {
      await expectOk(await fetch(url, { method: "POST", headers: { "content-type": "text/plain" }, body: chunk }), "replay append");
    }
  };
  // Concurrent writers interleave the streams' messages in the server's storage; one stream
  // after another does not (BENCH_REPLAY_WRITE=sequential, to see what interleaving costs).
  if (process.env.BENCH_REPLAY_WRITE === "sequential") for (const url of urls) await write(url);
  else await Promise.all(urls.map(write));
  let bytes = 0;
  let requests = 0;
  const own0 = cpuMs(ownPids(t));
  const behind0 = cpuMs(behindPids(t));
  const client0 = process.cpuUsage();
  const t0 = performance.now();
  for (let round = 0; round < REPLAY_ROUNDS; round++) {
    await Promise.all(
      urls.map(async (url) => {
        let offset = "-1";
        for (;;) {
          const res = await fetch(`${url}?offset=${offset}`);
          const body = await res.arrayBuffer();
          requests++;
          if (res.status !== 200) throw new Error(`replay read: HTTP ${res.status}`);
          bytes += body.byteLength;
          offset = res.headers.get("stream-next-offset");
          if (res.headers.get("stream-up-to-date") === "true") break;
        }
      }),
    );
  }
  const s = (performance.now() - t0) / 1000;
  const client = process.cpuUsage(client0);
  const expected = REPLAY_ROUNDS * REPLAY_STREAMS * perStream * chunk.length;
  if (bytes !== expected) throw new Error(`replay read ${bytes} bytes, wrote ${expected}`);
  const mib = bytes / (1024 * 1024);
  return {
    replay_mb_per_s: bytes / 1e6 / s,
    replay_requests: requests,
    replay_cpu_ms_per_mib_own: t.pids.length ? (cpuMs(ownPids(t)) - own0) / mib : undefined,
    replay_cpu_ms_per_mib_behind: behindPids(t).length ? (cpuMs(behindPids(t)) - behind0) / mib : undefined,
    replay_cpu_ms_per_mib_client: (client.user + client.system) / 1000 / mib,
  };
}

const results = {};
for (const t of targets) {
  failures = 0;
  const r = { target: t.name };
  for (const count of t.counts) {
    const m = await manyStreams(t, count);
    for (const [k, v] of Object.entries(m)) r[`${k}@${count}`] = v;
    console.error(`${t.name} ${count}: ${JSON.stringify(m)}`);
  }
  Object.assign(r, await replay(t));
  r.failures = failures;
  results[t.name] = r;
  console.error(`${t.name}: ${JSON.stringify(r)}`);
}

const cols = [];
for (const count of COUNTS) {
  const n = count.toLocaleString("en-US");
  cols.push(
    [`creates_per_s@${count}`, `${n} streams: creates/s`],
    [`idle_bytes_per_stream_own@${count}`, `${n} streams: memory per idle stream, server process (bytes)`],
    [`idle_bytes_per_stream@${count}`, `${n} streams: memory per idle stream, with its JetStream (bytes)`],
    [`appends_per_s@${count}`, `${n} streams: appends/s (1 msg, ${CONCURRENCY} in flight)`],
    [`batched_appends_per_s@${count}`, `${n} streams: batched appends/s (${BATCH} msgs each)`],
    [`batched_msgs_per_s@${count}`, `${n} streams: batched msgs/s`],
  );
}
cols.push(
  ["replay_mb_per_s", `catch-up replay, ${REPLAY_STREAMS} × ${REPLAY_MB} MB${REPLAY_ROUNDS > 1 ? ` × ${REPLAY_ROUNDS} rounds` : ""} (MB/s)`],
  ["replay_requests", "catch-up replay: requests"],
  ["replay_cpu_ms_per_mib_own", "catch-up replay: CPU ms per MiB, server process(es) (lower is better)"],
  ["replay_cpu_ms_per_mib_behind", "catch-up replay: CPU ms per MiB, its JetStream (lower is better)"],
  ["replay_cpu_ms_per_mib_client", "catch-up replay: CPU ms per MiB, client"],
  ["failures", "failed requests"],
);
const names = Object.keys(results);
// The ratio column compares the first target with BENCH_RATIO_TO (default: the second).
const other = names.includes(process.env.BENCH_RATIO_TO) ? names.indexOf(process.env.BENCH_RATIO_TO) : 1;
const fmt = (v) => (v === undefined ? "–" : v >= 100 ? v.toFixed(0) : v.toFixed(2));
console.log(`| metric | ${names.join(" | ")} |${names.length > 1 ? ` ratio ${names[0]}/${names[other]} |` : ""}`);
console.log(`| --- | ${names.map(() => "---").join(" | ")} |${names.length > 1 ? " --- |" : ""}`);
for (const [k, label] of cols) {
  const vals = names.map((n) => results[n][k]);
  const r = vals[0] / vals[other];
  const ratio = names.length > 1 ? ` ${Number.isFinite(r) ? r.toFixed(2) : "–"} |` : "";
  console.log(`| ${label} | ${vals.map(fmt).join(" | ")} |${ratio}`);
}
if (process.env.BENCH_OUT) writeFileSync(process.env.BENCH_OUT, JSON.stringify(results, null, 2));
