// Durable Streams benchmark, after the protocol's docs/benchmarking.md: round-trip overhead
// (append 100 B, receive it through an already-waiting long-poll, minus a HEAD baseline),
// throughput (1,000 × 100 B with concurrency; 50 × 1 MB), append throughput with many writers,
// and SSE delivery latency to many subscribers of one stream.
//
//   node ds-bench.mjs name=http://127.0.0.1:4437 other=http://127.0.0.1:4438 ...
//
// Every target is measured in turn, in one run, with the same client, BENCH_ROUNDS times (3):
// odd rounds in the order given, even rounds in reverse, after one warm-up pass against the
// first target that is not counted (a cold client - JIT, connection pool - made whichever
// target came first look up to 40 % slower). Prints a Markdown table of each target's median
// over the rounds (and its range), and writes every round's figures as JSON to BENCH_OUT (if
// set). Env: BENCH_ROUNDS (3), BENCH_WARMUP (1; 0 for none), BENCH_RTT_ROUNDS (200),
// BENCH_SSE_SUBSCRIBERS (1000), BENCH_WRITERS (100), BENCH_RATIO_TO (the target the ratio column
// divides by; default the second).
import { writeFileSync } from "node:fs";
import { performance } from "node:perf_hooks";
import { cpuSeconds } from "./proc.mjs";

const targets = process.argv.slice(2).map((a) => {
  // `name=url[@pid,pid…]`: the server's processes (the edge and its nats-server), whose CPU is
  // counted per operation in each phase.
  const [name, rest] = a.split(/=(.*)/s);
  const [url, pids = ""] = rest.split("@");
  return { name, url: url.replace(/\/$/, ""), pids: pids.split(",").filter(Boolean).map(Number) };
});
const RTT_ROUNDS = Number(process.env.BENCH_RTT_ROUNDS ?? 200);
const ROUNDS = Math.max(1, Number(process.env.BENCH_ROUNDS ?? 3));
const WARMUP = process.env.BENCH_WARMUP !== "0";
const SUBSCRIBERS = Number(process.env.BENCH_SSE_SUBSCRIBERS ?? 1000);
const WRITERS = Number(process.env.BENCH_WRITERS ?? 100);
const run = Date.now().toString(36);

const pct = (xs, p) => {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.min(s.length - 1, Math.floor((p / 100) * s.length))];
};
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
// Started where a phase's clock starts: `per(n)` is µs of the target's CPU per operation since
// (undefined without pids).
function cpuMeter(t) {
  const before = t.pids.length ? cpuSeconds(t.pids) : 0;
  return { per: (n) => (t.pids.length && n ? ((cpuSeconds(t.pids) - before) * 1e6) / n : undefined) };
}

let pass = 0;
async function create(base, name, contentType = "text/plain") {
  const res = await fetch(`${base}/v1/stream/bench-${run}-p${pass}-${name}`, { method: "PUT", headers: { "content-type": contentType } });
  if (res.status !== 201 && res.status !== 200) throw new Error(`create ${name}: ${res.status}`);
  await res.arrayBuffer();
  return `${base}/v1/stream/bench-${run}-p${pass}-${name}`;
}

// Failed appends are counted, not fatal: a peer that drops a few under load still gets figures.
let failedAppends = 0;
async function append(url, body) {
  const res = await fetch(url, { method: "POST", headers: { "content-type": "text/plain" }, body });
  await res.arrayBuffer();
  if (res.status !== 204 && res.status !== 200) {
    failedAppends++;
    return null;
  }
  return res.headers.get("stream-next-offset");
}

async function roundTrip(base) {
  const url = await create(base, "rtt");
  const heads = [];
  for (let i = 0; i < RTT_ROUNDS; i++) {
    const t0 = performance.now();
    const r = await fetch(url, { method: "HEAD" });
    await r.arrayBuffer();
    heads.push(performance.now() - t0);
  }
  const headP50 = pct(heads, 50);
  const msg = "x".repeat(100);
  let offset = await append(url, msg);
  const rtts = [];
  for (let i = 0; i < RTT_ROUNDS; i++) {
    const poll = fetch(`${url}?offset=${offset}&live=long-poll`).then(async (r) => {
      await r.arrayBuffer();
      return { t: performance.now(), next: r.headers.get("stream-next-offset"), status: r.status };
    });
    await sleep(2); // let the long-poll reach the server and wait
    const t0 = performance.now();
    if ((await append(url, msg)) === null) throw new Error("round-trip append failed");
    const got = await poll;
    if (got.status !== 200) throw new Error(`long-poll answered ${got.status}`);
    rtts.push(got.t - t0);
    offset = got.next;
  }
  const overhead = rtts.map((r) => Math.max(0, r - headP50));
  return { head_p50_ms: headP50, rtt_p50_ms: pct(rtts, 50), overhead_p50_ms: pct(overhead, 50), overhead_p99_ms: pct(overhead, 99) };
}

