// A consumer of Folio's change events in another language: a durable JetStream pull consumer
// on wal-ingest's changes stream that decodes each folio.events.v1.ChangeEvent (TypeScript
// generated from proto/ by buf + protoc-gen-es), prints it as one JSON line on stdout and
// acknowledges it. The contract it follows is docs/events.md.
//
//   npm ci && npm run build
//   node dist/consumer.js --durable billing --server nats://127.0.0.1:4333
//   node dist/consumer.js --durable audit --from-seq 1200 --exit-when-caught-up
//   node dist/consumer.js --durable acme --filter 'folio.changes.proposals.<agency>' \
//                                         --filter 'folio.changes.proposals._all'
//
// A durable remembers what was acknowledged: run it again with the same --durable and it
// resumes after the last acknowledged event (its --from-seq and --filter are fixed when it is
// first created; choose a new name, or --reset, to start it over).
import { parseArgs } from "node:util";
import { connect } from "@nats-io/transport-node";
import {
  AckPolicy,
  DeliverPolicy,
  JetStreamApiError,
  jetstream,
  jetstreamManager,
  type ConsumerConfig,
  type JsMsg,
} from "@nats-io/jetstream";
import { fromBinary } from "@bufbuild/protobuf";
import { timestampDate } from "@bufbuild/protobuf/wkt";
import {
  ChangeEventSchema,
  Operation,
  type ChangeEvent,
  type ColumnValue,
} from "./gen/folio/events/v1/change_event_pb.js";

const { values: args } = parseArgs({
  options: {
    server: { type: "string", default: process.env.FOLIO_NATS_URL ?? "nats://127.0.0.1:4333" },
    stream: { type: "string", default: process.env.FOLIO_CHANGES_STREAM ?? "FOLIO_CHANGES" },
    "subject-root": { type: "string", default: process.env.FOLIO_SUBJECT_ROOT ?? "folio" },
    durable: { type: "string", default: "events-consumer-ts" },
    // Default: every table and tenant, `<root>.changes.>`.
    filter: { type: "string", multiple: true },
    // Replay from this stream sequence (DeliverPolicy.StartSequence); default: from the start.
    "from-seq": { type: "string" },
    "max-ack-pending": { type: "string", default: "1000" },
    batch: { type: "string", default: "256" },
    // Delete the durable first, so --from-seq / --filter take effect again.
    reset: { type: "boolean", default: false },
    // Exit once every event the stream holds for the filter is printed and acknowledged.
    "exit-when-caught-up": { type: "boolean", default: false },
  },
});

const stream = args.stream!;
const durable = args.durable!;
const filters = args.filter?.length ? args.filter : [`${args["subject-root"]}.changes.>`];
const fromSeq = args["from-seq"] === undefined ? undefined : Number(args["from-seq"]);
if (fromSeq !== undefined && !(Number.isSafeInteger(fromSeq) && fromSeq >= 1)) {
  fail(`--from-seq must be a stream sequence >= 1, got ${args["from-seq"]}`);
}

function fail(message: string): never {
  console.error(`events-consumer: ${message}`);
  process.exit(2);
}

/** Postgres' text form of an LSN, X/Y in hex, as the Folio-Commit-Lsn header carries it. */
function lsn(v: bigint): string {
  return `${(v >> 32n).toString(16).toUpperCase()}/${(v & 0xffffffffn).toString(16).toUpperCase()}`;
}

/** A row as {column: text | null}; an unchanged TOASTed value as {"unchanged_toast": true}. */
function row(values: ColumnValue[]): Record<string, unknown> | null {
  if (values.length === 0) return null;
  const out: Record<string, unknown> = {};
  for (const c of values) {
    switch (c.value.case) {
      case "text":
        out[c.name] = c.value.value;
        break;
      case "isNull":
        out[c.name] = null;
        break;
      case "unchangedToast":
        out[c.name] = { unchanged_toast: true };
        break;
      default:
        out[c.name] = undefined;
    }
  }
  return out;
}

