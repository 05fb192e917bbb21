//! wal-ingest's change stream as this edge reads it: one feed per table (started on the
//! table's first request) and direct reads of what the feeds do not hold.

use std::{collections::HashMap, sync::Arc};

use async_nats::jetstream;
use folio_bus::StreamSeq;
use folio_live::Reconnects;
use parking_lot::Mutex;
use tokio_util::{sync::CancellationToken, task::TaskTracker};

use super::{
    error::{Result, ShapeError},
    feed::TableFeed,
    request::QualifiedName,
    shape::History,
};

pub struct ChangeStream {
    nats: async_nats::Client,
    js: jetstream::Context,
    /// The JetStream stream's name.
    stream: String,
    subjects: folio_bus::Subjects,
    reconnects: Reconnects,
    shutdown: CancellationToken,
    /// Where the feeds run; the edge waits for them at shutdown.
    tasks: TaskTracker,
    feeds: Mutex<HashMap<QualifiedName, Arc<TableFeed>>>,
    /// The feed of every table, which shapes with subqueries follow (started on first use).
    whole: Mutex<Option<Arc<TableFeed>>>,
    /// Held while a feed is being created, so a table never gets two.
    feed_creation: tokio::sync::Mutex<()>,
}

impl ChangeStream {
    pub fn new(
        nats: async_nats::Client,
        bus: &folio_bus::BusArgs,
        reconnects: Reconnects,
        shutdown: CancellationToken,
        tasks: TaskTracker,
    ) -> Self {
        ChangeStream {
            js: jetstream::new(nats.clone()),
            nats,
            stream: bus.changes_stream.clone(),
            subjects: bus.subjects(),
            reconnects,
            shutdown,
            tasks,
            feeds: Mutex::default(),
            whole: Mutex::default(),
            feed_creation: tokio::sync::Mutex::default(),
        }
    }

    pub fn js(&self) -> &jetstream::Context {
        &self.js
    }

    /// The table's running feed, if it has one.
    pub fn feed(&self, table: &QualifiedName) -> Option<Arc<TableFeed>> {
        self.feeds.lock().get(table).filter(|f| !f.is_dead()).cloned()
    }

    /// The table's feed, started if it has none (or its last one ended).
    pub async fn feed_for(&self, table: &QualifiedName) -> Result<Arc<TableFeed>> {
        if let Some(f) = self.feed(table) {
            return Ok(f);
        }
        let _creating = self.feed_creation.lock().await;
        if let Some(f) = self.feed(table) {
            return Ok(f);
        }
        let filter = self.subjects.table_filter(&table.schema, &table.name);
        let feed = TableFeed::start(
            &self.js,
            &self.stream,
            filter,
            false,
            &self.reconnects,
            self.shutdown.clone(),
            &self.tasks,
        )
        .await?;
        self.feeds.lock().insert(table.clone(), Arc::clone(&feed));
        Ok(feed)
    }

    /// The running feed of every table's changes, if there is one.
    pub fn whole_stream(&self) -> Option<Arc<TableFeed>> {
        self.whole.lock().as_ref().filter(|f| !f.is_dead()).cloned()
    }

    /// The feed of every table's changes in stream order, started if there is none (or its
    /// last one ended): a shape with subqueries sees the changes of the tables they read in
    /// their order with its own table's.
    pub async fn whole_stream_feed(&self) -> Result<Arc<TableFeed>> {
        if let Some(f) = self.whole_stream() {
            return Ok(f);
        }
        let _creating = self.feed_creation.lock().await;
        if let Some(f) = self.whole_stream() {
            return Ok(f);
        }
        let feed = TableFeed::start(
            &self.js,
            &self.stream,
            self.subjects.changes_filter(),
            true,
            &self.reconnects,
            self.shutdown.clone(),
            &self.tasks,
        )
        .await?;
        *self.whole.lock() = Some(Arc::clone(&feed));
        Ok(feed)
    }

    /// Reads of a table's change events this edge's logs do not hold.
    pub fn history<'a>(&'a self, table_filter: &'a str) -> History<'a> {
        History { nats: &self.nats, js: &self.js, stream: &self.stream, filter: table_filter }
    }

    /// Sequence of the table's latest truncate / schema change / re-snapshot event (0: none).
    pub async fn last_table_wide_event(&self, table: &QualifiedName) -> Result<StreamSeq> {
        use async_nats::jetstream::stream::DirectGetErrorKind;
        let subject = self.subjects.table_wide(&table.schema, &table.name);
        let stream = self
            .js
            .get_stream_no_info(&self.stream)
            .await
            .map_err(|e| ShapeError::unavailable("open change stream", e))?;
        match stream.direct_get_last_for_subject(subject).await {
            Ok(m) => Ok(StreamSeq::new(m.sequence)),
            Err(e) if e.kind() == DirectGetErrorKind::NotFound => Ok(StreamSeq::ZERO),
            Err(e) => Err(ShapeError::unavailable("read the table's latest table-wide event", e)),
        }
    }

    /// The stream's last sequence, of any table.
    pub async fn last_sequence(&self) -> Result<StreamSeq> {
        Ok(StreamSeq::new(
            self.js
                .get_stream_no_info(&self.stream)
                .await
                .map_err(|e| ShapeError::unavailable("open change stream", e))?
                .get_info()
                .await
                .map_err(|e| ShapeError::unavailable("read change stream state", e))?
                .state
                .last_sequence,
        ))
    }
}