async function smallThroughput(t, total = 1000, concurrency = 10) {
  const url = await create(t.url, "small");
  const msg = "y".repeat(100);
  const cpu = cpuMeter(t);
  const t0 = performance.now();
  let next = 0;
  await Promise.all(
    Array.from({ length: concurrency }, async () => {
      while (next < total) {
        next++;
        await append(url, msg);
      }
    }),
  );
  return { small_msgs_per_s: total / ((performance.now() - t0) / 1000), small_cpu_us: cpu.per(total) };
}

async function largeThroughput(t, total = 50) {
  const url = await create(t.url, "large");
  const mb = "z".repeat(1_000_000);
  const cpu = cpuMeter(t);
  const t0 = performance.now();
  for (let i = 0; i < total; i++) await append(url, mb);
  const s = (performance.now() - t0) / 1000;
  return { large_msgs_per_s: total / s, large_mb_per_s: total / s, large_cpu_us: cpu.per(total) };
}

async function manyWriters(t, writers = WRITERS, each = 20) {
  const urls = [];
  for (let i = 0; i < writers; i++) urls.push(await create(t.url, `w${i}`));
  const msg = "w".repeat(100);
  const cpu = cpuMeter(t);
  const t0 = performance.now();
  await Promise.all(urls.map(async (u) => { for (let i = 0; i < each; i++) await append(u, msg); }));
  return {
    many_writers_appends_per_s: (writers * each) / ((performance.now() - t0) / 1000),
    many_writers_cpu_us: cpu.per(writers * each),
  };
}

async function sseFanout(t, subscribers = SUBSCRIBERS, messages = 20) {
  const url = await create(t.url, "fanout");
  const sent = new Map();
  const latencies = [];
  const controllers = [];
  let ready = 0;
  const readers = Array.from({ length: subscribers }, async () => {
    const ctl = new AbortController();
    controllers.push(ctl);
    const res = await fetch(`${url}?offset=now&live=sse`, { signal: ctl.signal });
    const reader = res.body.getReader();
    const decoder = new TextDecoder();
    let buf = "";
    let counted = false;
    let got = 0;
    try {
      for (;;) {
        const { value, done } = await reader.read();
        if (done) return;
        buf += decoder.decode(value, { stream: true });
        let i;
        while ((i = buf.indexOf("\n\n")) >= 0) {
          const event = buf.slice(0, i);
          buf = buf.slice(i + 2);
          if (!counted && event.includes("event: control")) { counted = true; ready++; }
          const m = event.match(/data:\s?msg-(\d+)-/);
          if (m) {
            latencies.push(performance.now() - sent.get(Number(m[1])));
            if (++got === messages) return;
          }
        }
      }
    } catch { /* aborted */ }
  });
  const deadline = Date.now() + 60_000;
  while (ready < subscribers && Date.now() < deadline) await sleep(20);
  const cpu = cpuMeter(t);
  for (let i = 0; i < messages; i++) {
    sent.set(i, performance.now());
    await append(url, `msg-${i}-${"s".repeat(80)}`);
    await sleep(50);
  }
  await Promise.race([Promise.all(readers), sleep(10_000)]);
  // A reader that missed an event keeps the window open until the 10 s cut-off, and that idle
  // time would count as CPU per delivery: only a complete phase gets the figure.
  const complete = latencies.length === subscribers * messages;
  if (!complete) console.error(`${t.name}: ${latencies.length} of ${subscribers * messages} SSE deliveries; no CPU figure`);
  const sseCpu = complete ? cpu.per(latencies.length) : undefined;
  controllers.forEach((c) => c.abort());
  return {
    sse_subscribers: ready,
    sse_deliveries: latencies.length,
    sse_p50_ms: pct(latencies, 50),
    sse_p99_ms: pct(latencies, 99),
    sse_cpu_us: sseCpu,
  };
}

async function measure(t) {
  pass++;
  failedAppends = 0;
  const r = { target: t.name };
  Object.assign(r, await roundTrip(t.url));
  Object.assign(r, await smallThroughput(t));
  Object.assign(r, await largeThroughput(t));
  Object.assign(r, await manyWriters(t));
  Object.assign(r, await sseFanout(t));
  r.failed_appends = failedAppends;
  return r;
}

