// What one JetStream server takes here: pipelined publishes of 100 B messages, each awaited
// for its acknowledgement (as the edge's append path does), over one connection with up to
// BENCH_WINDOW publishes in flight, into a file-storage stream shaped like the edge's (one
// subject per durable stream, BENCH_SUBJECTS of them). Speaks the NATS text protocol directly
// (no client library) and deletes its stream afterwards.
//
//   node js-publish.mjs nats://127.0.0.1:4333 [NATS_SERVER_PID]
//
// With the nats-server's pid it also reports that server's CPU per acknowledged publish (from
// /proc/<pid>/stat; it counts whatever else the server did meanwhile).
// Env: BENCH_PUBLISHES (100000), BENCH_WINDOW (list, default 1,16,256), BENCH_SUBJECTS (10000),
//      BENCH_SIZE (payload bytes, 100).
import net from "node:net";
import { performance } from "node:perf_hooks";
import { cpuSeconds } from "./proc.mjs";

const u = new URL(process.argv[2] ?? "nats://127.0.0.1:4333");
const TOTAL = Number(process.env.BENCH_PUBLISHES ?? 100000);
const WINDOWS = (process.env.BENCH_WINDOW ?? "1,16,256").split(",").map(Number);
const SUBJECTS = Number(process.env.BENCH_SUBJECTS ?? 10000);
const SIZE = Number(process.env.BENCH_SIZE ?? 100);
const serverPid = process.argv[3] ? Number(process.argv[3]) : null;
const serverCpu = () => cpuSeconds([serverPid]);
const name = `jsprobe_${Date.now().toString(36)}`;
const inbox = `_INBOX.${name}`;

const sock = net.connect(Number(u.port || 4222), u.hostname);
sock.setNoDelay(true);
let buf = Buffer.alloc(0);
const waiters = new Map(); // reply subject → resolve
let onAck = null;
sock.on("data", (d) => {
  buf = buf.length ? Buffer.concat([buf, d]) : d;
  for (;;) {
    const eol = buf.indexOf("\r\n");
    if (eol < 0) return;
    const line = buf.subarray(0, eol).toString();
    if (line.startsWith("MSG ")) {
      const parts = line.split(" ");
      const size = Number(parts[parts.length - 1]);
      if (buf.length < eol + 2 + size + 2) return;
      const payload = buf.subarray(eol + 2, eol + 2 + size).toString();
      buf = buf.subarray(eol + 2 + size + 2);
      const subject = parts[1];
      const w = waiters.get(subject);
      if (w) {
        waiters.delete(subject);
        w(payload);
      } else if (onAck) onAck(payload);
      continue;
    }
    buf = buf.subarray(eol + 2);
    if (line.startsWith("PING")) sock.write("PONG\r\n");
    else if (line.startsWith("-ERR")) throw new Error(line);
  }
});
const pub = (subject, reply, payload) => sock.write(`PUB ${subject} ${reply} ${Buffer.byteLength(payload)}\r\n${payload}\r\n`);
const request = (subject, payload) =>
  new Promise((resolve) => {
    const reply = `${inbox}.r${Math.random().toString(36).slice(2)}`;
    waiters.set(reply, resolve);
    pub(subject, reply, payload);
  });

await new Promise((r) => sock.once("connect", r));
sock.write(`CONNECT {"verbose":false,"pedantic":false,"headers":false}\r\nSUB ${inbox}.> 1\r\n`);
const created = JSON.parse(
  await request(`$JS.API.STREAM.CREATE.${name}`, JSON.stringify({ name, subjects: [`${name}.d.*`], storage: "file", allow_direct: true })),
);
if (created.error) throw new Error(JSON.stringify(created.error));

const body = "p".repeat(SIZE);
const results = [];
for (const window of WINDOWS) {
  let sent = 0;
  let acked = 0;
  let errors = 0;
  const cpu0 = serverPid ? serverCpu() : 0;
  const t0 = performance.now();
  await new Promise((done) => {
    const send = () => {
      while (sent < TOTAL && sent - acked < window) pub(`${name}.d.s${sent++ % SUBJECTS}`, `${inbox}.ack`, body);
    };
    onAck = (payload) => {
      acked++;
      if (payload.includes('"error"')) errors++;
      if (acked === TOTAL) done();
      else send();
    };
    send();
  });
  const s = (performance.now() - t0) / 1000;
  const cpuUs = serverPid ? ((serverCpu() - cpu0) * 1e6) / TOTAL : undefined;
  results.push({ window, publishes_per_s: TOTAL / s, server_cpu_us_per_publish: cpuUs, errors });
  console.error(JSON.stringify(results.at(-1)));
}
await request(`$JS.API.STREAM.DELETE.${name}`, "");
sock.end();
const what = `${SIZE.toLocaleString("en-US")} B, file storage, ${SUBJECTS.toLocaleString("en-US")} subjects`;
console.log(`| publishes in flight | acknowledged publishes/s (${what}) |${serverPid ? " nats-server CPU per publish (µs) |" : ""}`);
console.log(`| --- | --- |${serverPid ? " --- |" : ""}`);
for (const r of results) {
  const cpu = serverPid ? ` ${r.server_cpu_us_per_publish.toFixed(0)} |` : "";
  console.log(`| ${r.window} | ${r.publishes_per_s.toFixed(0)}${r.errors ? ` (${r.errors} errors)` : ""} |${cpu}`);
}
