// Three unmodified @durable-streams/y-durable-streams providers on one proposal's document,
// through a proxy in front of two shape-edges, with the real API, database and pdf-render
// (issue 17). The tests run in order on one cluster; each leaves the document converged.
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import * as Y from "yjs";
import {
  createAgency, createUser, createProposal, addLineItem, getProposal, sendProposal, renderPdf, pdfText,
  startEdge, startProxy, provider, converged, eventually, sleep, frame,
} from "../lib/cluster.mjs";

let edges, proxy, base, agency, editor1, editor2, viewer, outsider, proposal;
const providers = [];
const open = (caller, id = proposal.id, opts) => {
  const p = provider(base, caller, id, opts);
  providers.push(p);
  return p;
};

before(async () => {
  agency = createAgency("Northwind");
  editor1 = createUser(agency, "editor");
  editor2 = createUser(agency, "editor");
  viewer = createUser(agency, "viewer");
  outsider = createUser(createAgency("Contoso"), "admin");
  proposal = await createProposal(editor1, "Intro paragraph.");
  edges = [await startEdge("edge-a"), await startEdge("edge-b")];
  proxy = await startProxy(edges[0].port);
  base = `http://127.0.0.1:${proxy.port}`;
});

after(async () => {
  for (const p of providers) p.destroy();
  await proxy?.close();
  for (const e of edges ?? []) await e.kill("SIGTERM");
});

/**
 * `n` edits of `p`, `gap` ms apart: a marker `<tag i>` inserted between two markers (or at either
 * end) chosen at random, and every fifth edit the first of its own markers deleted whole; so
 * once converged the text holds exactly `n - 2 * (n / 5)` markers of each tag (`n` a multiple
 * of 5), whatever the order.
 */
async function typeRandomly(p, tag, n, gap) {
  const text = p.doc.getText("content");
  for (let i = 0; i < n; i++) {
    const s = text.toString();
    if (i % 5 === 4) {
      const own = new RegExp(`<${tag}\\d+>`).exec(s);
      text.delete(own.index, own[0].length);
    } else {
      const boundaries = [0, s.length, ...[...s.matchAll(/>/g)].map((m) => m.index + 1)];
      text.insert(boundaries[Math.floor(Math.random() * boundaries.length)], `<${tag}${i}>`);
    }
    await sleep(gap);
  }
}

/** Patience for what a dead edge's lease can hold up (30 s), with room for a loaded machine. */
const LEASED = Math.max(90000, Number(process.env.FOLIO_TEST_PATIENCE_MS ?? 0));
const count = (s, re) => (s.match(re) ?? []).length;
let p1, p2, p3;

test("three providers on one proposal: created from the proposal, concurrent edits converge", async () => {
  [p1, p2, p3] = [open(editor1), open(editor2), open(editor1)];
  await Promise.all([p1, p2, p3].map((p) => p.waitSynced()));
  assert.equal(p1.text(), "Intro paragraph.", "the document starts as the proposal's content");
  await Promise.all([typeRandomly(p1, "a", 25, 7), typeRandomly(p2, "b", 25, 11), typeRandomly(p3, "c", 25, 5)]);
  const text = await converged([p1, p2, p3]);
  for (const tag of ["a", "b", "c"]) assert.equal(count(text, new RegExp(`<${tag}\\d+>`, "g")), 15, text);
  assert.ok(text.includes("Intro paragraph."), text);
});

test("a provider offline for a while merges its edits on return", async () => {
  await p3.disconnect();
  p3.doc.getText("content").insert(0, "Written offline. ");
  await Promise.all([typeRandomly(p1, "d", 10, 10), typeRandomly(p2, "e", 10, 10)]);
  await sleep(300);
  assert.ok(!p1.text().includes("Written offline."), "not seen while offline");
  p3.connect();
  const text = await converged([p1, p2, p3]);
  assert.ok(text.startsWith("Written offline. ") || text.includes("Written offline."), text);
  assert.equal(count(text, /<d\d+>/g), 6, text);
  assert.equal(count(text, /<e\d+>/g), 6, text);
});

test("the edge is killed mid-session and the clients continue on another edge", async () => {
  const typing = Promise.all([typeRandomly(p1, "f", 40, 15), typeRandomly(p2, "g", 40, 15), typeRandomly(p3, "h", 40, 15)]);
  await sleep(200);
  await edges[0].kill("SIGKILL");
  proxy.upstream = edges[1].port;
  await typing;
  p1.doc.getText("content").insert(0, "After the failover. ");
  const text = await converged([p1, p2, p3], "the providers to converge on the second edge");
  assert.ok(text.includes("After the failover."), text);
  for (const tag of ["f", "g", "h"]) assert.equal(count(text, new RegExp(`<${tag}\\d+>`, "g")), 24, `${tag}: ${text}`);
});

