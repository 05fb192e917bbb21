//! Replication slot safety (issue 18): with `max_slot_wal_keep_size` small on a private
//! PostgreSQL, wal-ingest is stopped while far more WAL than that is written, so a checkpoint
//! invalidates its slot (the changes in between are gone for good). Started again, wal-ingest
//! must say so to every consumer (a re-snapshot-required event per published table), create a
//! fresh slot and publish new commits; a shape client holding a handle from before is told to
//! refetch (409) by the edge. Started first while NATS is down, so that nobody can be told yet,
//! it must say so itself: `folio_wal_ingest_slot_lost` 1, an error logged, `readyz` false.

use std::time::Duration;

use folio_faults::{
    cluster::Base,
    wal_ingest::{IngestSetup, Replica, http_get},
};
use folio_proto::events::v1::{ChangeEvent, Operation};
use futures::StreamExt as _;
use prost::Message as _;

async fn eventually<T, F, Fut>(what: &str, patience: Duration, mut f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + patience;
    loop {
        if let Some(v) = f().await {
            return v;
        }
        assert!(tokio::time::Instant::now() < deadline, "timed out after {patience:?} waiting for {what}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_invalidated_slot_is_reported_recreated_and_shape_clients_refetch() {
    let mut base = Base::start(&["max_slot_wal_keep_size=32MB", "max_wal_size=64MB", "min_wal_size=32MB"])
        .await
        .expect("a private PostgreSQL and nats-server");
    let pool = base.pool.clone();
    let setup = base.ingest_setup();
    let mut ingest = Replica::start(&setup).await.unwrap();
    let edge = Edge::start(&setup).await;
    let insert = |name: &'static str| {
        let pool = pool.clone();
        async move {
            sqlx::query("INSERT INTO agencies (id, name) VALUES ($1, $2)")
                .bind(uuid::Uuid::new_v4())
                .bind(name)
                .execute(&pool)
                .await
                .unwrap();
        }
    };

    // A shape client in sync with one row.
    insert("before").await;
    let (handle, offset) = eventually("the shape with the first row", Duration::from_secs(60), || async {
        let a = http_get(edge.addr, "/v1/shape?table=agencies&offset=-1").await?;
        (a.status == 200 && a.body.contains("before"))
            .then(|| (a.header("electric-handle").unwrap().to_owned(), a.header("electric-offset").unwrap().to_owned()))
    })
    .await;

    // wal-ingest away while far more WAL than the slot may keep is written and checkpointed.
    ingest.kill().await.unwrap();
    insert("lost while the slot was away").await;
    sqlx::query("CREATE TABLE filler (n int, pad text)").execute(&pool).await.unwrap();
    let status = eventually("the slot to be invalidated", Duration::from_secs(120), || async {
        sqlx::query("INSERT INTO filler SELECT g, repeat(md5(g::text), 32) FROM generate_series(1, 20000) g")
            .execute(&pool)
            .await
            .unwrap();
        sqlx::query("SELECT pg_switch_wal()").execute(&pool).await.unwrap();
        sqlx::query("CHECKPOINT").execute(&pool).await.unwrap();
        let status: Option<String> =
            sqlx::query_scalar("SELECT wal_status FROM pg_replication_slots WHERE slot_name = $1")
                .bind(&setup.slot)
                .fetch_one(&pool)
                .await
                .unwrap();
        status.filter(|s| s == "lost")
    })
    .await;
    assert_eq!(status, "lost");

    // Back while NATS is down, so nobody can be told yet: the replica reports the lost slot
    // (gauge, log) and is not ready.
    base.nats.stop().await.unwrap();
    let ingest = Replica::start_logging(&setup, "wal_ingest=info").await.unwrap();
    let gauge = |value: &'static str| {
        let ingest = &ingest;
        move || async move {
            let metrics = ingest.metrics().await?;
            metrics.lines().any(|l| l == format!("folio_wal_ingest_slot_lost {value}")).then_some(())
        }
    };
    eventually("folio_wal_ingest_slot_lost 1", Duration::from_secs(60), gauge("1")).await;
    for _ in 0..10 {
        assert!(!ingest.is_active().await, "ready while its slot is lost and nothing was re-snapshotted");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let log = ingest.log();
    assert!(log.contains("replication slot invalidated"), "the lost slot is logged:\n{log}");

    // NATS back: every consumer of every published table hears that changes were lost...
    base.nats.start_again().await.unwrap();
    let nats = &base.nats;
    let client = async_nats::connect(nats.url()).await.unwrap();
    let js = async_nats::jetstream::new(client);
    let subjects = folio_bus::Subjects::new(setup.subject_root.clone());
    let resnapshot = eventually("a re-snapshot-required event for agencies", Duration::from_secs(60), || async {
        let stream = js.get_stream(&setup.changes_stream).await.ok()?;
        let msg = stream.get_last_raw_message_by_subject(&subjects.table_wide("public", "agencies")).await.ok()?;
        let event = ChangeEvent::decode(msg.payload).ok()?;
        (event.operation() == Operation::ResnapshotRequired).then_some(event)
    })
    .await;
    assert_eq!(resnapshot.table, "agencies");
    // ...on a fresh slot, which streams what commits from now on.
    insert("after").await;
    eventually("the first commit after the new slot to be published", Duration::from_secs(60), || async {
        let stream = js.get_stream(&setup.changes_stream).await.ok()?;
        let consumer = stream
            .create_consumer(async_nats::jetstream::consumer::pull::OrderedConfig {
                filter_subject: subjects.table_filter("public", "agencies"),
                ..Default::default()
            })
            .await
            .ok()?;
        let mut messages = consumer.messages().await.ok()?;
        let mut names = Vec::new();
        while let Ok(Some(Ok(m))) = tokio::time::timeout(Duration::from_millis(300), messages.next()).await {
            if let Ok(e) = ChangeEvent::decode(m.payload.clone()) {
                names.extend(e.new_row.into_iter().filter(|c| c.name == "name").map(|c| format!("{:?}", c.value)));
            }
        }
        names.iter().any(|n| n.contains("\"after\"")).then_some(())
    })
    .await;
    let wal_status: String = sqlx::query_scalar("SELECT wal_status FROM pg_replication_slots WHERE slot_name = $1")
        .bind(&setup.slot)
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_ne!(wal_status, "lost", "the slot was recreated");
    assert!(ingest.is_active().await, "wal-ingest streams the new slot");
    eventually("folio_wal_ingest_slot_lost 0", Duration::from_secs(60), gauge("0")).await;
    let metrics = ingest.metrics().await.unwrap_or_default();
    assert!(
        metrics.lines().any(|l| l.starts_with("folio_wal_ingest_slot_invalidations_total") && l.ends_with(" 1")),
        "the invalidation is counted:\n{metrics}"
    );

    // The client's handle is no good any more: refetch.
    let refetch = eventually("the edge to answer the old handle with 409", Duration::from_secs(60), || async {
        let a = http_get(edge.addr, &format!("/v1/shape?table=agencies&handle={handle}&offset={offset}")).await?;
        (a.status == 409).then_some(a)
    })
    .await;
    assert!(refetch.body.contains("must-refetch"), "{}", refetch.body);
    // Refetched from scratch, the shape is the table as it is now, the lost row included.
    let fresh = http_get(edge.addr, "/v1/shape?table=agencies&offset=-1").await.unwrap();
    assert_eq!(fresh.status, 200);
    for name in ["before", "lost while the slot was away", "after"] {
        assert!(fresh.body.contains(name), "{name} missing from {}", fresh.body);
    }
}

/// One shape-edge process serving every published table without tokens (`--shape-insecure`).
struct Edge {
    addr: std::net::SocketAddr,
    _child: tokio::process::Child,
}

impl Edge {
    async fn start(setup: &IngestSetup) -> Self {
        let port = folio_faults::free_port().unwrap();
        let addr: std::net::SocketAddr = ([127, 0, 0, 1], port).into();
        let binary = folio_faults::bin_dir().unwrap().join("shape-edge");
        let child = tokio::process::Command::new(&binary)
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env("FOLIO_ENV", "development")
            .env("RUST_LOG", std::env::var("FOLIO_FAULTS_LOG").unwrap_or_else(|_| "off".into()))
            .args(["--listen-addr", &addr.to_string(), "--admin-addr", "127.0.0.1:0"])
            .args(["--nats-url", &setup.nats_url, "--database-url", &setup.database_url])
            .args(["--subject-root", &setup.subject_root, "--ds-prefix", &setup.subject_root])
            .args(["--changes-stream", &setup.changes_stream, "--jobs-stream", &setup.jobs_stream])
            .args(["--publication", folio_db::PUBLICATION, "--shape-tables", "*", "--shape-insecure"])
            .kill_on_drop(true)
            .spawn()
            .unwrap_or_else(|e| panic!("start {} (cargo build -p shape-edge): {e}", binary.display()));
        eventually("the edge to listen", Duration::from_secs(60), || async {
            tokio::net::TcpStream::connect(addr).await.ok().map(|_| ())
        })
        .await;
        Self { addr, _child: child }
    }
}
