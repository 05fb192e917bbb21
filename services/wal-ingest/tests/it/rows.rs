//! Every common column type, TOAST, old rows, truncate and schema changes, as published.

use folio_proto::events::v1::{Operation, column_value};

use crate::helpers::{Harness, assert_commit_order, is_null, text, with_harness};

const BIG: &str = "(SELECT string_agg(md5(i::text), '') FROM generate_series(1, 31250) i)";

#[tokio::test]
async fn every_type_round_trips_with_toast_old_rows_truncate_and_schema_changes() {
    let h = Harness::new().await.unwrap();
    with_harness(h, |h| async move {
        let pool = &h.db.pool;
        for sql in [
            "CREATE TABLE kitchen_sink (
                id bigint PRIMARY KEY, agency_id uuid, i int, b bigint, n numeric(20,6), t text,
                flag bool, u uuid, ts timestamptz, d date, j jsonb, tags text[], nums int[],
                big text, nothing text)",
            "ALTER TABLE kitchen_sink REPLICA IDENTITY FULL",
            "ALTER PUBLICATION folio_changes ADD TABLE kitchen_sink",
        ] {
            sqlx::query(sql).execute(pool).await.unwrap();
        }
        let ingester = h.spawn().await;
        h.wait_for_slot().await;
        let agency = uuid::Uuid::new_v4();
        sqlx::query(sqlx::AssertSqlSafe(format!(
            "INSERT INTO kitchen_sink VALUES (1, $1, 42, 9007199254740993, 12345.6789, 'hello \"quoted\" it''s ünï',
             true, 'a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11', '2026-11-26 09:00:00.123456+01', '2026-11-26',
             '{{\"a\": [1, 2, {{\"b\": null}}]}}', ARRAY['a', 'b c', NULL], ARRAY[1,2,3], {BIG}, NULL)"
        )))
        .bind(agency)
        .execute(pool)
        .await
        .unwrap();
        sqlx::query("INSERT INTO kitchen_sink (id) VALUES (2)").execute(pool).await.unwrap();
        sqlx::query("UPDATE kitchen_sink SET t = 'changed', i = i + 1 WHERE id = 1").execute(pool).await.unwrap();
        sqlx::query("DELETE FROM kitchen_sink WHERE id = 2").execute(pool).await.unwrap();
        sqlx::query("TRUNCATE kitchen_sink").execute(pool).await.unwrap();
        sqlx::query("ALTER TABLE kitchen_sink ADD COLUMN extra int").execute(pool).await.unwrap();
        sqlx::query("INSERT INTO kitchen_sink (id, extra) VALUES (3, 7)").execute(pool).await.unwrap();
        sqlx::query("ALTER TABLE kitchen_sink DROP COLUMN nothing").execute(pool).await.unwrap();
        sqlx::query("ALTER TABLE kitchen_sink RENAME COLUMN t TO title").execute(pool).await.unwrap();
        sqlx::query("INSERT INTO kitchen_sink (id, title) VALUES (4, 'renamed')").execute(pool).await.unwrap();

        let all = h.read_at_least(&h.changes_stream(), 9).await;
        let messages: Vec<_> = all.iter().filter(|m| m.event().table == "kitchen_sink").cloned().collect();
        assert_commit_order(&all);
        let ops: Vec<(i32, String)> =
            messages.iter().map(|m| (m.event().operation, m.subject.rsplit('.').next().unwrap().to_owned())).collect();
        let a = agency.to_string();
        assert_eq!(
            ops,
            vec![
                (Operation::Insert as i32, a.clone()),
                (Operation::Insert as i32, "_".to_owned()),
                (Operation::Update as i32, a.clone()),
                (Operation::Delete as i32, "_".to_owned()),
                (Operation::Truncate as i32, "_all".to_owned()),
                (Operation::SchemaChange as i32, "_all".to_owned()),
                (Operation::Insert as i32, "_".to_owned()),
                (Operation::SchemaChange as i32, "_all".to_owned()),
                (Operation::Insert as i32, "_".to_owned()),
            ]
        );
        for m in &messages {
            assert!(m.subject.starts_with(&h.subjects().row_prefix("public", "kitchen_sink")), "{}", m.subject);
        }

        let expected_big: (String,) =
            sqlx::query_as(sqlx::AssertSqlSafe(format!("SELECT {BIG}"))).fetch_one(pool).await.unwrap();
        let insert = messages[0].event();
        assert_eq!(insert.tenant, a);
        let row = &insert.new_row;
        assert_eq!(text(row, "id"), Some("1"));
        assert_eq!(text(row, "agency_id"), Some(a.as_str()));
        assert_eq!(text(row, "i"), Some("42"));
        assert_eq!(text(row, "b"), Some("9007199254740993"));
        assert_eq!(text(row, "n"), Some("12345.678900"));
        assert_eq!(text(row, "t"), Some("hello \"quoted\" it's ünï"));
        assert_eq!(text(row, "flag"), Some("t"));
        assert_eq!(text(row, "u"), Some("a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11"));
        assert_eq!(text(row, "ts"), Some("2026-11-26 08:00:00.123456+00"), "timestamptz in UTC, ISO");
        assert_eq!(text(row, "d"), Some("2026-11-26"));
        assert_eq!(text(row, "j"), Some(r#"{"a": [1, 2, {"b": null}]}"#));
        assert_eq!(text(row, "tags"), Some(r#"{a,"b c",NULL}"#));
        assert_eq!(text(row, "nums"), Some("{1,2,3}"));
        assert_eq!(text(row, "big").map(str::len), Some(1_000_000));
        assert_eq!(text(row, "big"), Some(expected_big.0.as_str()));
        assert!(is_null(row, "nothing"));
        assert_eq!(insert.primary_key.len(), 1);
        assert_eq!(insert.primary_key[0].name, "id");
        let types: Vec<(&str, &str, bool)> =
            insert.column_types.iter().map(|c| (c.name.as_str(), c.type_name.as_str(), c.part_of_key)).collect();
        assert_eq!(
            types,
            vec![
                ("id", "int8", true),
                ("agency_id", "uuid", false),
                ("i", "int4", false),
                ("b", "int8", false),
                ("n", "numeric", false),
                ("t", "text", false),
                ("flag", "bool", false),
                ("u", "uuid", false),
                ("ts", "timestamptz", false),
                ("d", "date", false),
                ("j", "jsonb", false),
                ("tags", "_text", false),
                ("nums", "_int4", false),
                ("big", "text", false),
                ("nothing", "text", false),
            ]
        );

        let nulls = messages[1].event();
        assert_eq!(nulls.tenant, "");
        for c in ["agency_id", "i", "b", "n", "t", "flag", "u", "ts", "d", "j", "tags", "nums", "big", "nothing"] {
            assert!(is_null(&nulls.new_row, c), "{c} is NULL");
        }

        // The 1 MB value did not change: Postgres did not send it, wal-ingest filled it in.
        let update = messages[2].event();
        assert_eq!(text(&update.new_row, "big"), Some(expected_big.0.as_str()));
        assert_eq!(text(&update.new_row, "t"), Some("changed"));
        assert_eq!(text(&update.new_row, "i"), Some("43"));
        assert_eq!(text(&update.old_row, "t"), Some("hello \"quoted\" it's ünï"));
        assert_eq!(text(&update.old_row, "i"), Some("42"));
        let old_big = update.old_row.iter().find(|c| c.name == "big").unwrap();
        assert_eq!(
            old_big.value,
            Some(column_value::Value::UnchangedToast(true)),
            "same value as new_row, not repeated"
        );

        let delete = messages[3].event();
        assert_eq!(text(&delete.old_row, "id"), Some("2"));
        assert!(delete.new_row.is_empty());

        let truncate = messages[4].event();
        assert!(truncate.new_row.is_empty() && truncate.old_row.is_empty());
        assert_eq!(truncate.column_types.len(), 15);

        let added = messages[5].event();
        assert!(added.column_types.iter().any(|c| c.name == "extra" && c.type_name == "int4"));
        assert_eq!(text(&messages[6].event().new_row, "extra"), Some("7"));
        let reshaped = messages[7].event();
        let names: Vec<&str> = reshaped.column_types.iter().map(|c| c.name.as_str()).collect();
        assert!(names.contains(&"title") && !names.contains(&"t") && !names.contains(&"nothing"), "{names:?}");
        assert_eq!(text(&messages[8].event().new_row, "title"), Some("renamed"));

        // A schema change is announced inside the transaction of the row that revealed it,
        // just before that row.
        for (schema, row) in [(5, 6), (7, 8)] {
            assert_eq!(messages[schema].key.commit_lsn, messages[row].key.commit_lsn);
            assert_eq!(messages[schema].key.part, folio_bus::Part::Schema(0));
            assert!(!messages[schema].event().last_in_transaction);
        }
        // Every other transaction here is one statement: its event is the transaction's last.
        for m in messages.iter().filter(|m| m.event().operation != Operation::SchemaChange as i32) {
            let e = m.event();
            assert!(e.last_in_transaction, "{}", m.msg_id);
            assert!(e.commit_end_lsn > e.commit_lsn);
            assert!(e.commit_time.is_some());
            assert_ne!(e.xid, 0);
        }
        ingester.stop().await.expect("ingester stops");
    })
    .await;
}

#[tokio::test]
async fn tables_added_to_the_publication_later_flow_without_a_restart() {
    let h = Harness::new().await.unwrap();
    with_harness(h, |h| async move {
        let pool = &h.db.pool;
        let ingester = h.spawn().await;
        h.wait_for_slot().await;
        let agency = uuid::Uuid::new_v4();
        sqlx::query("INSERT INTO agencies (id, name) VALUES ($1, 'Acme')").bind(agency).execute(pool).await.unwrap();
        h.read_at_least(&h.changes_stream(), 1).await;
        for sql in [
            "CREATE SCHEMA \"Sales EU\"",
            "CREATE TABLE \"Sales EU\".\"Odd.Name\" (id int PRIMARY KEY, agency_id uuid)",
            "ALTER TABLE \"Sales EU\".\"Odd.Name\" REPLICA IDENTITY FULL",
            "ALTER PUBLICATION folio_changes ADD TABLE \"Sales EU\".\"Odd.Name\"",
        ] {
            sqlx::query(sql).execute(pool).await.unwrap();
        }
        sqlx::query("INSERT INTO \"Sales EU\".\"Odd.Name\" VALUES (1, $1)").bind(agency).execute(pool).await.unwrap();
        let messages = h.read_at_least(&h.changes_stream(), 2).await;
        let last = messages.last().unwrap();
        let token = folio_bus::subjects::table_token("Sales EU", "Odd.Name");
        assert_eq!(last.subject, h.subjects().row("Sales EU", "Odd.Name", Some(&agency.to_string())));
        assert!(last.subject.contains(&format!(".{token}.")));
        assert_eq!(token, "Sales~20EU~~Odd~2EName");
        assert_eq!(
            folio_bus::subjects::parse_table_token(&token),
            Some(("Sales EU".to_owned(), "Odd.Name".to_owned()))
        );
        let event = last.event();
        assert_eq!((event.schema.as_str(), event.table.as_str()), ("Sales EU", "Odd.Name"));
        assert_eq!(
            messages[0].subject,
            h.subjects().row("public", "agencies", Some(&agency.to_string())),
            "agencies: tenant = id"
        );
        ingester.stop().await.expect("ingester stops");
    })
    .await;
}

#[tokio::test]
async fn a_schema_change_made_while_the_ingester_was_down_is_still_announced() {
    let h = Harness::new().await.unwrap();
    with_harness(h, |h| async move {
        let pool = &h.db.pool;
        let agency = uuid::Uuid::new_v4();
        let first = h.spawn().await;
        h.wait_for_slot().await;
        sqlx::query("INSERT INTO agencies (id, name) VALUES ($1, 'Acme')").bind(agency).execute(pool).await.unwrap();
        h.read_at_least(&h.changes_stream(), 1).await;
        first.stop().await.expect("ingester stops");

        sqlx::query("ALTER TABLE agencies ADD COLUMN motto text").execute(pool).await.unwrap();
        sqlx::query("UPDATE agencies SET motto = 'ship it' WHERE id = $1").bind(agency).execute(pool).await.unwrap();
        // A table whose shape did not change must not be announced after the restart.
        sqlx::query("INSERT INTO clients (id, agency_id, name, email) VALUES ($1, $2, 'Bo', 'bo@example.com')")
            .bind(uuid::Uuid::new_v4())
            .bind(agency)
            .execute(pool)
            .await
            .unwrap();
        let second = h.spawn().await;
        let messages = h.read_at_least(&h.changes_stream(), 4).await;
        tokio::time::sleep(std::time::Duration::from_millis(300)).await;
        assert_eq!(h.stream_len(&h.changes_stream()).await, 4);
        assert_commit_order(&messages);
        let ops: Vec<(String, i32)> = messages.iter().map(|m| (m.event().table, m.event().operation)).collect();
        assert_eq!(
            ops,
            vec![
                ("agencies".to_owned(), Operation::Insert as i32),
                ("agencies".to_owned(), Operation::SchemaChange as i32),
                ("agencies".to_owned(), Operation::Update as i32),
                ("clients".to_owned(), Operation::Insert as i32),
            ]
        );
        assert_eq!(text(&messages[2].event().new_row, "motto"), Some("ship it"));
        second.stop().await.expect("ingester stops");
    })
    .await;
}
