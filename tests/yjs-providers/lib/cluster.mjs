// What the provider tests run against: the real services started by run.sh (proposals-api,
// wal-ingest, pdf-render on a fresh database), shape-edges this file starts and kills, and a
// small HTTP proxy in front of them (a load balancer: the providers' one base URL), plus the
// API's gRPC-Web (hand-encoded protobuf: the few messages the tests send), tokens and SQL.
import { spawn, execFileSync } from "node:child_process";
import crypto from "node:crypto";
import http from "node:http";
import net from "node:net";
import fs from "node:fs";
import * as Y from "yjs";
import { YjsProvider } from "@durable-streams/y-durable-streams";

const env = (name) => {
  const v = process.env[name];
  if (!v) throw new Error(`${name} is not set (run the tests through run.sh)`);
  return v;
};

export const API = () => `http://127.0.0.1:${env("YJS_TEST_API_PORT")}`;
const DB = () => env("YJS_TEST_DB");

export const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

export async function eventually(what, check, patience = Number(process.env.FOLIO_TEST_PATIENCE_MS ?? 30000)) {
  const deadline = Date.now() + patience;
  let last;
  for (;;) {
    try {
      const v = await check();
      if (v) return v;
    } catch (e) {
      last = e;
    }
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}${last ? `: ${last.message}` : ""}`);
    await sleep(50);
  }
}

// ---- database (test data only: agencies and users have no API) ----

export function sql(query) {
  return execFileSync("psql", [DB(), "-AtqX", "-v", "ON_ERROR_STOP=1", "-c", query], { encoding: "utf8" }).trim();
}

export function createAgency(name) {
  const id = crypto.randomUUID();
  sql(`INSERT INTO agencies (id, name, brand_color) VALUES ('${id}', '${name}', '#0b6e4f')`);
  return id;
}

export function createUser(agency, role) {
  const id = crypto.randomUUID();
  sql(`INSERT INTO users (id, agency_id, email, name, role) VALUES ('${id}', '${agency}', '${id}@test.invalid', '${role} ${id.slice(0, 4)}', '${role}')`);
  return { user: id, agency, role, token: token(id, agency, role) };
}

// ---- tokens (HS256, the services' shared secret) ----

const b64url = (b) => Buffer.from(b).toString("base64url");
export function token(sub, agency, role) {
  const now = Math.floor(Date.now() / 1000);
  const head = b64url(JSON.stringify({ alg: "HS256", typ: "JWT" }));
  const body = b64url(JSON.stringify({ sub, agency_id: agency, role, iat: now, exp: now + 3600 }));
  const sig = crypto.createHmac("sha256", env("FOLIO_JWT_SECRET")).update(`${head}.${body}`).digest("base64url");
  return `${head}.${body}.${sig}`;
}

// ---- protobuf, just enough ----

function varint(n) {
  const out = [];
  let v = BigInt(n);
  do {
    let byte = Number(v & 0x7fn);
    v >>= 7n;
    if (v > 0n) byte |= 0x80;
    out.push(byte);
  } while (v > 0n);
  return Buffer.from(out);
}

export const pb = {
  str: (field, s) => {
    const b = Buffer.from(s, "utf8");
    return Buffer.concat([varint((field << 3) | 2), varint(b.length), b]);
  },
  int: (field, n) => Buffer.concat([varint(field << 3), varint(n)]),
  // field number -> [values]: Buffers for length-delimited fields, BigInts for varints
  decode(buf) {
    const fields = {};
    let i = 0;
    const readVarint = () => {
      let v = 0n;
      let shift = 0n;
      for (;;) {
        const b = buf[i++];
        v |= BigInt(b & 0x7f) << shift;
        if (!(b & 0x80)) return v;
        shift += 7n;
      }
    };
    while (i < buf.length) {
      const key = Number(readVarint());
      const [field, type] = [key >> 3, key & 7];
      let value;
      if (type === 0) value = readVarint();
      else if (type === 2) {
        const len = Number(readVarint());
        value = buf.subarray(i, i + len);
        i += len;
      } else if (type === 1) (value = buf.subarray(i, i + 8)), (i += 8);
      else if (type === 5) (value = buf.subarray(i, i + 4)), (i += 4);
      else throw new Error(`wire type ${type}`);
      (fields[field] ??= []).push(value);
    }
    return fields;
  },
};

/** One unary gRPC-Web call; the response message's fields, or throws with the gRPC status. */
export async function grpcWeb(method, message, caller) {
  const frame = Buffer.alloc(5 + message.length);
  frame.writeUInt32BE(message.length, 1);
  message.copy(frame, 5);
  const res = await fetch(`${API()}/${method}`, {
    method: "POST",
    headers: {
      "content-type": "application/grpc-web+proto",
      "x-grpc-web": "1",
      authorization: `Bearer ${caller.token}`,
    },
    body: frame,
  });
  const body = Buffer.from(await res.arrayBuffer());
  let data = null;
  let trailers = "";
  for (let i = 0; i < body.length; ) {
    const flag = body[i];
    const len = body.readUInt32BE(i + 1);
    const chunk = body.subarray(i + 5, i + 5 + len);
    if (flag & 0x80) trailers += chunk.toString("utf8");
    else data = chunk;
    i += 5 + len;
  }
  const status = res.headers.get("grpc-status") ?? /grpc-status:\s*(\d+)/.exec(trailers)?.[1] ?? "0";
  if (status !== "0") {
    const message = decodeURIComponent(res.headers.get("grpc-message") ?? /grpc-message:\s*(.*)/.exec(trailers)?.[1] ?? "");
    throw Object.assign(new Error(`${method}: grpc-status ${status}: ${message}`), { code: Number(status) });
  }
  return pb.decode(data ?? Buffer.alloc(0));
}

const str = (fields, n) => (fields[n]?.[0] ? fields[n][0].toString("utf8") : "");
export function proposalOf(fields) {
  const p = pb.decode(fields[1][0]);
  return { id: str(p, 1), status: Number(p[7]?.[0] ?? 0), version: Number(p[10]?.[0] ?? 0), content: str(p, 11) };
}

export async function createProposal(editor, content) {
  const client = await grpcWeb(
    "folio.api.v1.ClientService/CreateClient",
    Buffer.concat([pb.str(1, "Acme"), pb.str(2, "buyer@acme.test")]),
    editor,
  );
  const clientId = str(pb.decode(client[1][0]), 1);
  const created = await grpcWeb(
    "folio.api.v1.ProposalService/CreateProposal",
    Buffer.concat([pb.str(2, clientId), pb.str(3, "Website redesign"), pb.str(4, "EUR"), pb.str(6, content)]),
    editor,
  );
  return proposalOf(created);
}

/** One line item (1 × 1,500.00 at 20 %): AddLineItemRequest{proposal_id, line_item: LineItemInput}. */
export async function addLineItem(editor, id) {
  const item = Buffer.concat([pb.str(1, "Design"), pb.int(2, 1000), pb.int(3, 150000), pb.int(4, 200000)]);
  const nested = Buffer.concat([Buffer.from([(2 << 3) | 2]), varint(item.length), item]);
  return proposalOf(await grpcWeb("folio.api.v1.ProposalService/AddLineItem", Buffer.concat([pb.str(1, id), nested]), editor));
}

export async function getProposal(caller, id) {
  return proposalOf(await grpcWeb("folio.api.v1.ProposalService/GetProposal", pb.str(1, id), caller));
}

export async function sendProposal(editor, id) {
  const PROPOSAL_STATUS_SENT = 2;
  return proposalOf(
    await grpcWeb(
      "folio.api.v1.ProposalService/TransitionProposal",
      Buffer.concat([pb.str(1, id), pb.int(2, PROPOSAL_STATUS_SENT)]),
      editor,
    ),
  );
}

/** RequestPdf, then waits until the rendition is ready; the PDF's bytes. */
export async function renderPdf(editor, id) {
  const requested = await grpcWeb("folio.api.v1.ProposalService/RequestPdf", pb.str(1, id), editor);
  const rendition = str(requested, 1);
  const READY = 3, FAILED = 4;
  await eventually("the PDF to be rendered", async () => {
    const got = pb.decode((await grpcWeb("folio.api.v1.ProposalService/GetRendition", pb.str(1, rendition), editor))[1][0]);
    const status = Number(got[4]?.[0] ?? 0);
    if (status === FAILED) throw new Error(`rendition failed: ${str(got, 5)}`);
    return status === READY;
  }, 120000);
  const res = await fetch(`${API()}/v1/renditions/${rendition}/pdf`, { headers: { authorization: `Bearer ${editor.token}` } });
  if (res.status !== 200) throw new Error(`PDF download: ${res.status}`);
  return Buffer.from(await res.arrayBuffer());
}

export function pdfText(pdf) {
  const file = `${env("YJS_TEST_WORK")}/r${Date.now()}.pdf`;
  fs.writeFileSync(file, pdf);
  return execFileSync("pdftotext", ["-layout", file, "-"], { encoding: "utf8" });
}

// ---- edges and the proxy in front of them ----

const freePort = () =>
  new Promise((resolve, reject) => {
    const s = net.createServer();
    s.listen(0, "127.0.0.1", () => {
      const { port } = s.address();
      s.close(() => resolve(port));
    });
    s.on("error", reject);
  });

/** A shape-edge process of the run's cluster (the environment run.sh exported). */
export async function startEdge(name, extraEnv = {}) {
  const port = await freePort();
  const log = fs.openSync(`${env("YJS_TEST_WORK")}/${name}.log`, "a");
  const child = spawn(env("SHAPE_EDGE_BIN"), ["--listen-addr", `127.0.0.1:${port}`, "--admin-addr", "127.0.0.1:0"], {
    stdio: ["ignore", log, log],
    env: { ...process.env, ...extraEnv },
  });
  fs.writeFileSync(`${env("YJS_TEST_WORK")}/pid.${child.pid}`, env("SHAPE_EDGE_BIN"));
  let exited = false;
  child.on("exit", () => (exited = true));
  await eventually(`${name} to listen`, async () => {
    if (exited) throw new Error(`${name} exited during start-up (see ${name}.log)`);
    const res = await fetch(`http://127.0.0.1:${port}/v1/stream/ready-check`, { method: "OPTIONS" }).catch(() => null);
    return res !== null;
  });
  return {
    port,
    pid: child.pid,
    kill(signal = "SIGKILL") {
      const done = new Promise((r) => (exited ? r() : child.on("exit", r)));
      child.kill(signal);
      return done;
    },
  };
}

