// Two agencies on one edge, through the unmodified npm client `@durable-streams/client` (and
// plain fetch for the subscription APIs, which the client does not cover). Agency A creates
// and writes a stream and a subscription; agency B's client, with its own token, tries to
// read, append to, list and delete them; A's viewer reads and tries to append. Prints what
// each attempt got as one JSON line (the Rust test asserts on it). Exits 1 on an unexpected
// error.
// Env: DS_CLIENT_MODULE (path to the client's dist/index.js), EDGE_URL, A_ID, A_EDITOR, A_VIEWER,
// B_ADMIN (the last three are `Bearer …` values).
const { DurableStream, stream } = await import(process.env.DS_CLIENT_MODULE);
const env = (name) => process.env[name] ?? (console.error(`missing ${name}`), process.exit(1));
const [base, agencyA] = [env("EDGE_URL"), env("A_ID")];
const [aEditor, aViewer, bAdmin] = [env("A_EDITOR"), env("A_VIEWER"), env("B_ADMIN")];
const timer = setTimeout(() => {
  console.error("timed out");
  process.exit(1);
}, 20_000);

const url = `${base}/v1/stream/agencies/${agencyA}/notes`;
const wakes = `${base}/v1/stream/agencies/${agencyA}/wakes`;
const subscription = `${base}/v1/stream/__ds/subscriptions/notes-watch`;
const auth = (authorization) => ({ Authorization: authorization });
const opts = { warnOnHttp: false };

// What an attempt got: "ok", or the HTTP status the client reported.
const attempt = async (fn) => {
  try {
    await fn();
    return "ok";
  } catch (e) {
    if (typeof e?.status === "number") return e.status;
    throw e;
  }
};
const read = async (authorization) => {
  const res = await stream({ url, offset: "-1", live: false, headers: auth(authorization), ...opts });
  return res.json();
};
const append = (authorization, note) =>
  new DurableStream({ url, contentType: "application/json", headers: auth(authorization), ...opts }).append(
    JSON.stringify({ note }),
  );

// Agency A: a stream with one record, a wake stream, and a subscription to its notes.
const notes = await DurableStream.create({ url, contentType: "application/json", headers: auth(aEditor), ...opts });
await notes.append(JSON.stringify({ note: "from A" }));
await DurableStream.create({ url: wakes, contentType: "application/json", headers: auth(aEditor), ...opts });
const created = await fetch(subscription, {
  method: "PUT",
  headers: { ...auth(aEditor), "content-type": "application/json" },
  body: JSON.stringify({ type: "pull-wake", pattern: `agencies/${agencyA}/notes`, wake_stream: `agencies/${agencyA}/wakes` }),
});
if (created.status !== 201) throw new Error(`A's subscription: ${created.status} ${await created.text()}`);

const result = {};
// Agency B, with its own (admin) token.
result.b_read = await attempt(() => read(bAdmin));
result.b_read_live = await attempt(async () => {
  const res = await stream({ url, offset: "-1", live: true, headers: auth(bAdmin), ...opts });
  await res.json();
});
result.b_head = await attempt(() => DurableStream.head({ url, headers: auth(bAdmin), ...opts }));
result.b_append = await attempt(() => append(bAdmin, "from B"));
result.b_delete = await attempt(() => DurableStream.delete({ url, headers: auth(bAdmin), ...opts }));
const listed = await fetch(`${base}/v1/stream/__ds/subscriptions`, { headers: auth(bAdmin) });
result.b_list = listed.status === 200 ? (await listed.json()).subscriptions.map((s) => s.id) : listed.status;
result.b_get_subscription = (await fetch(subscription, { headers: auth(bAdmin) })).status;
result.b_delete_subscription = (await fetch(subscription, { method: "DELETE", headers: auth(bAdmin) })).status;

// Agency A's viewer reads, and may not write.
result.viewer_read = await read(aViewer);
result.viewer_append = await attempt(() => append(aViewer, "from A's viewer"));

// What A has afterwards.
result.a_read = await read(aEditor);
result.a_subscription = (await fetch(subscription, { headers: auth(aEditor) })).status;

clearTimeout(timer);
console.log(JSON.stringify(result));
process.exit(0);
