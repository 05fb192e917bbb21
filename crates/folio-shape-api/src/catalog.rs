//! What the edge knows about a table a shape reads: columns with their types as Electric's
//! `electric-schema` header describes them, the replica key, the tenant column, and whether the
//! table is published. Read from Postgres' catalog on first use and after a schema change.

use std::{
    collections::HashMap,
    sync::Arc,
    time::{Duration, Instant},
};

use folio_shapes::TableSchema;
use parking_lot::Mutex;
use sqlx::{PgPool, Row};

use super::{
    error::{Result, ShapeError},
    request::{QualifiedName, quote},
};

#[derive(Debug, Clone)]
pub struct Column {
    pub name: String,
    /// `pg_type.typname`, the element type's for arrays.
    pub type_name: String,
    pub dims: i32,
    pub not_null: bool,
    pub pk_index: Option<usize>,
    pub type_mod: i32,
    /// `format_type()`: what the where-clause type checker reads.
    pub formatted: String,
    /// The type's output function: the snapshot selects `<fn>(col)::text`, exactly the text
    /// pgoutput sends (a plain `::text` cast would trim `char(n)`).
    pub output_fn: String,
}

#[derive(Debug)]
pub struct TableInfo {
    pub name: QualifiedName,
    pub columns: Vec<Column>,
    /// Columns that identify a row, in key order: the primary key, or every column sorted by
    /// name for a table without one (Electric's rule).
    pub key: Vec<usize>,
    pub tenant: Option<usize>,
    pub where_schema: TableSchema,
    /// Changes when a column is added, dropped, renamed or retyped: part of every shape's
    /// definition, so a schema change never continues an old handle.
    pub fingerprint: String,
    /// `"schema"."table"`, the first part of every row key.
    pub key_prefix: String,
    /// `["schema","table"]` for `headers.relation`.
    pub relation_json: String,
}

impl TableInfo {
    pub fn column_index(&self, name: &str) -> Option<usize> {
        self.columns.iter().position(|c| c.name == name)
    }

    /// `electric-schema` for the selected columns.
    pub fn schema_header(&self, selected: &[usize]) -> String {
        let mut map = serde_json::Map::new();
        for &i in selected {
            let c = &self.columns[i];
            let mut o = serde_json::Map::new();
            o.insert("type".into(), c.type_name.clone().into());
            if c.dims > 0 {
                o.insert("dims".into(), c.dims.into());
            }
            if let Some(p) = c.pk_index {
                o.insert("pk_index".into(), p.into());
            }
            if c.not_null {
                o.insert("not_null".into(), true.into());
            }
            let m = c.type_mod;
            match c.type_name.as_str() {
                "varchar" if m > 4 => {
                    o.insert("max_length".into(), (m - 4).into());
                }
                "bpchar" | "bit" | "varbit" if m > 4 => {
                    o.insert("length".into(), (m - 4).into());
                }
                "numeric" if m > 4 => {
                    o.insert("precision".into(), ((m - 4) >> 16).into());
                    o.insert("scale".into(), ((m - 4) & 0xffff).into());
                }
                "time" | "timetz" | "timestamp" | "timestamptz" | "interval" if m >= 0 => {
                    o.insert("precision".into(), (m & 0xffff).into());
                }
                _ => {}
            }
            map.insert(c.name.clone(), serde_json::Value::Object(o));
        }
        serde_json::Value::Object(map).to_string()
    }
}

/// Which tables may be synced at all (`FOLIO_SHAPE_TABLES`): `*`, `schema.*` or `schema.table`
/// entries, comma separated, identifiers quoted as in requests.
#[derive(Debug, Clone)]
pub struct AllowList {
    everything: bool,
    schemas: Vec<String>,
    tables: Vec<QualifiedName>,
}

impl AllowList {
    pub fn parse(spec: &str) -> Result<Self, String> {
        let mut list = AllowList { everything: false, schemas: Vec::new(), tables: Vec::new() };
        for entry in spec.split(',').map(str::trim).filter(|e| !e.is_empty()) {
            if entry == "*" {
                list.everything = true;
            } else if let Some(schema) = entry.strip_suffix(".*") {
                list.schemas.push(super::request::parse_identifier(schema)?);
            } else {
                list.tables.push(super::request::parse_relation(entry)?);
            }
        }
        Ok(list)
    }

    pub fn allows(&self, t: &QualifiedName) -> bool {
        self.everything || self.schemas.contains(&t.schema) || self.tables.contains(t)
    }
}

