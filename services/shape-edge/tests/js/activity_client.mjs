// Follows a proposal's activity stream with the unmodified npm client `@durable-streams/client`
// (live mode, as a browser would) until it has seen the titles given in EXPECT_TITLES, then
// prints the received events as one JSON line. Exits 1 on timeout or error.
// Env: DS_CLIENT_MODULE (path to the client's dist/index.js), ACTIVITY_URL, AUTHORIZATION, EXPECT_TITLES
// (comma-separated), READY_FILE (touched once the catch-up is done, so the test appends live).
import { writeFileSync } from "node:fs";

const { stream } = await import(process.env.DS_CLIENT_MODULE);
const expected = process.env.EXPECT_TITLES.split(",");
const controller = new AbortController();
const timer = setTimeout(() => {
  console.error(`timed out; expected ${expected}`);
  process.exit(1);
}, 15_000);

const seen = [];
const headers = process.env.AUTHORIZATION ? { Authorization: process.env.AUTHORIZATION } : undefined;
const res = await stream({ url: process.env.ACTIVITY_URL, offset: "-1", live: true, headers, signal: controller.signal, warnOnHttp: false });
res.subscribeJson(async (batch) => {
  for (const item of batch.items) seen.push(item);
  if (batch.upToDate && process.env.READY_FILE) writeFileSync(process.env.READY_FILE, "ready");
  const titles = seen.map((e) => e.new_row?.title);
  if (expected.every((t) => titles.includes(t))) {
    clearTimeout(timer);
    console.log(JSON.stringify(seen));
    controller.abort();
    process.exit(0);
  }
});
