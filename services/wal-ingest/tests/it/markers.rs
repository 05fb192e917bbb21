//! Transaction-end markers: a consumer of one table learns where each transaction's part of that
//! table ends, at an event flagged last-in-transaction (one-table transactions) or at a
//! `TRANSACTION_END` marker on `<table>._txn` (transactions over several tables).

use folio_bus::Part;
use folio_proto::events::v1::Operation;

use crate::helpers::{Harness, assert_commit_order, with_harness};

#[tokio::test]
async fn every_table_of_a_multi_table_transaction_gets_a_marker_after_its_last_change() {
    let h = Harness::new().await.unwrap();
    with_harness(h, |h| async move {
        let pool = &h.db.pool;
        for sql in [
            "CREATE TABLE tag_a (id int PRIMARY KEY)",
            "CREATE TABLE tag_b (id int PRIMARY KEY)",
            "ALTER TABLE tag_a REPLICA IDENTITY FULL",
            "ALTER TABLE tag_b REPLICA IDENTITY FULL",
            "ALTER PUBLICATION folio_changes ADD TABLE tag_a, tag_b",
        ] {
            sqlx::query(sql).execute(pool).await.unwrap();
        }
        let ingester = h.spawn().await;
        h.wait_for_slot().await;
        let (x, y) = (uuid::Uuid::new_v4(), uuid::Uuid::new_v4());

        // One table: no marker, the last event is flagged.
        let mut tx = pool.begin().await.unwrap();
        sqlx::query("INSERT INTO agencies (id, name) VALUES ($1, 'X')").bind(x).execute(&mut *tx).await.unwrap();
        sqlx::query("UPDATE agencies SET name = 'X2' WHERE id = $1").bind(x).execute(&mut *tx).await.unwrap();
        tx.commit().await.unwrap();

        // Tables A, B, A: the rows, then a marker for A and one for B, the last one flagged.
        let mut tx = pool.begin().await.unwrap();
        sqlx::query("INSERT INTO agencies (id, name) VALUES ($1, 'Y')").bind(y).execute(&mut *tx).await.unwrap();
        sqlx::query("INSERT INTO clients (id, agency_id, name, email) VALUES ($1, $2, 'Bo', 'bo@example.com')")
            .bind(uuid::Uuid::new_v4())
            .bind(y)
            .execute(&mut *tx)
            .await
            .unwrap();
        sqlx::query("UPDATE agencies SET name = 'Y2' WHERE id = $1").bind(y).execute(&mut *tx).await.unwrap();
        tx.commit().await.unwrap();

        sqlx::query("INSERT INTO tag_a VALUES (1)").execute(pool).await.unwrap();
        sqlx::query("INSERT INTO tag_b VALUES (1)").execute(pool).await.unwrap();
        // One statement, two tables: two truncate events, two markers.
        sqlx::query("TRUNCATE tag_a, tag_b").execute(pool).await.unwrap();

        let messages = h.read_at_least(&h.changes_stream(), 13).await;
        assert_commit_order(&messages);
        let (x, y) = (x.to_string(), y.to_string());
        let seen: Vec<(String, String, i32, u32, Part, bool)> = messages
            .iter()
            .map(|m| {
                let e = m.event();
                (e.table, m.subject.clone(), e.operation, e.position, m.key.part, e.last_in_transaction)
            })
            .collect();
        let (ins, upd, tru, end) = (
            Operation::Insert as i32,
            Operation::Update as i32,
            Operation::Truncate as i32,
            Operation::TransactionEnd as i32,
        );
        let subjects = h.subjects();
        let tenant = |table: &str, agency: &str| subjects.row("public", table, Some(agency));
        let row = |table: &str, subject: String, op, position, last| {
            (table.to_owned(), subject, op, position, Part::Change(0), last)
        };
        let marker = |table: &str, position, i, last| {
            (table.to_owned(), subjects.transaction_ends("public", table), end, position, Part::End(i), last)
        };
        assert_eq!(
            seen,
            vec![
                row("agencies", tenant("agencies", &x), ins, 0, false),
                row("agencies", tenant("agencies", &x), upd, 1, true),
                row("agencies", tenant("agencies", &y), ins, 0, false),
                row("clients", tenant("clients", &y), ins, 1, false),
                row("agencies", tenant("agencies", &y), upd, 2, false),
                marker("agencies", 3, 0, false),
                marker("clients", 3, 1, true),
                row("tag_a", subjects.row("public", "tag_a", None), ins, 0, true),
                row("tag_b", subjects.row("public", "tag_b", None), ins, 0, true),
                row("tag_a", subjects.table_wide("public", "tag_a"), tru, 0, false),
                ("tag_b".into(), subjects.table_wide("public", "tag_b"), tru, 0, Part::Change(1), false),
                marker("tag_a", 1, 0, false),
                marker("tag_b", 1, 1, true),
            ]
        );

        let ids: Vec<&str> = messages[2..7].iter().map(|m| m.msg_id.split_once(':').unwrap().1).collect();
        assert_eq!(ids, ["0", "1", "2", "3.e0", "3.e1"]);
        let txn = &messages[2].event();
        for (i, m) in messages.iter().enumerate() {
            let e = m.event();
            let header = |name: &str| m.headers.get(name).map(|v| v.as_str().to_owned());
            assert_eq!(header(folio_bus::headers::MSG_ID), Some(m.msg_id.clone()));
            assert_eq!(
                header(folio_bus::headers::EXPECTED_LAST_MSG_ID),
                i.checked_sub(1).map(|p| messages[p].msg_id.clone())
            );
            assert_eq!(header(folio_bus::headers::COMMIT_LSN), Some(m.key.commit_lsn.to_string()));
            assert_eq!(header(folio_bus::headers::XID), Some(e.xid.to_string()));
            assert_eq!(
                header(folio_bus::headers::LAST_IN_TRANSACTION).is_some(),
                e.last_in_transaction,
                "{}",
                m.msg_id
            );
            assert_eq!(e.commit_end_lsn > e.commit_lsn, e.last_in_transaction, "commit_end_lsn of {}", m.msg_id);
            if e.operation == end {
                assert!(e.new_row.is_empty() && e.old_row.is_empty() && e.primary_key.is_empty());
                assert_eq!(e.tenant, "");
            }
        }
        for m in &messages[3..7] {
            let e = m.event();
            assert_eq!((e.commit_lsn, e.xid, e.commit_time), (txn.commit_lsn, txn.xid, txn.commit_time));
        }
        ingester.stop().await.expect("ingester stops");
    })
    .await;
}

