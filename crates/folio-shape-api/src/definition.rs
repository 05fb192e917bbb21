//! What a request asks for, resolved against the table's description into a [`ShapeDef`]
//! (columns, the parsed where clause with the caller's agency pinned in, the definition's
//! hash), and the cache that lets every live request re-state its shape without parsing and
//! hashing it again.

use std::{collections::HashMap, sync::Arc};

use folio_auth::Caller;
use parking_lot::Mutex;
use sha2::Digest;

use super::{
    catalog::{self, TableInfo},
    error::{Result, ShapeError},
    request::ShapeRequest,
    shape::ShapeDef,
};

const MAX_CACHED_DEFINITIONS: usize = 20_000;

/// Resolved definitions by request (table, where, params, columns, replica, log, tenant).
#[derive(Default)]
pub struct Definitions {
    cache: Mutex<HashMap<String, Arc<ShapeDef>>>,
}

impl Definitions {
    /// The definition `req` asks of `table` for `caller`, from the cache when it was resolved
    /// against this very table description.
    pub fn resolve(&self, req: &ShapeRequest, table: Arc<TableInfo>, caller: Option<&Caller>) -> Result<Arc<ShapeDef>> {
        let key = serde_json::json!([
            req.table.schema,
            req.table.name,
            req.where_clause,
            req.params,
            req.columns,
            format!("{:?}", req.replica),
            format!("{:?}", req.log),
            caller.map(|c| c.agency_id.to_string()),
        ])
        .to_string();
        let cached = self.cache.lock().get(&key).cloned();
        if let Some(def) = cached.filter(|d| Arc::ptr_eq(&d.table, &table)) {
            return Ok(def);
        }
        let def = Arc::new(define(req, table, caller)?);
        let mut cache = self.cache.lock();
        if cache.len() >= MAX_CACHED_DEFINITIONS {
            cache.clear();
        }
        cache.insert(key, Arc::clone(&def));
        Ok(def)
    }
}

/// Resolves `req` against `table`, with the caller's agency pinned in.
fn define(req: &ShapeRequest, table: Arc<TableInfo>, caller: Option<&Caller>) -> Result<ShapeDef> {
    let selected: Vec<usize> = match &req.columns {
        None => (0..table.columns.len()).collect(),
        Some(cols) => {
            let missing: Vec<&str> =
                cols.iter().filter(|c| table.column_index(c).is_none()).map(String::as_str).collect();
            if !missing.is_empty() {
                return Err(ShapeError::invalid(
                    "columns",
                    format!("The following columns are not found on the table: {}", missing.join(", ")),
                ));
            }
            let pk_missing: Vec<&str> = table
                .columns
                .iter()
                .filter(|c| c.pk_index.is_some() && !cols.contains(&c.name))
                .map(|c| c.name.as_str())
                .collect();
            if !pk_missing.is_empty() {
                return Err(ShapeError::invalid(
                    "columns",
                    format!(
                        "The list of columns must include all primary key columns, missing: {}",
                        pk_missing.join(", ")
                    ),
                ));
            }
            let mut idx: Vec<usize> = cols.iter().filter_map(|c| table.column_index(c)).collect();
            idx.sort_unstable();
            idx
        }
    };
    let mut clause = match &req.where_clause {
        Some(w) => folio_shapes::WhereClause::parse(w, &table.where_schema, &req.params)
            .map_err(|e| ShapeError::invalid_because("where", e.to_string(), e))?,
        None => folio_shapes::WhereClause::all_rows(&table.where_schema),
    };
    let tenant = match (caller, table.tenant) {
        (Some(c), Some(t)) => {
            let agency = c.agency_id.to_string();
            clause = clause
                .and_tenant(&table.columns[t].name, &agency)
                .map_err(|e| ShapeError::internal("pin the tenant", e))?;
            Some(agency)
        }
        _ => None,
    };
    let mut h = sha2::Sha256::new();
    let canonical = serde_json::json!({
        "table": [table.name.schema, table.name.name], "columns": table.fingerprint,
        "where": req.where_clause, "params": req.params, "selected": selected,
        "replica": format!("{:?}", req.replica), "log": format!("{:?}", req.log), "tenant": tenant,
    });
    h.update(canonical.to_string().as_bytes());
    let hash = catalog::hex(&h.finalize()[..8]);
    Ok(ShapeDef {
        schema_header: table.schema_header(&selected),
        table,
        selected,
        replica: req.replica,
        log: req.log,
        clause,
        hash,
    })
}
