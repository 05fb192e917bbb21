//! folio-quota against a real NATS (`FOLIO_NATS_URL`), with buckets private to each test.

use std::{
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use folio_quota::{Counters, FailureMode, Outcome, QuotaArgs, QuotaError, QuotaKey, RateLimiter, RatePolicy};

fn private_args() -> QuotaArgs {
    let suffix = folio_testkit::unique_suffix();
    QuotaArgs {
        rate_bucket: format!("test-rates-{suffix}"),
        count_bucket: format!("test-quotas-{suffix}"),
        ..QuotaArgs::default()
    }
}

/// A replica of its own: its own NATS connection.
async fn replica() -> async_nats::jetstream::Context {
    async_nats::jetstream::new(folio_testkit::nats().await.expect("NATS"))
}

async fn drop_buckets(args: &QuotaArgs) {
    let js = replica().await;
    let _ = js.delete_key_value(&args.rate_bucket).await;
    let _ = js.delete_key_value(&args.count_bucket).await;
}

/// Calls `check` from `tasks` tasks per limiter, each pausing 1 ms between calls, and counts
/// what was admitted between `warm_up` and `warm_up + window`.
async fn admitted_under_load(
    limiters: &[RateLimiter],
    key: &QuotaKey,
    policy: RatePolicy,
    tasks: usize,
    warm_up: Duration,
    window: Duration,
) -> (u64, u64) {
    let stop = Arc::new(AtomicBool::new(false));
    let (admitted, refused) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let start = Instant::now() + warm_up;
    let end = start + window;
    let mut handles = Vec::new();
    for limiter in limiters {
        for _ in 0..tasks {
            let (limiter, key, stop) = (limiter.clone(), key.clone(), stop.clone());
            let (admitted, refused) = (admitted.clone(), refused.clone());
            handles.push(tokio::spawn(async move {
                while !stop.load(Ordering::Relaxed) {
                    let decision = limiter.check(&key, &policy).await;
                    let now = Instant::now();
                    if now >= start && now < end {
                        match decision.outcome {
                            Outcome::Allowed => admitted.fetch_add(1, Ordering::Relaxed),
                            _ => {
                                let retry = decision.retry_after.expect("a refusal says when to retry");
                                assert!(retry <= Duration::from_secs(1), "{retry:?}");
                                refused.fetch_add(1, Ordering::Relaxed)
                            }
                        };
                    }
                    tokio::time::sleep(Duration::from_millis(1)).await;
                }
            }));
        }
    }
    tokio::time::sleep_until((end + Duration::from_millis(50)).into()).await;
    stop.store(true, Ordering::Relaxed);
    for h in handles {
        h.await.unwrap();
    }
    (admitted.load(Ordering::Relaxed), refused.load(Ordering::Relaxed))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_limiters_on_one_bucket_hold_the_global_rate_while_load_is_on() {
    let args = private_args();
    let a = RateLimiter::new(replica().await, &args, 1);
    let b = RateLimiter::new(replica().await, &args, 1);
    let policy = RatePolicy::per_second("test-writes", 50, 50);
    let key = QuotaKey::agency(folio_testkit::unique_suffix(), "test-writes").unwrap();

    // After a second the burst is spent: the window sees the steady rate only.
    let window = Duration::from_secs(4);
    let (admitted, refused) = admitted_under_load(&[a, b], &key, policy, 4, Duration::from_secs(1), window).await;
    drop_buckets(&args).await;

    // 8 tasks offer ~8,000 calls a second; 50 a second may pass. The stated bound: 1.5 leases
    // per replica (5 tokens each at 50/s and a 100 ms lease) = 15, plus one lease of timing
    // slack at each end of the window.
    let expected = 50.0 * window.as_secs_f64();
    let error = 1.5 * 2.0 * 5.0 + 2.0 * 5.0;
    eprintln!("admitted {admitted} (expected {expected} +- {error}), refused {refused}");
    assert!((admitted as f64 - expected).abs() <= error, "admitted {admitted}, expected {expected} +- {error}");
    assert!(refused > 10 * admitted, "the load was not above the limit: {refused} refused");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_burst_is_shared_by_both_limiters() {
    let args = private_args();
    let a = RateLimiter::new(replica().await, &args, 1);
    let b = RateLimiter::new(replica().await, &args, 1);
    // 1/s refills ~1 token during the test: nearly all admissions come from the burst of 40.
    let policy = RatePolicy::per_second("test-burst", 1, 40);
    let key = QuotaKey::token(folio_testkit::unique_suffix(), "test-burst").unwrap();
    let (admitted, _) = admitted_under_load(&[a, b], &key, policy, 2, Duration::ZERO, Duration::from_millis(800)).await;
    drop_buckets(&args).await;
    assert!((40..=41).contains(&admitted), "admitted {admitted} of a burst of 40");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_reservations_never_exceed_the_quota_and_never_lose_a_decrement() {
    let args = private_args();
    let replicas = [Counters::new(replica().await, &args, 1), Counters::new(replica().await, &args, 1)];
    let key = QuotaKey::agency(folio_testkit::unique_suffix(), "streams").unwrap();
    const LIMIT: u64 = 25;

    let attempts = (0..60).map(|i| {
        let (counters, key) = (replicas[i % 2].clone(), key.clone());
        tokio::spawn(async move { counters.reserve(&key, 1, LIMIT).await })
    });
    let results = futures::future::join_all(attempts).await;
    let mut granted = 0;
    for result in results {
        match result.unwrap() {
            Ok(reservation) => {
                granted += 1;
                assert!(reservation.used.unwrap() <= LIMIT);
            }
            Err(QuotaError::Exceeded { used, limit, .. }) => assert_eq!((used, limit), (LIMIT, LIMIT)),
            Err(e) => panic!("unexpected {e:#?}"),
        }
    }
    assert_eq!(granted, LIMIT, "exactly the quota is granted");
    assert_eq!(replicas[0].usage(&key).await.unwrap(), LIMIT);

    // Releases racing reservations of others: every release lands, so the count ends at what
    // the surviving reservations hold.
    let churn = (0..40).map(|i| {
        let (counters, key) = (replicas[i % 2].clone(), key.clone());
        tokio::spawn(async move {
            if i < 25 {
                counters.release(&key, 1).await.map(|_| 0)
            } else {
                counters.reserve(&key, 1, LIMIT).await.map(|_| 1).or_else(|e| match e {
                    QuotaError::Exceeded { .. } => Ok(0),
                    other => Err(other),
                })
            }
        })
    });
    let reserved_again: u64 = futures::future::join_all(churn).await.into_iter().map(|r| r.unwrap().unwrap()).sum();
    let usage = replicas[1].usage(&key).await.unwrap();
    drop_buckets(&args).await;
    assert_eq!(usage, reserved_again, "{reserved_again} re-reserved after 25 releases");
}

#[tokio::test]
async fn with_nats_down_rate_limits_fail_open_under_a_local_limit_or_closed() {
    // Nothing listens there; the client keeps trying in the background.
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let nats = async_nats::ConnectOptions::new()
        .retry_on_initial_connect()
        .connect(format!("nats://127.0.0.1:{port}"))
        .await
        .unwrap();
    let policy = RatePolicy::per_second("test-down", 10, 10);
    let key = QuotaKey::agency("a", "test-down").unwrap();
    let args = QuotaArgs { nats_timeout: Duration::from_millis(50), ..private_args() };

    let open = RateLimiter::new(async_nats::jetstream::new(nats.clone()), &args, 1);
    let mut outcomes = Vec::new();
    for _ in 0..5 {
        outcomes.push(open.check(&key, &policy).await.outcome);
    }
    // One local lease (10/s x 100 ms = 1 token), then refused until the next one is due.
    assert_eq!(outcomes[0], Outcome::Allowed);
    assert!(outcomes[1..].iter().all(|o| *o == Outcome::Limited), "{outcomes:?}");

    let args = QuotaArgs { rates_on_nats_down: FailureMode::Closed, ..args };
    let closed = RateLimiter::new(async_nats::jetstream::new(nats), &args, 1);
    let decision = closed.check(&key, &policy).await;
    assert_eq!(decision.outcome, Outcome::Unavailable);
    assert_eq!(decision.to_status().code(), tonic::Code::Unavailable);
}

#[tokio::test]
async fn with_nats_down_counted_quotas_fail_closed_by_default() {
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let nats = async_nats::ConnectOptions::new()
        .retry_on_initial_connect()
        .connect(format!("nats://127.0.0.1:{port}"))
        .await
        .unwrap();
    let args = QuotaArgs { nats_timeout: Duration::from_millis(50), ..private_args() };
    let key = QuotaKey::agency("a", "streams").unwrap();
    let counters = Counters::new(async_nats::jetstream::new(nats.clone()), &args, 1);
    assert!(matches!(counters.reserve(&key, 1, 10).await, Err(QuotaError::Unavailable { .. })));
    let args = QuotaArgs { counts_on_nats_down: FailureMode::Open, ..args };
    let counters = Counters::new(async_nats::jetstream::new(nats), &args, 1);
    assert_eq!(counters.reserve(&key, 1, 10).await.unwrap().used, None);
    assert!(counters.release(&key, 1).await.is_err(), "a release is never dropped silently");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_replicas_leasing_one_budget_stay_within_it_and_lose_no_release() {
    let args = QuotaArgs { lease_ttl: Duration::from_millis(300), ..private_args() };
    let replicas = [Counters::new(replica().await, &args, 1), Counters::new(replica().await, &args, 1)];
    let key = QuotaKey::agency(folio_testkit::unique_suffix(), "bytes").unwrap();
    const LIMIT: u64 = 20_000;
    const CHUNK: u64 = 500;
    // What is spent and not released: never above the limit plus a chunk per replica (the
    // stated bound; leases taken under the compare-and-set actually keep it within the limit).
    let net = Arc::new(AtomicU64::new(0));
    let (refused, released) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let tasks = (0..16).map(|t| {
        let (counters, key) = (replicas[t % 2].clone(), key.clone());
        let (net, refused, released) = (net.clone(), refused.clone(), released.clone());
        tokio::spawn(async move {
            let mut mine = Vec::new();
            for i in 0..400u64 {
                let amount = 1 + (i * 7 + t as u64 * 13) % 40;
                match counters.spend(&key, amount, LIMIT, CHUNK).await {
                    Ok(_) => {
                        let after = net.fetch_add(amount, Ordering::SeqCst) + amount;
                        assert!(after <= LIMIT + 2 * CHUNK, "{after} spent of {LIMIT}");
                        mine.push(amount);
                    }
                    Err(QuotaError::Exceeded { limit, .. }) => {
                        assert_eq!(limit, LIMIT);
                        refused.fetch_add(1, Ordering::Relaxed);
                    }
                    Err(e) => panic!("unexpected {e:#?}"),
                }
                // Deletes racing the leases: a release is an exact decrement of the shared count.
                if i % 5 == 4
                    && let Some(amount) = mine.pop()
                {
                    net.fetch_sub(amount, Ordering::SeqCst);
                    counters.release(&key, amount).await.unwrap();
                    released.fetch_add(1, Ordering::Relaxed);
                }
            }
        })
    });
    for result in futures::future::join_all(tasks).await {
        result.unwrap();
    }
    let spent = net.load(Ordering::SeqCst);
    assert!(refused.load(Ordering::Relaxed) > 0, "the budget ran out ({spent} spent)");
    assert!(released.load(Ordering::Relaxed) > 0);
    assert!(spent <= LIMIT, "{spent} spent of {LIMIT}");
    // Unspent leases are counted until given back: within 1.5 chunks per replica.
    let counted = replicas[0].usage(&key).await.unwrap();
    assert!(counted >= spent && counted <= spent + 3 * CHUNK, "counted {counted}, spent {spent}");
    // Idle past the lease TTL, both replicas give their leases back: the count is what is spent.
    tokio::time::sleep(Duration::from_millis(1_000)).await;
    assert_eq!(replicas[1].usage(&key).await.unwrap(), spent, "idle leases given back, no release lost");

    // The shutdown path gives back at once.
    replicas[0].spend(&key, 1, LIMIT, CHUNK).await.unwrap();
    replicas[0].give_back().await;
    let usage = replicas[1].usage(&key).await.unwrap();
    drop_buckets(&args).await;
    assert_eq!(usage, spent + 1);
}
