//! The short fault suite, part of the test command: every fault once against two wal-ingest
//! replicas, a private PostgreSQL and a private nats-server, with a writer committing all along.
//! Fails if any committed change is missing, doubled or out of commit order in JetStream, or if
//! the stream does not catch up within 60 s of a fault. `FOLIO_FAULTS_REPORT=<file>` writes the
//! recovery table (docs/reliability.md holds one).

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_fault_loses_duplicates_and_reorders_nothing() {
    let report = folio_faults::suite::run(1).await.expect("the fault suite");
    let table = report.markdown();
    println!("{table}");
    if let Ok(path) = std::env::var("FOLIO_FAULTS_REPORT") {
        std::fs::write(path, &table).expect("write the report");
    }
    assert_eq!(report.recoveries.len(), folio_faults::suite::Fault::ALL.len());
    assert!(report.committed > 500, "the writer kept committing through the faults: {}", report.committed);
}
