//! Shapes found by their `column = constant` / `column IN (…)` key (the table feed applies a
//! change only to the shapes whose value its old or new row holds, and to shapes without a
//! key): while a seeded writer moves rows between the keys' values, changes other columns,
//! deletes and changes primary keys, every up-to-date of every shape equals the same `SELECT`
//! at a committed point, in order, and the last one the final state.

use std::time::Duration;

use anyhow::{Context, bail, ensure};
use rand::Rng;
use serde_json::Value;

use crate::{
    shapes::{Env, bearer},
    subqueries::{Client, Rows, enc},
};

async fn state(env: &Env, agency: &str, sql_where: &str) -> anyhow::Result<Rows> {
    let sql = format!(
        "SELECT id::text, agency_id::text, bucket::text, title FROM ix_items WHERE agency_id = '{agency}' AND ({sql_where})"
    );
    let rows: Vec<(String, String, String, String)> =
        sqlx::query_as(sqlx::AssertSqlSafe(sql)).fetch_all(&env.db.pool).await?;
    Ok(rows
        .into_iter()
        .map(|(id, a, b, t)| {
            let mut m = serde_json::Map::new();
            m.insert("id".into(), Value::String(id.clone()));
            m.insert("agency_id".into(), Value::String(a));
            m.insert("bucket".into(), Value::String(b));
            m.insert("title".into(), Value::String(t));
            (format!("\"public\".\"ix_items\"/\"{id}\""), m)
        })
        .collect())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn shapes_found_by_their_key_equal_the_database_at_every_up_to_date() -> anyhow::Result<()> {
    let env = Env::start().await?;
    let a = uuid::Uuid::new_v4().to_string();
    env.sql(&format!(
        "CREATE TABLE ix_items (id int8 PRIMARY KEY, agency_id uuid NOT NULL, bucket int4 NOT NULL, title text NOT NULL);
         ALTER TABLE ix_items REPLICA IDENTITY FULL;
         INSERT INTO ix_items SELECT g, '{a}', g % 6, CASE WHEN g % 4 = 0 THEN 'x' ELSE 't' || g END FROM generate_series(1, 120) g;"
    ))
    .await?;
    let edge = env.edge(&[]).await?;
    // (where, the same as SQL): keyed by one value, by a list, by a text, and one with no key.
    let cases =
        ["bucket = 1", "bucket = 2 AND title <> 'x'", "bucket IN (3, 4)", "title = 'x' AND bucket > 0", "bucket > 3"];
    let mut states: Vec<Vec<Rows>> = Vec::new();
    let snapshot = async |states: &mut Vec<Vec<Rows>>| -> anyhow::Result<()> {
        let mut s = Vec::new();
        for w in cases {
            s.push(state(&env, &a, w).await?);
        }
        states.push(s);
        Ok(())
    };
    snapshot(&mut states).await?;
    let done = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut followers = Vec::new();
    for w in cases {
        let mut client = Client::new(edge.client.clone(), format!("table=ix_items&where={}", enc(w)), bearer(&a));
        let done = std::sync::Arc::clone(&done);
        followers.push(tokio::spawn(async move {
            let seen = client.follow(&done).await?;
            anyhow::Ok((w, seen, client.refetches))
        }));
    }
    let seed: u64 = std::env::var("FOLIO_TEST_SEED").ok().and_then(|s| s.parse().ok()).unwrap_or_else(rand::random);
    eprintln!("writer seed {seed} (FOLIO_TEST_SEED)");
    let mut r = <rand::rngs::StdRng as rand::SeedableRng>::seed_from_u64(seed);
    let mut next_id = 1000i64;
    for _ in 0..150 {
        let mut tx = env.db.pool.begin().await?;
        for _ in 0..r.random_range(1..4) {
            let (id, bucket, title) =
                (r.random_range(1..=next_id), r.random_range(0..6), ["'x'", "'y'"][r.random_range(0..2)]);
            let q = match r.random_range(0..10) {
                0..=3 => format!("UPDATE ix_items SET bucket = {bucket} WHERE id = {id}"),
                4 => format!("UPDATE ix_items SET title = {title} WHERE id = {id}"),
                5..=6 => {
                    next_id += 1;
                    format!("INSERT INTO ix_items VALUES ({next_id}, '{a}', {bucket}, {title})")
                }
                7 => {
                    next_id += 1;
                    format!("UPDATE ix_items SET id = {next_id}, bucket = {bucket} WHERE id = {id}")
                }
                _ => format!("DELETE FROM ix_items WHERE id = {id}"),
            };
            sqlx::query(sqlx::AssertSqlSafe(q)).execute(&mut *tx).await?;
        }
        tx.commit().await?;
        snapshot(&mut states).await?;
        tokio::time::sleep(Duration::from_millis(r.random_range(0..15))).await;
    }
    done.store(true, std::sync::atomic::Ordering::SeqCst);
    env.sql(
        "UPDATE ix_items SET title = title WHERE id IN (SELECT min(id) FROM ix_items WHERE bucket IN (1, 2, 3, 4, 5))",
    )
    .await?;
    for (k, f) in followers.into_iter().enumerate() {
        let (w, seen, refetches) =
            tokio::time::timeout(Duration::from_secs(60), f).await.context("follower never settled")???;
        let mut at = 0usize;
        for (n, rows) in seen.iter().enumerate() {
            let Some(j) = (at..states.len()).find(|&j| states[j][k] == *rows) else {
                bail!("{w}: up-to-date #{n} matches no committed state at or after #{at} (seed {seed})");
            };
            at = j;
        }
        ensure!(
            seen.last() == states.last().map(|s| &s[k]),
            "{w}: the last up-to-date is not the final state (seed {seed})"
        );
        ensure!(refetches == 0 && seen.len() >= 3, "{w}: {refetches} refetches, {} up-to-dates", seen.len());
    }
    edge.stop().await?;
    env.stop().await
}
