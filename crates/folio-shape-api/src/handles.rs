//! Shape handles in a JetStream KV bucket: what each names (the definition's hash and the
//! snapshot point), so that any edge can continue any client.

use std::time::Duration;

use async_nats::jetstream::{self, context::CreateKeyValueError, kv};
use folio_bus::StreamSeq;

use super::{
    error::{Result, ShapeError},
    messages::Stitch,
    request::QualifiedName,
    shape::ShapeDef,
};

/// What a handle names, kept in KV: the definition's hash and the snapshot point.
#[derive(serde::Serialize, serde::Deserialize)]
pub struct HandleRecord {
    pub def: String,
    table: String,
    pub seq0: u64,
    xmin: u64,
    xmax: u64,
    xip: Vec<u64>,
    /// Snapshot chunks (0 in records written before it was kept).
    #[serde(default)]
    pub chunks: usize,
}

impl HandleRecord {
    pub fn new(def: &ShapeDef, stitch: &Stitch, chunks: usize) -> Self {
        HandleRecord {
            def: def.hash.clone(),
            table: def.table.name.to_string(),
            seq0: stitch.seq0.get(),
            xmin: stitch.xmin,
            xmax: stitch.xmax,
            xip: stitch.xip.iter().copied().collect(),
            chunks,
        }
    }

    pub fn stitch(&self) -> Stitch {
        Stitch {
            seq0: StreamSeq::new(self.seq0),
            xmin: self.xmin,
            xmax: self.xmax,
            xip: self.xip.iter().copied().collect(),
        }
    }
}

/// A new handle of `def`: its hash and the time in microseconds.
pub fn mint(def: &ShapeDef) -> String {
    let micros =
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_micros()).unwrap_or_default();
    format!("{}-{micros}", def.hash)
}

pub struct HandleStore {
    kv: kv::Store,
}

impl HandleStore {
    /// Opens (or creates) the bucket.
    pub async fn open(js: &jetstream::Context, bucket: &str) -> Result<Self, CreateKeyValueError> {
        let kv = match js.get_key_value(bucket).await {
            Ok(kv) => kv,
            Err(_) => {
                js.create_key_value(kv::Config {
                    bucket: bucket.to_owned(),
                    description: "shape-edge: shape handles and their snapshot points".into(),
                    history: 1,
                    max_age: Duration::from_secs(7 * 24 * 3600),
                    ..Default::default()
                })
                .await?
            }
        };
        Ok(HandleStore { kv })
    }

    /// Stores `record` under a new handle of `def` and returns the handle.
    pub async fn create(&self, def: &ShapeDef, record: &HandleRecord) -> Result<String> {
        let record = serde_json::to_vec(record).map_err(|e| ShapeError::internal("encode handle", e))?;
        let record = bytes::Bytes::from(record);
        let mut handle = mint(def);
        // `create`, not `put`: two edges minting in the same microsecond must not overwrite
        // each other's snapshot point.
        let mut attempts = 0;
        while let Err(e) = self.kv.create(&handle, record.clone()).await {
            attempts += 1;
            if e.kind() != kv::CreateErrorKind::AlreadyExists || attempts > 3 {
                return Err(ShapeError::unavailable("store the shape handle", e));
            }
            handle = mint(def);
        }
        Ok(handle)
    }

    /// The record behind `handle`; None for a handle unknown or deleted.
    pub async fn get(&self, handle: &str) -> Result<Option<HandleRecord>> {
        let entry = self.kv.get(handle).await.map_err(|e| ShapeError::unavailable("read the shape handle", e))?;
        let Some(bytes) = entry else { return Ok(None) };
        serde_json::from_slice(&bytes).map(Some).map_err(|e| ShapeError::internal("decode handle record", e))
    }

    /// Whether `handle` is stored (a failed read counts as not).
    pub async fn exists(&self, handle: &str) -> bool {
        self.kv.get(handle).await.ok().flatten().is_some()
    }

    pub async fn purge(&self, handle: &str) -> Result<()> {
        self.kv.purge(handle).await.map_err(|e| ShapeError::unavailable("delete handle", e))
    }

    /// Every stored handle of `table`'s shapes.
    pub async fn of_table(&self, table: &QualifiedName) -> Result<Vec<String>> {
        use futures::StreamExt;
        let wanted = table.to_string();
        let mut keys = self.kv.keys().await.map_err(|e| ShapeError::unavailable("list handles", e))?;
        let mut found = Vec::new();
        while let Some(k) = keys.next().await {
            let Ok(k) = k else { continue };
            if let Ok(Some(v)) = self.kv.get(&k).await
                && serde_json::from_slice::<HandleRecord>(&v).is_ok_and(|r| r.table == wanted)
            {
                found.push(k);
            }
        }
        Ok(found)
    }
}