if (WARMUP && targets.length) {
  const r = await measure(targets[0]);
  console.error(`warm-up (not counted), ${targets[0].name}: ${JSON.stringify(r)}`);
}
const rounds = Object.fromEntries(targets.map((t) => [t.name, []]));
for (let round = 0; round < ROUNDS; round++) {
  const order = round % 2 === 0 ? targets : [...targets].reverse();
  for (const t of order) {
    const r = await measure(t);
    rounds[t.name].push(r);
    console.error(`round ${round + 1}, ${t.name}: ${JSON.stringify(r)}`);
  }
}
// Each figure is the median over the rounds; failed appends are summed.
const median = (xs) => {
  const s = [...xs].sort((a, b) => a - b);
  return s.length % 2 ? s[(s.length - 1) / 2] : (s[s.length / 2 - 1] + s[s.length / 2]) / 2;
};
const results = {};
for (const [name, rs] of Object.entries(rounds)) {
  results[name] = { target: name, rounds: rs };
  const keys = new Set(rs.flatMap((r) => Object.keys(r).filter((k) => typeof r[k] === "number")));
  for (const k of keys) {
    const xs = rs.map((r) => r[k]).filter((x) => typeof x === "number");
    results[name][k] = k === "failed_appends" ? xs.reduce((a, b) => a + b, 0) : median(xs);
    results[name][`${k}_range`] = [Math.min(...xs), Math.max(...xs)];
  }
}

const cols = [
  ["overhead_p50_ms", "RTT overhead p50 (ms)"],
  ["overhead_p99_ms", "RTT overhead p99 (ms)"],
  ["small_msgs_per_s", "1000×100 B (msg/s)"],
  ["large_mb_per_s", "50×1 MB (MB/s)"],
  ["many_writers_appends_per_s", `${WRITERS} writers (appends/s)`],
  ["sse_p50_ms", `SSE ×${SUBSCRIBERS} p50 (ms)`],
  ["sse_p99_ms", `SSE ×${SUBSCRIBERS} p99 (ms)`],
  ["small_cpu_us", "server CPU per 100 B append (µs)"],
  ["large_cpu_us", "server CPU per 1 MB append (µs)"],
  ["many_writers_cpu_us", "server CPU per append, many writers (µs)"],
  ["sse_cpu_us", "server CPU per SSE delivery (µs)"],
  ["failed_appends", "failed appends (all rounds)"],
];
const names = Object.keys(results);
// The ratio column compares the first target with BENCH_RATIO_TO (default: the second).
const other = names.includes(process.env.BENCH_RATIO_TO) ? names.indexOf(process.env.BENCH_RATIO_TO) : 1;
const fmt = (v) => (v === undefined ? "–" : v >= 100 ? v.toFixed(0) : v.toFixed(2));
console.log(`| metric | ${names.join(" | ")} |${names.length > 1 ? ` ratio ${names[0]}/${names[other]} |` : ""}`);
console.log(`| --- | ${names.map(() => "---").join(" | ")} |${names.length > 1 ? " --- |" : ""}`);
for (const [k, label] of cols.filter(([k]) => names.some((n) => results[n][k] !== undefined))) {
  const vals = names.map((n) => results[n][k]);
  const r = vals[0] / vals[other];
  const ratio = names.length > 1 ? ` ${Number.isFinite(r) ? r.toFixed(2) : "–"} |` : "";
  console.log(`| ${label} | ${vals.map(fmt).join(" | ")} |${ratio}`);
}
if (ROUNDS > 1) {
  console.log(`\nMedians of ${ROUNDS} rounds (odd rounds in the order above, even ones reversed, after a warm-up pass). Ranges:`);
  for (const [k, label] of cols.filter(([k]) => k !== "failed_appends")) {
    const ranges = names.filter((n) => results[n][`${k}_range`]);
    if (ranges.length) console.log(`- ${label}: ${ranges.map((n) => `${n} ${results[n][`${k}_range`].map(fmt).join("–")}`).join(", ")}`);
  }
}
console.log(`\nSSE subscribers connected / deliveries: ${names.map((n) => `${n} ${results[n].sse_subscribers}/${results[n].sse_deliveries}`).join(", ")}`);
if (process.env.BENCH_OUT) writeFileSync(process.env.BENCH_OUT, JSON.stringify(results, null, 2));