function line(m: JsMsg, e: ChangeEvent): string {
  return JSON.stringify({
    stream_seq: m.seq,
    subject: m.subject,
    msg_id: m.headers?.get("Nats-Msg-Id") ?? null,
    redelivered: m.redelivered,
    // OPERATION_INSERT -> INSERT; an operation newer than this code prints as its number
    // (consumers of `_all` must ignore operations they do not know).
    operation: Operation[e.operation]?.replace(/^OPERATION_/, "") ?? String(e.operation),
    schema: e.schema,
    table: e.table,
    tenant: e.tenant,
    commit_lsn: lsn(e.commitLsn),
    commit_end_lsn: e.commitEndLsn === 0n ? null : lsn(e.commitEndLsn),
    xid: e.xid,
    position: e.position,
    last_in_transaction: e.lastInTransaction,
    commit_time: e.commitTime ? timestampDate(e.commitTime).toISOString() : null,
    primary_key: row(e.primaryKey),
    new_row: row(e.newRow),
    old_row: row(e.oldRow),
  });
}

const nc = await connect({ servers: args.server, name: `folio-events-consumer-ts:${durable}` });
const jsm = await jetstreamManager(nc);
if (args.reset) {
  await jsm.consumers.delete(stream, durable).catch(() => false);
}

// The recommended settings (docs/events.md): a durable pull consumer, every message acked
// explicitly, a bounded number in flight, server-side subject filters, and a start sequence
// for a replay.
const config: Partial<ConsumerConfig> = {
  durable_name: durable,
  ack_policy: AckPolicy.Explicit,
  ack_wait: 30_000_000_000, // ns: unacknowledged for 30 s -> delivered again
  max_ack_pending: Number(args["max-ack-pending"]),
  max_deliver: -1,
  ...(filters.length === 1 ? { filter_subject: filters[0] } : { filter_subjects: filters }),
  ...(fromSeq === undefined
    ? { deliver_policy: DeliverPolicy.All }
    : { deliver_policy: DeliverPolicy.StartSequence, opt_start_seq: fromSeq }),
};
try {
  await jsm.consumers.add(stream, config);
} catch (e) {
  // The same name with another start or filter: the durable keeps its own (and its position).
  if (e instanceof JetStreamApiError) {
    fail(`cannot create durable ${durable} on ${stream}: ${e.message} (use --reset or another --durable)`);
  }
  throw e;
}

const js = jetstream(nc);
const consumer = await js.consumers.get(stream, durable);
let stopping = false;
for (const signal of ["SIGINT", "SIGTERM"] as const) {
  process.on(signal, () => {
    stopping = true;
  });
}

let printed = 0;
while (!stopping) {
  const batch = await consumer.fetch({ max_messages: Number(args.batch), expires: 2_000 });
  let caughtUp = false;
  let got = 0;
  for await (const m of batch) {
    got++;
    let event: ChangeEvent;
    try {
      event = fromBinary(ChangeEventSchema, m.data);
    } catch (e) {
      // Not a ChangeEvent: it will never decode; stop its redelivery and say so.
      console.error(`events-consumer: seq ${m.seq} on ${m.subject} is not a ChangeEvent: ${e}`);
      m.term();
      continue;
    }
    process.stdout.write(line(m, event) + "\n");
    // Acknowledged only after it was handled, and confirmed by the server (a lost ack would
    // otherwise mean one more delivery after ack_wait).
    await m.ackAck();
    printed++;
    caughtUp = m.info.pending === 0;
    if (caughtUp && args["exit-when-caught-up"]) {
      batch.stop();
      break;
    }
  }
  if (got === 0) {
    const info = await consumer.info(true);
    caughtUp = info.num_pending === 0 && info.num_ack_pending === 0;
  }
  if (caughtUp && args["exit-when-caught-up"]) break;
}
console.error(`events-consumer: ${printed} event(s) printed and acknowledged (durable ${durable} on ${stream})`);
await nc.drain();