/// How old a cached table description may be when a request may create a shape.
const FRESHNESS: Duration = Duration::from_secs(2);

/// The tables' descriptions, read from Postgres and cached per feed generation (a truncate or
/// schema change on the table's feed makes the cached one stale).
pub struct Catalog {
    pool: PgPool,
    publication: String,
    auto_publish: bool,
    tables: Mutex<HashMap<QualifiedName, CachedTable>>,
}

/// A table description with the feed generation and the time it was read at.
struct CachedTable {
    info: Arc<TableInfo>,
    generation: u64,
    read_at: Instant,
}

impl Catalog {
    pub fn new(pool: PgPool, publication: String, auto_publish: bool) -> Self {
        Catalog { pool, publication, auto_publish, tables: Mutex::default() }
    }

    /// The cached description of `name` read at feed `generation`: for requests that may
    /// create a shape (`fresh`) at most a few seconds old, so a table dropped and created again
    /// (no change event says so) is read anew.
    pub fn cached(&self, name: &QualifiedName, generation: u64, fresh: bool) -> Option<Arc<TableInfo>> {
        self.tables.lock().get(name).and_then(|c| {
            let current = c.generation == generation && !(fresh && c.read_at.elapsed() > FRESHNESS);
            current.then(|| Arc::clone(&c.info))
        })
    }

    /// Reads `name`'s description from the database (adding it to the publication when
    /// allowed).
    pub async fn load(&self, name: &QualifiedName) -> Result<Arc<TableInfo>> {
        Ok(Arc::new(load(&self.pool, name, &self.publication, self.auto_publish).await?))
    }

    /// Caches `info` as read at feed `generation`.
    pub fn remember(&self, info: &Arc<TableInfo>, generation: u64) {
        self.tables
            .lock()
            .insert(info.name.clone(), CachedTable { info: Arc::clone(info), generation, read_at: Instant::now() });
    }

    /// Whether the database answers.
    pub async fn healthy(&self) -> bool {
        matches!(
            tokio::time::timeout(Duration::from_secs(2), sqlx::query("SELECT 1").execute(&self.pool)).await,
            Ok(Ok(_))
        )
    }
}

