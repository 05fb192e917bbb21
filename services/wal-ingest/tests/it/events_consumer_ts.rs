//! docs/events.md's consumer example, examples/events-consumer-ts (TypeScript generated from
//! proto/ by buf, a durable pull consumer), run with `node` against what the real wal-ingest
//! published: rows committed in Postgres come out as one JSON line per event, in stream order,
//! acknowledged (a second run of the same durable prints nothing), a replay from a sequence
//! prints exactly the later events, and a filter subject only its table's.

use std::{path::PathBuf, process::Stdio, time::Duration};

use folio_proto::events::v1::{ChangeEvent, Operation};
use prost::Message as _;

use crate::helpers::{Harness, with_harness};

fn example_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../examples/events-consumer-ts")
}

/// npm ci (from the cache after the first run), buf generate, tsc — once per test binary.
fn prepare_example() {
    static PREPARED: std::sync::OnceLock<()> = std::sync::OnceLock::new();
    PREPARED.get_or_init(|| {
        match std::process::Command::new("node").arg("--version").output() {
            Ok(out) if out.status.success() => {}
            _ => panic!(
                "`node` is not installed or not on PATH: this test runs examples/events-consumer-ts with it \
                 (Debian: apt-get install nodejs npm)"
            ),
        }
        let out = std::process::Command::new("bash")
            .arg(example_dir().join("prepare.sh"))
            .output()
            .expect("run examples/events-consumer-ts/prepare.sh");
        assert!(
            out.status.success(),
            "examples/events-consumer-ts/prepare.sh failed:\n{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    });
}

/// Runs the example's consumer until it has caught up; its stdout lines.
async fn consume(h: &Harness, durable: &str, extra: &[&str]) -> Vec<String> {
    let started = std::time::Instant::now();
    let mut cmd = tokio::process::Command::new("node");
    cmd.arg(example_dir().join("dist/consumer.js"))
        .args(["--server", &h.bus.nats_url])
        .args(["--stream", &h.changes_stream()])
        .args(["--subject-root", &h.bus.subject_root])
        .args(["--durable", durable, "--exit-when-caught-up"])
        .args(extra)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    let out = tokio::time::timeout(Duration::from_secs(60), cmd.output())
        .await
        .unwrap_or_else(|_| panic!("the consumer {durable} {extra:?} did not catch up within 60 s"))
        .expect("run node");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "the consumer {durable} {extra:?} failed ({}):\n{stderr}", out.status);
    let lines: Vec<String> = String::from_utf8(out.stdout).expect("utf-8").lines().map(str::to_owned).collect();
    eprintln!("consumer {durable} {extra:?}: {} line(s) in {:?}", lines.len(), started.elapsed());
    lines
}

/// One stored message with its stream sequence.
struct Stored {
    seq: u64,
    subject: String,
    msg_id: String,
    event: ChangeEvent,
}

impl Stored {
    /// The start of the example's JSON line for this message (its key order is fixed).
    fn line_prefix(&self) -> String {
        let e = &self.event;
        let op = Operation::try_from(e.operation).expect("a known operation").as_str_name();
        format!(
            r#"{{"stream_seq":{},"subject":"{}","msg_id":"{}","redelivered":false,"operation":"{}","schema":"{}","table":"{}","tenant":"{}","commit_lsn":"{:X}/{:X}","#,
            self.seq,
            self.subject,
            self.msg_id,
            op.trim_start_matches("OPERATION_"),
            e.schema,
            e.table,
            e.tenant,
            e.commit_lsn >> 32,
            e.commit_lsn & 0xffff_ffff,
        )
    }
}

async fn stored(h: &Harness, n: u64) -> Vec<Stored> {
    h.read_at_least(&h.changes_stream(), n).await;
    let stream = h.js.get_stream(h.changes_stream()).await.expect("the changes stream");
    let last = stream.get_info().await.expect("stream info").state.last_sequence;
    let mut out = Vec::new();
    for seq in 1..=last {
        let m = stream.get_raw_message(seq).await.expect("a stored message");
        out.push(Stored {
            seq,
            subject: m.subject.to_string(),
            msg_id: m.headers.get(folio_bus::headers::MSG_ID).expect("Nats-Msg-Id").as_str().to_owned(),
            event: ChangeEvent::decode(m.payload).expect("a ChangeEvent"),
        });
    }
    out
}

fn assert_lines(what: &str, lines: &[String], expected: &[&Stored]) {
    assert_eq!(
        lines.len(),
        expected.len(),
        "{what}: {} lines for {} events:\n{}",
        lines.len(),
        expected.len(),
        lines.join("\n")
    );
    for (line, s) in lines.iter().zip(expected) {
        let prefix = s.line_prefix();
        assert!(line.starts_with(&prefix), "{what}: line\n  {line}\ndoes not start with\n  {prefix}");
    }
}

#[tokio::test]
async fn the_typescript_example_consumes_the_real_stream_acks_and_replays_from_a_sequence() {
    prepare_example();
    let h = Harness::new().await.unwrap();
    with_harness(h, |h| async move {
        let pool = &h.db.pool;
        for sql in [
            "CREATE TABLE ev_orders (id int PRIMARY KEY, agency_id uuid NOT NULL, note text)",
            "CREATE TABLE ev_notes (id int PRIMARY KEY, body text)",
            "ALTER TABLE ev_orders REPLICA IDENTITY FULL",
            "ALTER TABLE ev_notes REPLICA IDENTITY FULL",
            "ALTER PUBLICATION folio_changes ADD TABLE ev_orders, ev_notes",
        ] {
            sqlx::query(sql).execute(pool).await.unwrap();
        }
        let _ingester = h.spawn().await;
        h.wait_for_slot().await;
        let a = uuid::Uuid::new_v4();
        // A two-table transaction (its rows, then one TRANSACTION_END marker per table), then
        // three one-table ones.
        let mut tx = pool.begin().await.unwrap();
        sqlx::query("INSERT INTO ev_orders VALUES (1, $1, 'first')").bind(a).execute(&mut *tx).await.unwrap();
        sqlx::query("INSERT INTO ev_notes VALUES (1, 'hello')").execute(&mut *tx).await.unwrap();
        tx.commit().await.unwrap();
        sqlx::query("UPDATE ev_orders SET note = 'second' WHERE id = 1").execute(pool).await.unwrap();
        sqlx::query("DELETE FROM ev_notes WHERE id = 1").execute(pool).await.unwrap();
        sqlx::query("INSERT INTO ev_orders VALUES (2, $1, 'third')").bind(a).execute(pool).await.unwrap();

        let all = stored(&h, 7).await;
        let kinds: Vec<(&str, &str)> = all
            .iter()
            .map(|s| (Operation::try_from(s.event.operation).unwrap().as_str_name(), s.event.table.as_str()))
            .collect();
        assert_eq!(
            kinds,
            [
                ("OPERATION_INSERT", "ev_orders"),
                ("OPERATION_INSERT", "ev_notes"),
                ("OPERATION_TRANSACTION_END", "ev_orders"),
                ("OPERATION_TRANSACTION_END", "ev_notes"),
                ("OPERATION_UPDATE", "ev_orders"),
                ("OPERATION_DELETE", "ev_notes"),
                ("OPERATION_INSERT", "ev_orders"),
            ],
            "what wal-ingest published"
        );

        // Everything, in stream order, decoded; the update with its new and old row.
        let lines = consume(&h, "ts_all", &[]).await;
        assert_lines("a new durable from the start", &lines, &all.iter().collect::<Vec<_>>());
        let (ins, upd, del) = (&lines[0], &lines[4], &lines[5]);
        assert!(ins.contains(&format!(r#""new_row":{{"id":"1","agency_id":"{a}","note":"first"}},"old_row":null}}"#)));
        assert!(upd.contains(r#""last_in_transaction":true,"#), "{upd}");
        assert!(upd.contains(&format!(
            r#""primary_key":{{"id":"1"}},"new_row":{{"id":"1","agency_id":"{a}","note":"second"}},"old_row":{{"id":"1","agency_id":"{a}","note":"first"}}}}"#
        )), "{upd}");
        assert!(del.contains(r#""new_row":null,"old_row":{"id":"1","body":"hello"}}"#), "{del}");
        assert!(lines[3].contains(r#""last_in_transaction":true"#) && !lines[2].contains(r#""last_in_transaction":true"#));

        // Acknowledged: the same durable resumes after the last event and prints nothing.
        let again = consume(&h, "ts_all", &[]).await;
        assert!(again.is_empty(), "the durable redelivered acknowledged events:\n{}", again.join("\n"));

        // A replay from the update's sequence: exactly the events from there on.
        let from = all[4].seq;
        let replay = consume(&h, "ts_replay", &["--from-seq", &from.to_string()]).await;
        assert_lines(&format!("a replay from sequence {from}"), &replay, &all[4..].iter().collect::<Vec<_>>());

        // A filter subject: one table's events (rows and markers), nothing else.
        let orders_filter = format!("{}.changes.ev_orders.>", h.bus.subject_root);
        let orders = consume(&h, "ts_orders", &["--filter", &orders_filter]).await;
        let expected: Vec<&Stored> = all.iter().filter(|s| s.event.table == "ev_orders").collect();
        assert_eq!(expected.len(), 4);
        assert_lines("a filter on ev_orders", &orders, &expected);
    })
    .await;
}