/// A marker carries its table's columns like row events do: when it is the table's newest
/// message, a restarted ingester still compares the table's shape with it.
#[tokio::test]
async fn a_schema_change_made_while_down_is_announced_when_the_table_last_saw_a_marker() {
    let h = Harness::new().await.unwrap();
    with_harness(h, |h| async move {
        let pool = &h.db.pool;
        let agency = uuid::Uuid::new_v4();
        let first = h.spawn().await;
        h.wait_for_slot().await;
        let mut tx = pool.begin().await.unwrap();
        sqlx::query("INSERT INTO agencies (id, name) VALUES ($1, 'Acme')")
            .bind(agency)
            .execute(&mut *tx)
            .await
            .unwrap();
        sqlx::query("INSERT INTO clients (id, agency_id, name, email) VALUES ($1, $2, 'Bo', 'bo@example.com')")
            .bind(uuid::Uuid::new_v4())
            .bind(agency)
            .execute(&mut *tx)
            .await
            .unwrap();
        tx.commit().await.unwrap();
        h.read_at_least(&h.changes_stream(), 4).await;
        first.stop().await.expect("ingester stops");

        sqlx::query("ALTER TABLE clients ADD COLUMN nickname text").execute(pool).await.unwrap();
        sqlx::query("UPDATE clients SET nickname = 'B' WHERE agency_id = $1").bind(agency).execute(pool).await.unwrap();
        sqlx::query("UPDATE agencies SET name = 'Acme Ltd' WHERE id = $1").bind(agency).execute(pool).await.unwrap();
        let second = h.spawn().await;
        let messages = h.read_at_least(&h.changes_stream(), 7).await;
        tokio::time::sleep(std::time::Duration::from_millis(300)).await;
        assert_eq!(h.stream_len(&h.changes_stream()).await, 7, "agencies did not change shape");
        let ops: Vec<(String, i32)> = messages[4..].iter().map(|m| (m.event().table, m.event().operation)).collect();
        assert_eq!(
            ops,
            vec![
                ("clients".to_owned(), Operation::SchemaChange as i32),
                ("clients".to_owned(), Operation::Update as i32),
                ("agencies".to_owned(), Operation::Update as i32),
            ]
        );
        second.stop().await.expect("ingester stops");
    })
    .await;
}