/// Reads `table`'s description. With `auto_publish`, a table missing from `publication` is
/// added to it (with REPLICA IDENTITY FULL, which evaluating where clauses on old rows needs).
pub async fn load(pool: &PgPool, table: &QualifiedName, publication: &str, auto_publish: bool) -> Result<TableInfo> {
    let rel = sqlx::query(
        "SELECT c.oid::int8 AS oid, c.relreplident::text AS ident,
                EXISTS (SELECT 1 FROM pg_publication_tables p
                         WHERE p.pubname = $3 AND p.schemaname = n.nspname AND p.tablename = c.relname) AS published
           FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
          WHERE n.nspname = $1 AND c.relname = $2 AND c.relkind IN ('r', 'p')",
    )
    .bind(&table.schema)
    .bind(&table.name)
    .bind(publication)
    .fetch_optional(pool)
    .await?;
    let Some(rel) = rel else {
        return Err(ShapeError::invalid(
            "table",
            format!(
                "Table {table} does not exist. If the table name contains capitals or special characters you must quote it."
            ),
        ));
    };
    let oid: i64 = rel.try_get("oid")?;
    let ident: String = rel.try_get("ident")?;
    let published: bool = rel.try_get("published")?;
    if !published || ident != "f" {
        if !auto_publish {
            return Err(ShapeError::invalid(
                "table",
                format!(
                    "Table {table} is not in publication {publication} with REPLICA IDENTITY FULL, and this edge does not add tables (FOLIO_SHAPE_AUTO_PUBLISH)"
                ),
            ));
        }
        publish(pool, table, publication, published, ident == "f").await?;
    }
    let rows = sqlx::query(
        "SELECT a.attname::text AS name, a.attnotnull AS not_null, a.attndims AS dims, a.atttypmod AS type_mod,
                format_type(a.atttypid, a.atttypmod) AS formatted,
                CASE WHEN t.typcategory = 'A' THEN et.typname ELSE t.typname END::text AS type_name,
                t.typcategory = 'A' AS is_array, t.typoutput::regproc::text AS output_fn,
                (SELECT k.ord FROM pg_index i, unnest(i.indkey::int2[]) WITH ORDINALITY k(attnum, ord)
                  WHERE i.indrelid = a.attrelid AND i.indisprimary AND k.attnum = a.attnum) AS pk_ord
           FROM pg_attribute a
           JOIN pg_type t ON t.oid = a.atttypid
           LEFT JOIN pg_type et ON et.oid = t.typelem AND t.typcategory = 'A'
          -- pgoutput does not send generated columns: neither does a shape.
          WHERE a.attrelid = $1 AND a.attnum > 0 AND NOT a.attisdropped AND a.attgenerated = ''
          ORDER BY a.attnum",
    )
    .bind(oid)
    .fetch_all(pool)
    .await?;
    let mut columns = Vec::with_capacity(rows.len());
    for r in &rows {
        let is_array: bool = r.try_get("is_array")?;
        let dims: i32 = r.try_get("dims")?;
        let pk_ord: Option<i64> = r.try_get("pk_ord")?;
        columns.push(Column {
            name: r.try_get("name")?,
            type_name: r.try_get("type_name")?,
            dims: if is_array { dims.max(1) } else { 0 },
            not_null: r.try_get("not_null")?,
            pk_index: pk_ord.map(|o| (o - 1) as usize),
            type_mod: r.try_get("type_mod")?,
            formatted: r.try_get("formatted")?,
            output_fn: r.try_get("output_fn")?,
        });
    }
    let mut key: Vec<usize> = (0..columns.len()).filter(|&i| columns[i].pk_index.is_some()).collect();
    key.sort_by_key(|&i| columns[i].pk_index);
    if key.is_empty() {
        key = (0..columns.len()).collect();
        key.sort_by(|&a, &b| columns[a].name.cmp(&columns[b].name));
    }
    // The rule wal-ingest uses for its tenant subjects.
    let tenant = folio_bus::tenant::tenant_column(&table.schema, &table.name, columns.iter().map(|c| c.name.as_str()));
    let where_schema = TableSchema::new(columns.iter().map(|c| (c.name.clone(), c.formatted.clone())));
    let fingerprint = {
        use sha2::Digest;
        let mut h = sha2::Sha256::new();
        h.update(oid.to_le_bytes());
        for c in &columns {
            h.update(c.name.as_bytes());
            h.update([0]);
            h.update(c.formatted.as_bytes());
            h.update([u8::from(c.not_null), 0]);
        }
        hex(&h.finalize()[..8])
    };
    Ok(TableInfo {
        key_prefix: format!("{}.{}", quote(&table.schema), quote(&table.name)),
        relation_json: serde_json::json!([table.schema, table.name]).to_string(),
        name: table.clone(),
        columns,
        key,
        tenant,
        where_schema,
        fingerprint,
    })
}

async fn publish(pool: &PgPool, table: &QualifiedName, publication: &str, published: bool, full: bool) -> Result<()> {
    // Identifiers come from the catalog lookup above and are quoted; nothing of the request is
    // spliced in any other way.
    for attempt in 0.. {
        let mut tx = pool.begin().await?;
        if !full {
            sqlx::query(sqlx::AssertSqlSafe(format!("ALTER TABLE {table} REPLICA IDENTITY FULL")))
                .execute(&mut *tx)
                .await?;
        }
        if !published {
            // As Electric does, the publication is created when it does not exist yet.
            let exists: bool = sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM pg_publication WHERE pubname = $1)")
                .bind(publication)
                .fetch_one(&mut *tx)
                .await?;
            let sql = if exists {
                format!("ALTER PUBLICATION {} ADD TABLE {table}", quote(publication))
            } else {
                format!("CREATE PUBLICATION {} FOR TABLE {table}", quote(publication))
            };
            match sqlx::query(sqlx::AssertSqlSafe(sql)).execute(&mut *tx).await {
                // Another first request (on this edge or another) published the table meanwhile,
                // with REPLICA IDENTITY FULL in the same transaction: nothing left to do.
                Err(sqlx::Error::Database(e)) if e.code().as_deref() == Some("42710") && exists => return Ok(()),
                // Or created the publication meanwhile: add the table to it.
                Err(sqlx::Error::Database(e)) if e.code().as_deref() == Some("42710") && attempt == 0 => continue,
                other => {
                    other?;
                }
            }
        }
        tx.commit().await?;
        break;
    }
    tracing::warn!(%table, publication, "added the table to the publication for a shape (FOLIO_SHAPE_AUTO_PUBLISH)");
    Ok(())
}

pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