test("compaction leaves the state identical", async () => {
  const url = `${base}/v1/yjs/${agency}/docs/proposals/${proposal.id}`;
  const auth = { authorization: `Bearer ${editor1.token}` };
  // The edges compact at 4 KiB (run.sh): the edits above went far past it.
  // An edge killed holding the document's lease (compacting or persisting) delays the next
  // compaction and persist by up to the lease (30 s): the waits below allow for it.
  const location = await eventually("a snapshot", async () => {
    const res = await fetch(`${url}?offset=snapshot`, { headers: auth, redirect: "manual" });
    const loc = res.headers.get("location") ?? "";
    return res.status === 307 && /offset=[^&]+_snapshot/.test(loc) ? loc : null;
  }, LEASED);
  const snap = await fetch(new URL(location, url), { headers: auth });
  assert.equal(snap.status, 200);
  const fromSnapshot = new Y.Doc();
  Y.applyUpdate(fromSnapshot, new Uint8Array(await snap.arrayBuffer()));
  // A fresh provider loads the snapshot and the updates after it: the same state.
  const fresh = open(editor2);
  await fresh.waitSynced();
  const text = await converged([p1, p2, p3, fresh], "a fresh provider (snapshot + tail) to equal the others");
  assert.ok(fromSnapshot.getText("content").toString().length > 0);
  // The whole log replayed, without the snapshot, gives it too.
  const all = new Y.Doc();
  const log = Buffer.from(await (await fetch(`${url}?offset=-1`, { headers: auth })).arrayBuffer());
  const decoding = await import("lib0/decoding");
  const d = decoding.createDecoder(log);
  while (decoding.hasContent(d)) Y.applyUpdate(all, decoding.readVarUint8Array(d));
  assert.equal(all.getText("content").toString(), text);
});

test("the document's text is persisted into the proposal through the API", async () => {
  const text = await converged([p1, p2, p3]);
  const stored = await eventually("the proposal to hold the document's text", async () => {
    const p = await getProposal(viewer, proposal.id);
    return p.content === text ? p : null;
  }, LEASED);
  assert.ok(stored.version > proposal.version, `version ${stored.version} after ${proposal.version}`);
});

test("a viewer reads the document, and its update is refused", async () => {
  const v = open(viewer, proposal.id, { resend: false });
  await v.waitSynced();
  const text = await converged([p1, v]);
  // What the viewer's provider would POST for a local edit.
  const local = new Y.Doc();
  Y.applyUpdate(local, Y.encodeStateAsUpdate(v.doc));
  const sv = Y.encodeStateVector(local);
  local.getText("content").insert(0, "Viewer was here. ");
  const res = await fetch(`${base}/v1/yjs/${agency}/docs/proposals/${proposal.id}`, {
    method: "POST",
    headers: {
      authorization: `Bearer ${viewer.token}`,
      "content-type": "application/octet-stream",
      "producer-id": "viewer-1",
      "producer-epoch": "0",
      "producer-seq": "0",
    },
    body: frame(Y.encodeStateAsUpdate(local, sv)),
  });
  assert.equal(res.status, 403);
  assert.match((await res.json()).error.message, /viewer may not write/);
  await sleep(500);
  assert.equal(p1.text(), text, "nobody sees the refused update");
});

test("another agency cannot open the document", async () => {
  const stranger = provider(base, outsider, proposal.id, { agency });
  providers.push(stranger);
  await eventually("the stranger's connect to fail", () => stranger.errors.length > 0);
  assert.match(String(stranger.errors[0]), /403/);
  assert.equal(stranger.synced, false);
  assert.equal(stranger.text(), "");
  for (const method of ["PUT", "GET"]) {
    const res = await fetch(`${base}/v1/yjs/${agency}/docs/proposals/${proposal.id}?offset=-1`, {
      method,
      headers: { authorization: `Bearer ${outsider.token}` },
    });
    assert.equal(res.status, 403, method);
  }
  // Nor its own agency's path to this proposal.
  const own = await fetch(`${base}/v1/yjs/${outsider.agency}/docs/proposals/${proposal.id}`, {
    method: "PUT",
    headers: { authorization: `Bearer ${outsider.token}` },
  });
  assert.equal(own.status, 404);
  assert.equal((await own.json()).error.code, "PROPOSAL_NOT_FOUND");
});

test("a PDF rendered after the debounce contains an edited sentence", async () => {
  const sentence = "The launch is planned for the twelfth of March.";
  p2.doc.getText("content").insert(p2.text().length, ` ${sentence}`);
  const text = await converged([p1, p2, p3]);
  await eventually("the proposal to hold the sentence", async () => (await getProposal(viewer, proposal.id)).content === text);
  const pdf = await renderPdf(editor1, proposal.id);
  assert.match(pdfText(pdf).replace(/\s+/g, " "), /The launch is planned for the twelfth of March\./);
});

test("a sent proposal's document refuses updates and says why", async () => {
  const sent = await createProposal(editor1, "Terms as agreed.");
  await addLineItem(editor1, sent.id); // a proposal is sent with at least one
  const a = open(editor1, sent.id, { resend: false });
  await a.waitSynced();
  assert.equal(a.text(), "Terms as agreed.");
  await sendProposal(editor1, sent.id);
  const url = `${base}/v1/yjs/${agency}/docs/proposals/${sent.id}`;
  const local = new Y.Doc();
  Y.applyUpdate(local, Y.encodeStateAsUpdate(a.doc));
  local.getText("content").insert(0, "Too late. ");
  const res = await fetch(url, {
    method: "POST",
    headers: { authorization: `Bearer ${editor1.token}`, "content-type": "application/octet-stream" },
    body: frame(Y.encodeStateAsUpdate(local)),
  });
  assert.equal(res.status, 423);
  const body = await res.json();
  assert.equal(body.error.code, "DOCUMENT_READ_ONLY");
  assert.match(body.error.message, /is sent: only a draft's document accepts updates/);
  // The provider's own edit is refused the same way, reaches the application as an error...
  a.doc.getText("content").insert(0, "Edited in the provider. ");
  await eventually("the provider's error", () => a.errors.some((e) => e.status === 423));
  // ...and the document, as anyone opens it, is still the proposal's.
  const reader = open(viewer, sent.id, { resend: false });
  await reader.waitSynced();
  assert.equal(reader.text(), "Terms as agreed.");
  assert.equal((await getProposal(viewer, sent.id)).content, "Terms as agreed.");
});
