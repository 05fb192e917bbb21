//! Following one subject filter of a JetStream stream from a sequence, across NATS restarts.
//!
//! async-nats' ordered consumer notices that its consumer is gone (a restarted nats-server
//! forgets ephemeral consumers) only after two missed idle heartbeats: 10–15 s in which a live
//! client hears nothing. The edge knows sooner: its connection reports every reconnection, and a
//! [`Follower`] then drops its consumer and creates a new one starting right after the last
//! sequence it handed out. Nothing is skipped or handed out twice, whatever the server forgot.

use std::time::Duration;

use async_nats::jetstream::{self, consumer::DeliverPolicy};
use folio_bus::StreamSeq;
use futures::{FutureExt, StreamExt};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

/// Counts the edge's (re)connections to NATS; every follower watches it.
#[derive(Clone)]
pub struct Reconnects {
    rx: watch::Receiver<u64>,
}

impl Reconnects {
    /// Connect options that report reconnections to the returned watch.
    pub fn options(name: &str) -> (async_nats::ConnectOptions, Reconnects) {
        let (tx, rx) = watch::channel(0u64);
        let options = async_nats::ConnectOptions::new()
            .name(name)
            // The default backoff doubles to 4 s: a server back after 1 s could wait another
            // second or two for the client to try again. Live clients are waiting meanwhile.
            .reconnect_delay_callback(|attempts| Duration::from_millis((attempts as u64 * 100).min(500)))
            .event_callback(move |event| {
                let tx = tx.clone();
                async move {
                    match event {
                        async_nats::Event::Connected => {
                            tracing::info!("connected to NATS");
                            tx.send_modify(|n| *n += 1);
                        }
                        async_nats::Event::Disconnected => tracing::warn!("disconnected from NATS"),
                        other => tracing::debug!("NATS connection event: {other}"),
                    }
                }
            });
        (options, Reconnects { rx })
    }

    /// For clients connected without [`Reconnects::options`]: followers then rely on the
    /// consumer's own error reporting.
    pub fn never() -> Reconnects {
        Reconnects { rx: watch::channel(0u64).1 }
    }

    /// Resolves at the next reconnection (never, once nobody reports them).
    pub async fn next(&mut self) {
        if self.rx.changed().await.is_err() {
            std::future::pending::<()>().await;
        }
    }
}

/// Hands out the messages of `filter` on `stream` with sequence above a starting point, in
/// stream order, each exactly once.
pub struct Follower {
    js: jetstream::Context,
    stream: String,
    filter: String,
    /// The last sequence handed out (or the starting point).
    last: StreamSeq,
    reconnects: Reconnects,
    messages: Option<jetstream::consumer::pull::Ordered>,
    headers_only: bool,
    shutdown: CancellationToken,
}

type BoxError = Box<dyn std::error::Error + Send + Sync>;

const RETRY_FIRST: Duration = Duration::from_millis(50);
const RETRY_MAX: Duration = Duration::from_secs(1);

impl Follower {
    pub fn new(
        js: jetstream::Context,
        stream: &str,
        filter: String,
        after: StreamSeq,
        reconnects: &Reconnects,
        shutdown: CancellationToken,
    ) -> Self {
        let mut reconnects = reconnects.clone();
        reconnects.rx.mark_unchanged();
        Follower {
            js,
            stream: stream.to_owned(),
            filter,
            last: after,
            reconnects,
            messages: None,
            headers_only: false,
            shutdown,
        }
    }

    /// Messages without their payloads, for followers that only need to know where data is.
    pub fn headers_only(mut self) -> Self {
        self.headers_only = true;
        self
    }

    /// The next messages (at most `max`, at least one), or None at shutdown.
    pub async fn next_batch(&mut self, max: usize) -> Option<Vec<jetstream::Message>> {
        let mut backoff = RETRY_FIRST;
        loop {
            if self.messages.is_none() {
                match self.subscribe().await {
                    Ok(m) => {
                        backoff = RETRY_FIRST;
                        self.messages = Some(m);
                    }
                    Err(e) => {
                        tracing::warn!(filter = %self.filter, from = %self.last.next(), "cannot follow the change stream yet: {e}");
                        tokio::select! {
                            _ = self.shutdown.cancelled() => return None,
                            _ = tokio::time::sleep(backoff) => {}
                            // Back: try at once.
                            _ = self.reconnects.next() => {}
                        }
                        backoff = (backoff * 2).min(RETRY_MAX);
                        continue;
                    }
                }
            }
            let messages = self.messages.as_mut()?;
            let first = tokio::select! {
                _ = self.shutdown.cancelled() => return None,
                _ = self.reconnects.next() => {
                    tracing::info!(filter = %self.filter, from = %self.last.next(), "NATS reconnected: following anew");
                    self.messages = None;
                    continue;
                }
                m = messages.next() => m,
            };
            let mut batch = Vec::new();
            let mut next = first;
            loop {
                match next {
                    Some(Ok(msg)) => {
                        let seq = StreamSeq::new(msg.info().map(|i| i.stream_sequence).unwrap_or(0));
                        // A consumer recreated by the library itself may repeat what was handed out.
                        if seq > self.last {
                            self.last = seq;
                            batch.push(msg);
                        }
                    }
                    Some(Err(e)) => {
                        tracing::warn!(filter = %self.filter, from = %self.last.next(), "change stream consumer failed, following anew: {e}");
                        self.messages = None;
                        break;
                    }
                    None => {
                        self.messages = None;
                        break;
                    }
                }
                if batch.len() >= max {
                    break;
                }
                match self.messages.as_mut().and_then(|m| m.next().now_or_never()) {
                    Some(m) => next = m,
                    None => break,
                }
            }
            if !batch.is_empty() {
                return Some(batch);
            }
        }
    }

    /// A consumer from right after the last sequence handed out. (Not a `&self` method: the
    /// follower holds a consumer that is not `Sync`, and this future must be `Send`.)
    fn subscribe(
        &self,
    ) -> impl std::future::Future<Output = Result<jetstream::consumer::pull::Ordered, BoxError>> + Send + 'static {
        let (js, stream, config) = (
            self.js.clone(),
            self.stream.clone(),
            jetstream::consumer::pull::OrderedConfig {
                filter_subject: self.filter.clone(),
                deliver_policy: DeliverPolicy::ByStartSequence { start_sequence: self.last.next().get() },
                headers_only: self.headers_only,
                ..Default::default()
            },
        );
        async move {
            let stream = js.get_stream_no_info(&stream).await?;
            let consumer = stream.create_consumer(config).await?;
            Ok(consumer.messages().await?)
        }
    }
}
