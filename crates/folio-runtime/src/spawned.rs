//! A service running as a task of this process: how `all-in-one`, benchmarks and tests start,
//! await and stop a service's `Bound::run` without caring which service it is.

use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::Readiness;

pub struct Spawned<E> {
    pub shutdown: CancellationToken,
    pub task: tokio::task::JoinHandle<Result<(), E>>,
    pub readiness: Readiness,
}

impl<E: std::error::Error + Send + 'static> Spawned<E> {
    /// Spawns `run(shutdown)`; `readiness` is the flag the service's admin server reports.
    pub fn spawn<F, Fut>(readiness: Readiness, run: F) -> Self
    where
        F: FnOnce(CancellationToken) -> Fut,
        Fut: Future<Output = Result<(), E>> + Send + 'static,
    {
        let shutdown = CancellationToken::new();
        let task = tokio::spawn(run(shutdown.clone()));
        Spawned { shutdown, task, readiness }
    }

    /// Waits until the service reports ready, or fails after `limit` or when it stopped.
    pub async fn ready(&self, limit: Duration) -> Result<(), String> {
        let deadline = tokio::time::Instant::now() + limit;
        while !self.readiness.is_ready() {
            if self.task.is_finished() {
                return Err("the service stopped before it was ready".into());
            }
            if tokio::time::Instant::now() >= deadline {
                return Err(format!("the service was not ready within {limit:?}"));
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        Ok(())
    }

    /// Cancels it and waits (up to 30 s) for `run` to return.
    pub async fn stop(self) -> Result<(), String> {
        self.shutdown.cancel();
        match tokio::time::timeout(Duration::from_secs(30), self.task).await {
            Ok(Ok(result)) => result.map_err(|e| crate::error_chain(&e)),
            Ok(Err(join)) => Err(format!("service task: {join}")),
            Err(_) => Err("the service did not stop within 30 s".into()),
        }
    }
}
