//! Templates are untrusted code (issue 13, finding 3): an editor's template must not take the
//! renderer's memory, time, files or network.

use std::time::Duration;

use async_nats::jetstream;
use pdf_render::sandbox::ByteSize;

use crate::helpers::{Env, env};

/// Resident memory of this process (the renderer runs in the test's process), in bytes.
fn rss() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let kb: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap();
    kb * 1024
}

async fn deliveries(env: &Env) -> (u64, u64) {
    let stream = env.js.get_stream(&env.config.bus.jobs_stream).await.unwrap();
    let mut consumer: jetstream::consumer::PullConsumer = stream.get_consumer(&env.config.consumer).await.unwrap();
    let info = consumer.info().await.unwrap();
    (info.delivered.stream_sequence, info.num_redelivered as u64)
}

#[tokio::test]
async fn a_template_multiplying_a_string_by_200_million_fails_its_rendition_without_retry() {
    let env = env().await;
    let attack = env.proposal("Attack", 1, Some("#let s = \"b\" * 200000000\n= #s.len()\n")).await;
    let ordinary = env.proposal("Ordinary", 2, None).await;
    let worker = env.start_worker().await;
    // Warm: the first ordinary render and the pool's start-up are not the attack's cost.
    let warm = env.proposal("Warm", 2, None).await;
    env.publish_job(&warm).await;
    env.wait_status(&warm.rendition_id, "ready").await;
    let before = rss();

    env.publish_job(&attack).await;
    let failed = env.wait_status(&attack.rendition_id, "failed").await;
    let reason = failed.failure_reason.unwrap();
    // The default limit: the attacker's 200 MB string does not fit under it.
    assert_eq!(env.config.sandbox_memory, ByteSize::mib(128));
    assert!(reason.contains("the template used more than 128 MiB"), "{reason}");
    env.wait_queue_drained().await;
    let (_, redelivered) = deliveries(&env).await;
    assert_eq!(redelivered, 0, "delivered once: a template over the memory limit is not retried");
    let dead = env.dead_letters().await;
    assert_eq!(dead.len(), 1);
    assert!(dead[0].1.contains("the template used more than 128 MiB"), "{}", dead[0].1);

    // The renderer itself did not hold the string.
    let after = rss();
    eprintln!("renderer RSS before the attack {} KiB, after {} KiB", before >> 10, after >> 10);
    let grown = after.saturating_sub(before);
    assert!(grown < 16 << 20, "the renderer's RSS grew by {} MiB", grown >> 20);

    // The worker that died was replaced: the next ordinary render succeeds.
    env.publish_job(&ordinary).await;
    let ready = env.wait_status(&ordinary.rendition_id, "ready").await;
    assert_eq!(ready.page_count, Some(1));
    worker.cancel();
}

#[tokio::test]
async fn a_template_that_loops_forever_fails_at_the_time_limit_and_its_worker_is_replaced() {
    let mut env = env().await;
    env.config.render_timeout = Duration::from_secs(3);
    env.config.concurrency = 1;
    env.config.sandbox_workers = 1;
    // typst caps `while` at 10 000 iterations, not nested `for`s: 10^10 empty iterations.
    let endless = "#for i in range(100000) { for j in range(100000) { } }\n= Never\n";
    let attack = env.proposal("Endless", 1, Some(endless)).await;
    let ordinary = env.proposal("After", 1, None).await;
    let worker = env.start_worker().await;
    let started = std::time::Instant::now();
    env.publish_job(&attack).await;
    let failed = env.wait_status(&attack.rendition_id, "failed").await;
    let reason = failed.failure_reason.unwrap();
    assert!(reason.contains("the template ran longer than 3s"), "{reason}");
    assert!(started.elapsed() < Duration::from_secs(30), "failed at the limit, not after retries");
    env.wait_queue_drained().await;
    assert_eq!(deliveries(&env).await.1, 0, "not retried");
    // The single worker was killed and replaced: the next job renders.
    env.publish_job(&ordinary).await;
    env.wait_status(&ordinary.rendition_id, "ready").await;
    worker.cancel();
}

#[tokio::test]
async fn a_template_reading_etc_passwd_fails_without_reading_it() {
    let env = env().await;
    let read = env.proposal("Read", 1, Some("#read(\"/etc/passwd\")\n")).await;
    let image = env.proposal("Image", 1, Some("#image(\"/etc/passwd\")\n")).await;
    let escape = env.proposal("Escape", 1, Some("#read(\"../../../../etc/passwd\")\n")).await;
    let worker = env.start_worker().await;
    for job in [&read, &image, &escape] {
        env.publish_job(job).await;
        let failed = env.wait_status(&job.rendition_id, "failed").await;
        let reason = failed.failure_reason.unwrap();
        assert!(reason.starts_with("template error: 1:"), "{reason}");
        assert!(!reason.contains("root:"), "nothing of the file leaks into the reason: {reason}");
    }
    worker.cancel();
}

/// The worker process itself, whatever typst's World allows: no file, no socket, no process.
#[test]
fn the_render_worker_cannot_open_files_connect_or_start_processes() {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_pdf-render-worker"))
        .args(["--memory-limit", "256MiB", "--time-limit", "10s", "--check-sandbox"])
        .stdin(std::process::Stdio::null())
        .output()
        .expect("run pdf-render-worker");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    // Two frames: ready, then the report (each a u32 length and JSON).
    let mut frames = Vec::new();
    let mut rest = out.stdout.as_slice();
    while rest.len() >= 4 {
        let len = u32::from_le_bytes(rest[..4].try_into().unwrap()) as usize;
        frames.push(serde_json::from_slice::<serde_json::Value>(&rest[4..4 + len]).unwrap());
        rest = &rest[4 + len..];
    }
    let report = &frames[1];
    for attempt in ["read_file", "write_file", "list_dir", "connect", "spawn_process"] {
        let outcome = report[attempt].as_str().unwrap();
        assert!(outcome.starts_with("refused"), "{attempt}: {outcome}");
    }
    // Threads still work: typst lays out pages in parallel.
    assert_eq!(report["start_thread"], "allowed");
}
