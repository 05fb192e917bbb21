// Durable Streams benchmark, after the protocol's docs/benchmarking.md: round-trip overhead
// (append 100 B, receive it through an already-waiting long-poll, minus a HEAD baseline),
// throughput (1,000 × 100 B with concurrency; 50 × 1 MB), append throughput with many writers,
// and SSE delivery latency to many subscribers of one stream.
//
//   node ds-bench.mjs name=http://127.0.0.1:4437 other=http://127.0.0.1:4438 ...
//
// Every target is measured in turn, in one run, with the same client. Prints a Markdown table
// and writes the raw figures as JSON to BENCH_OUT (if set). Env: BENCH_RTT_ROUNDS (200),
// BENCH_SSE_SUBSCRIBERS (1000), BENCH_WRITERS (100), BENCH_RATIO_TO (the target the ratio column
// divides by; default the second).
import { writeFileSync } from "node:fs";
import { performance } from "node:perf_hooks";

const targets = process.argv.slice(2).map((a) => {
  // `name=url[@pids]`: the pids are ds-many.mjs's (memory); this bench ignores them.
  const [name, url] = a.split(/=(.*)/s);
  return { name, url: url.split("@")[0].replace(/\/$/, "") };
});
const RTT_ROUNDS = Number(process.env.BENCH_RTT_ROUNDS ?? 200);
const SUBSCRIBERS = Number(process.env.BENCH_SSE_SUBSCRIBERS ?? 1000);
const WRITERS = Number(process.env.BENCH_WRITERS ?? 100);
const run = Date.now().toString(36);

const pct = (xs, p) => {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.min(s.length - 1, Math.floor((p / 100) * s.length))];
};
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

async function create(base, name, contentType = "text/plain") {
  const res = await fetch(`${base}/v1/stream/bench-${run}-${name}`, { method: "PUT", headers: { "content-type": contentType } });
  if (res.status !== 201 && res.status !== 200) throw new Error(`create ${name}: ${res.status}`);
  await res.arrayBuffer();
  return `${base}/v1/stream/bench-${run}-${name}`;
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

async function smallThroughput(base, total = 1000, concurrency = 10) {
  const url = await create(base, "small");
  const msg = "y".repeat(100);
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
  return { small_msgs_per_s: total / ((performance.now() - t0) / 1000) };
}

async function largeThroughput(base, total = 50) {
  const url = await create(base, "large");
  const mb = "z".repeat(1_000_000);
  const t0 = performance.now();
  for (let i = 0; i < total; i++) await append(url, mb);
  const s = (performance.now() - t0) / 1000;
  return { large_msgs_per_s: total / s, large_mb_per_s: total / s };
}

async function manyWriters(base, writers = WRITERS, each = 20) {
  const urls = [];
  for (let i = 0; i < writers; i++) urls.push(await create(base, `w${i}`));
  const msg = "w".repeat(100);
  const t0 = performance.now();
  await Promise.all(urls.map(async (u) => { for (let i = 0; i < each; i++) await append(u, msg); }));
  return { many_writers_appends_per_s: (writers * each) / ((performance.now() - t0) / 1000) };
}

async function sseFanout(base, subscribers = SUBSCRIBERS, messages = 20) {
  const url = await create(base, "fanout");
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
  for (let i = 0; i < messages; i++) {
    sent.set(i, performance.now());
    await append(url, `msg-${i}-${"s".repeat(80)}`);
    await sleep(50);
  }
  await Promise.race([Promise.all(readers), sleep(10_000)]);
  controllers.forEach((c) => c.abort());
  return {
    sse_subscribers: ready,
    sse_deliveries: latencies.length,
    sse_p50_ms: pct(latencies, 50),
    sse_p99_ms: pct(latencies, 99),
  };
}

const results = {};
for (const t of targets) {
  failedAppends = 0;
  const r = { target: t.name };
  Object.assign(r, await roundTrip(t.url));
  Object.assign(r, await smallThroughput(t.url));
  Object.assign(r, await largeThroughput(t.url));
  Object.assign(r, await manyWriters(t.url));
  Object.assign(r, await sseFanout(t.url));
  r.failed_appends = failedAppends;
  results[t.name] = r;
  console.error(`${t.name}: ${JSON.stringify(r)}`);
}

const cols = [
  ["overhead_p50_ms", "RTT overhead p50 (ms)"],
  ["overhead_p99_ms", "RTT overhead p99 (ms)"],
  ["small_msgs_per_s", "1000×100 B (msg/s)"],
  ["large_mb_per_s", "50×1 MB (MB/s)"],
  ["many_writers_appends_per_s", `${WRITERS} writers (appends/s)`],
  ["sse_p50_ms", `SSE ×${SUBSCRIBERS} p50 (ms)`],
  ["sse_p99_ms", `SSE ×${SUBSCRIBERS} p99 (ms)`],
  ["failed_appends", "failed appends"],
];
const names = Object.keys(results);
// The ratio column compares the first target with BENCH_RATIO_TO (default: the second).
const other = names.includes(process.env.BENCH_RATIO_TO) ? names.indexOf(process.env.BENCH_RATIO_TO) : 1;
const fmt = (v) => (v === undefined ? "–" : v >= 100 ? v.toFixed(0) : v.toFixed(2));
console.log(`| metric | ${names.join(" | ")} |${names.length > 1 ? ` ratio ${names[0]}/${names[other]} |` : ""}`);
console.log(`| --- | ${names.map(() => "---").join(" | ")} |${names.length > 1 ? " --- |" : ""}`);
for (const [k, label] of cols) {
  const vals = names.map((n) => results[n][k]);
  const ratio = names.length > 1 ? ` ${(vals[0] / vals[other]).toFixed(2)} |` : "";
  console.log(`| ${label} | ${vals.map(fmt).join(" | ")} |${ratio}`);
}
console.log(`\nSSE subscribers connected / deliveries: ${names.map((n) => `${n} ${results[n].sse_subscribers}/${results[n].sse_deliveries}`).join(", ")}`);
if (process.env.BENCH_OUT) writeFileSync(process.env.BENCH_OUT, JSON.stringify(results, null, 2));
