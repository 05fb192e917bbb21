// Figures for docs/benchmarks.md (issue 17): convergence latency with 10 editors each sending
// 10 updates/s on one proposal's document; cold load of a document of 50,000 updates with and
// without compaction; the edge's memory per open document. Run through run.sh --bench.
import fs from "node:fs";
import crypto from "node:crypto";
import * as Y from "yjs";
import { YjsProvider } from "@durable-streams/y-durable-streams";
import { createAgency, createUser, sql, startEdge, eventually, sleep, frame } from "./lib/cluster.mjs";

const pct = (xs, p) => {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.min(s.length - 1, Math.floor((p / 100) * s.length))];
};
const ms = (x) => `${x.toFixed(1)} ms`;

const agency = createAgency("Bench");
const editor = createUser(agency, "editor");
const clientId = crypto.randomUUID();
sql(`INSERT INTO clients (id, agency_id, name, email) VALUES ('${clientId}', '${agency}', 'Acme', 'a@acme.test')`);
/** Draft proposals straight into the database (bench data, not the path under test). */
function proposals(n) {
  const ids = Array.from({ length: n }, () => crypto.randomUUID());
  const values = ids.map((id) => `('${id}', '${agency}', '${clientId}', '${editor.user}', 'Bench', 'EUR')`).join(",");
  sql(`INSERT INTO proposals (id, agency_id, client_id, owner_id, title, currency) VALUES ${values}`);
  return ids;
}
function open(port, id, who = editor) {
  const doc = new Y.Doc();
  const p = new YjsProvider({
    doc,
    baseUrl: `http://127.0.0.1:${port}/v1/yjs/${agency}`,
    docId: `proposals/${id}`,
    headers: { authorization: `Bearer ${who.token}` },
  });
  p.waitSynced = () => eventually("sync", () => p.synced && p.connected, 120000);
  return p;
}
// The edges' per-token and per-agency limits are off: the figures are the edge's, not the
// limiter's (one token writes the 50,000 updates; 200 documents open at once).
const NO_QUOTAS = { FOLIO_DS_QUOTAS: "off" };
const rssKiB = (pid) => Number(/VmRSS:\s+(\d+)/.exec(fs.readFileSync(`/proc/${pid}/status`, "utf8"))[1]);
const results = {};

// 1. Convergence: 10 editors, 10 updates/s each, for 20 s.
{
  const edge = await startEdge("bench-convergence", NO_QUOTAS);
  const [id] = proposals(1);
  const editors = Array.from({ length: 10 }, () => open(edge.port, id, createUser(agency, "editor")));
  await Promise.all(editors.map((p) => p.waitSynced()));
  const latencies = [];
  const sentAt = new Map();
  editors.forEach((p, i) => {
    p.doc.getText("content").observe((event) => {
      if (!event.transaction.origin || event.transaction.local) return;
      const now = performance.now();
      for (const d of event.delta) {
        if (typeof d.insert !== "string") continue;
        for (const m of d.insert.matchAll(/\[(\d+):(\d+)\]/g)) {
          if (Number(m[1]) === i) continue;
          const t = sentAt.get(m[0]);
          if (t !== undefined) latencies.push(now - t);
        }
      }
    });
  });
  const seconds = 20;
  await Promise.all(
    editors.map(async (p, i) => {
      const text = p.doc.getText("content");
      for (let n = 0; n < seconds * 10; n++) {
        const marker = `[${i}:${n}]`;
        sentAt.set(marker, performance.now());
        text.insert(Math.floor(Math.random() * (text.length + 1)), marker);
        await sleep(100);
      }
    }),
  );
  const sv = (p) => Buffer.from(Y.encodeStateVector(p.doc)).toString("base64");
  await eventually("convergence", () => editors.every((p) => sv(p) === sv(editors[0])), 120000);
  await sleep(2000);
  const expected = 10 * 9 * seconds * 10;
  results.convergence = {
    editors: 10, updates_per_second_each: 10, seconds,
    observed: latencies.length, expected,
    p50_ms: pct(latencies, 50), p99_ms: pct(latencies, 99), max_ms: Math.max(...latencies),
  };
  console.log(`convergence: ${latencies.length}/${expected} deliveries, p50 ${ms(pct(latencies, 50))}, p99 ${ms(pct(latencies, 99))}`);
  editors.forEach((p) => p.destroy());
  await edge.kill("SIGTERM");
}