/** Forwards every request to `upstream` (an edge's port), streaming both ways (SSE). */
export async function startProxy(upstream) {
  const proxy = { upstream, server: null, port: 0 };
  proxy.server = http.createServer((req, res) => {
    const out = http.request(
      { host: "127.0.0.1", port: proxy.upstream, method: req.method, path: req.url, headers: req.headers },
      (up) => {
        res.writeHead(up.statusCode, up.headers);
        up.pipe(res);
        up.on("error", () => res.destroy());
      },
    );
    out.on("error", () => {
      if (!res.headersSent) res.writeHead(502, { "content-type": "application/json" }).end('{"message":"upstream down"}');
      else res.destroy();
    });
    req.pipe(out);
  });
  proxy.server.keepAliveTimeout = 1000;
  await new Promise((r) => proxy.server.listen(0, "127.0.0.1", r));
  proxy.port = proxy.server.address().port;
  proxy.close = () => {
    proxy.server.closeAllConnections();
    return new Promise((r) => proxy.server.close(r));
  };
  return proxy;
}

// ---- providers ----

/**
 * An unmodified YjsProvider on a proposal's document, for `caller`, through `base` (the
 * proxy). The provider never sends what its doc holds beyond the edits it sees while connected
 * (an edit made while disconnected, or in a batch lost to a dying edge, stays local), so on
 * every reconnect after the first the application publishes its whole state once: Yjs updates
 * are idempotent, the server stores it like any update. The web app does the same.
 */
export function provider(base, caller, proposal, { resend = true, agency = caller.agency } = {}) {
  const doc = new Y.Doc();
  const p = new YjsProvider({
    doc,
    baseUrl: `${base}/v1/yjs/${agency}`,
    docId: `proposals/${proposal}`,
    headers: { authorization: `Bearer ${caller.token}` },
  });
  p.errors = [];
  // 423: the proposal is no longer a draft; the application shows it read-only (and never
  // publishes its local state again: that would be refused on every reconnect).
  p.readOnly = false;
  p.on("error", (e) => {
    p.errors.push(e);
    if (e?.status === 423) p.readOnly = true;
  });
  let connections = 0;
  p.on("status", (status) => {
    if (status !== "connected") return;
    connections += 1;
    if (resend && connections > 1 && !p.readOnly) doc.emit("update", [Y.encodeStateAsUpdate(doc), "resend", doc, null]);
  });
  p.text = () => doc.getText("content").toString();
  p.sv = () => Buffer.from(Y.encodeStateVector(doc)).toString("base64");
  p.waitSynced = () => eventually("the provider to sync", () => p.synced && p.connected);
  return p;
}

/** All providers hold the same state (state vectors and text); that text. */
export async function converged(providers, what = "the providers to converge") {
  return eventually(what, () => {
    const [first, ...rest] = providers;
    const same = rest.every((p) => p.sv() === first.sv() && p.text() === first.text());
    return same ? first.text() : null;
  });
}

/** The lib0 frame of one update, as the provider POSTs it. */
export function frame(update) {
  const len = varint(update.length);
  return Buffer.concat([len, Buffer.from(update)]);
}