// 2. Cold load of a document of 50,000 updates, with and without compaction, for two shapes
// of history: typed (each update one character after the previous one, as typing makes; Yjs
// stores the run as one item) and scattered (each at a random place: 50,000 items, the worst
// case for a snapshot).
for (const shape of ["typed", "scattered"]) {
  for (const [label, threshold] of [["without compaction", 1 << 30], ["with compaction (256 KiB)", 256 * 1024]]) {
    const edge = await startEdge(`bench-load-${shape}-${threshold}`, { ...NO_QUOTAS, FOLIO_YJS_COMPACTION_THRESHOLD: String(threshold) });
    const [id] = proposals(1);
    const url = `http://127.0.0.1:${edge.port}/v1/yjs/${agency}/docs/proposals/${id}`;
    const auth = { authorization: `Bearer ${editor.token}`, "content-type": "application/octet-stream" };
    if ((await fetch(url, { method: "PUT", headers: auth })).status !== 201) throw new Error("PUT");
    const writer = new Y.Doc();
    const text = writer.getText("content");
    const updates = [];
    writer.on("update", (u) => updates.push(frame(u)));
    for (let i = 0; i < 50000; i++) text.insert(shape === "typed" ? i : Math.floor(Math.random() * (i + 1)), "x");
    for (let i = 0; i < updates.length; i += 500) {
      const res = await fetch(url, { method: "POST", headers: auth, body: Buffer.concat(updates.slice(i, i + 500)) });
      if (!res.ok) throw new Error(`POST ${res.status}`);
    }
    const log = Buffer.concat(updates).length;
    if (threshold < 1 << 30) await sleep(3000); // the last compaction, in the background
    const times = [];
    for (let r = 0; r < 5; r++) {
      const t0 = performance.now();
      const p = open(edge.port, id);
      await p.waitSynced();
      times.push(performance.now() - t0);
      if (p.doc.getText("content").length !== 50000) throw new Error(`loaded ${p.doc.getText("content").length} chars`);
      p.destroy();
    }
    const snap = await fetch(`${url}?offset=snapshot`, { headers: auth, redirect: "manual" });
    const location = snap.headers.get("location");
    let snapshotBytes = 0;
    if (/_snapshot/.test(location)) snapshotBytes = (await (await fetch(new URL(location, url), { headers: auth })).arrayBuffer()).byteLength;
    results[`cold_load_${shape}_${threshold < 1 << 30 ? "compacted" : "uncompacted"}`] = {
      updates: 50000, log_bytes: log, snapshot: location, snapshot_bytes: snapshotBytes, median_ms: pct(times, 50), runs: times,
    };
    console.log(`cold load, ${shape}, ${label}: median ${ms(pct(times, 50))} (log ${log} bytes, snapshot ${snapshotBytes} bytes)`);
    await edge.kill("SIGTERM");
  }
}

// 3. Edge memory per open document: 200 documents, one provider each (SSE + awareness-less).
{
  const edge = await startEdge("bench-memory", NO_QUOTAS);
  const ids = proposals(200);
  const warm = open(edge.port, proposals(1)[0]);
  await warm.waitSynced();
  await sleep(1000);
  const before = rssKiB(edge.pid);
  const open200 = [];
  for (const id of ids) {
    const p = open(edge.port, id);
    open200.push(p);
    p.doc.getText("content").insert(0, "Opening paragraph of a proposal.");
  }
  await Promise.all(open200.map((p) => p.waitSynced()));
  await sleep(3000);
  const afterKiB = rssKiB(edge.pid);
  results.memory = { documents: 200, rss_before_kib: before, rss_after_kib: afterKiB, per_document_kib: (afterKiB - before) / 200 };
  console.log(`edge memory: ${before} KiB -> ${afterKiB} KiB with 200 open documents: ${((afterKiB - before) / 200).toFixed(1)} KiB each`);
  open200.forEach((p) => p.destroy());
  warm.destroy();
  await edge.kill("SIGTERM");
}
if (process.env.YJS_BENCH_RESULTS) fs.writeFileSync(process.env.YJS_BENCH_RESULTS, JSON.stringify(results, null, 2));
process.exit(0);
