//! What a request asks for, resolved against the table's description into a [`ShapeDef`]
//! (columns, the parsed where clause with the caller's agency pinned in, the definition's
//! hash), and the cache that lets every live request re-state its shape without parsing and
//! hashing it again.

use std::{
    collections::{BTreeMap, HashMap},
    sync::{Arc, atomic::AtomicBool},
};

use folio_auth::Caller;
use parking_lot::Mutex;
use sha2::Digest;

use super::{
    catalog::{self, TableInfo},
    error::{Result, ShapeError},
    request::ShapeRequest,
    shape::ShapeDef,
};

/// Resolved definitions by request (table, where, params, columns, replica, log, tenant),
/// within a budget of bytes: a definition holds its where text and its parsed clause, which a
/// caller chooses the size of, so the cache is bounded by what it holds, not by a count.
pub struct Definitions {
    cache: Mutex<Cache>,
    budget: usize,
    limits: folio_shapes::Limits,
}

#[derive(Default)]
struct Cache {
    entries: HashMap<String, Cached>,
    /// Use order (tick → key): the least recently used leave first.
    order: BTreeMap<u64, String>,
    tick: u64,
    bytes: usize,
}

struct Cached {
    def: Arc<ShapeDef>,
    bytes: usize,
    tick: u64,
}

impl Cache {
    fn touch(&mut self, key: &str) -> Option<Arc<ShapeDef>> {
        self.tick += 1;
        let tick = self.tick;
        let entry = self.entries.get_mut(key)?;
        self.order.remove(&entry.tick);
        entry.tick = tick;
        self.order.insert(tick, key.to_owned());
        Some(Arc::clone(&entry.def))
    }

    fn remove(&mut self, key: &str) {
        if let Some(old) = self.entries.remove(key) {
            self.order.remove(&old.tick);
            self.bytes -= old.bytes;
        }
    }

    fn insert(&mut self, key: String, def: Arc<ShapeDef>, budget: usize) {
        self.remove(&key);
        // The key (request text) and the definition both hold the where text and params.
        let bytes = 2 * key.len() + def.estimated_bytes();
        if bytes > budget {
            return;
        }
        while self.bytes + bytes > budget {
            let Some((_, oldest)) = self.order.pop_first() else { break };
            self.remove(&oldest);
        }
        self.tick += 1;
        self.order.insert(self.tick, key.clone());
        self.entries.insert(key, Cached { def, bytes, tick: self.tick });
        self.bytes += bytes;
        metrics::gauge!("folio_edge_shape_definition_cache_bytes").set(self.bytes as f64);
    }
}

impl Definitions {
    /// A cache of at most `budget` bytes (estimated) of definitions whose clauses are parsed
    /// within `limits`.
    pub fn new(budget: usize, limits: folio_shapes::Limits) -> Self {
        Definitions { cache: Mutex::default(), budget, limits }
    }

    /// What a clause parsed for a request may cost (a subset's too).
    pub fn limits(&self) -> &folio_shapes::Limits {
        &self.limits
    }

    /// Bytes the cache holds (estimated).
    #[cfg(test)]
    pub fn bytes(&self) -> usize {
        self.cache.lock().bytes
    }

    /// The definition `req` asks of `table` for `caller`, from the cache when it was resolved
    /// against this very table description.
    /// `deps` describes the tables the clause's subqueries read, by name as written.
    pub fn resolve(
        &self,
        req: &ShapeRequest,
        table: Arc<TableInfo>,
        deps: &HashMap<String, Arc<TableInfo>>,
        caller: Option<&Caller>,
    ) -> Result<Arc<ShapeDef>> {
        let asked = req.where_clause.as_deref().map_or(0, str::len) + req.params.iter().map(String::len).sum::<usize>();
        if asked > self.limits.max_where_bytes {
            return Err(ShapeError::invalid(
                "where",
                format!("where clause and params are longer than {} bytes", self.limits.max_where_bytes),
            ));
        }
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
        let cached = self.cache.lock().touch(&key);
        // A definition is reused only while every table it reads has the description it was
        // made with (a schema change gives a table a new one).
        let current = |d: &&Arc<ShapeDef>| {
            Arc::ptr_eq(&d.table, &table)
                && d.deps.iter().all(|t| deps.get(&t.name.name).is_some_and(|n| Arc::ptr_eq(n, t)))
        };
        let def = match cached.as_ref().filter(current) {
            Some(def) => Arc::clone(def),
            None => {
                let def = Arc::new(define(req, table, deps, caller, &self.limits)?);
                // Re-read table descriptions must not forget that this very definition (same
                // hash: same columns) was over its budget.
                if cached.is_some_and(|old| old.hash == def.hash && old.over_budget()) {
                    def.over_budget.store(true, std::sync::atomic::Ordering::Relaxed);
                }
                self.cache.lock().insert(key, Arc::clone(&def), self.budget);
                def
            }
        };
        if def.over_budget() {
            return Err(ShapeError::invalid(
                "where",
                format!(
                    "where clause exceeded its evaluation budget of {} steps on a change of this table",
                    self.limits.eval_steps
                ),
            ));
        }
        Ok(def)
    }
}

/// Resolves `req` against `table`, with the caller's agency pinned in.
fn define(
    req: &ShapeRequest,
    table: Arc<TableInfo>,
    deps: &HashMap<String, Arc<TableInfo>>,
    caller: Option<&Caller>,
    limits: &folio_shapes::Limits,
) -> Result<ShapeDef> {
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
    // Every subquery reads its table as the caller may: pinned to the caller's agency.
    let tables: HashMap<String, folio_shapes::SubqueryTable> = deps
        .iter()
        .map(|(name, t)| {
            let tenant = match (caller, t.tenant) {
                (Some(c), Some(i)) => Some((t.columns[i].name.clone(), c.agency_id.to_string())),
                _ => None,
            };
            let sub =
                folio_shapes::SubqueryTable { sql_name: t.name.to_string(), schema: t.where_schema.clone(), tenant };
            (name.clone(), sub)
        })
        .collect();
    let mut clause = match &req.where_clause {
        Some(w) => {
            folio_shapes::WhereClause::parse_with_subqueries(w, &table.where_schema, &req.params, limits, &tables)
                .map_err(|e| ShapeError::invalid_because("where", e.to_string(), e))?
        }
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
    let deps: Vec<Arc<TableInfo>> = clause
        .subqueries()
        .iter()
        .map(|s| deps.get(s.table()).cloned())
        .collect::<Option<_>>()
        .ok_or_else(|| ShapeError::internal_without_source("a subquery's table was not described"))?;
    let dep_columns: Vec<&str> = deps.iter().map(|d| d.fingerprint.as_str()).collect();
    let mut h = sha2::Sha256::new();
    let canonical = serde_json::json!({
        "table": [table.name.schema, table.name.name], "columns": table.fingerprint, "deps": dep_columns,
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
        deps,
        hash,
        agency: caller.map(|c| c.agency_id.to_string()),
        where_bytes: req.where_clause.as_deref().map_or(0, str::len)
            + req.params.iter().map(String::len).sum::<usize>(),
        over_budget: AtomicBool::new(false),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{
        catalog::Column,
        request::{QualifiedName, ShapeRequest},
    };

    fn table() -> Arc<TableInfo> {
        let column = |name: &str, ty: &str, pk: Option<usize>| Column {
            name: name.into(),
            type_name: ty.into(),
            dims: 0,
            not_null: pk.is_some(),
            pk_index: pk,
            type_mod: -1,
            formatted: ty.into(),
            output_fn: format!("{ty}out"),
        };
        let columns = vec![column("id", "int8", Some(0)), column("title", "text", None)];
        Arc::new(TableInfo {
            name: QualifiedName { schema: "public".into(), name: "notes".into() },
            where_schema: folio_shapes::TableSchema::new(columns.iter().map(|c| (c.name.clone(), c.formatted.clone()))),
            columns,
            key: vec![0],
            tenant: None,
            fingerprint: "f".into(),
            key_prefix: "\"public\".\"notes\"".into(),
            relation_json: "[\"public\",\"notes\"]".into(),
        })
    }

    #[test]
    fn a_thousand_distinct_large_where_clauses_stay_within_the_cache_byte_budget() {
        let budget = 256 << 10;
        let defs = Definitions::new(budget, folio_shapes::Limits { max_where_bytes: 16 * 1024, ..Default::default() });
        let table = table();
        for n in 0..1_000 {
            let ids: Vec<String> = (0..500).map(|i| (n * 10_000 + i).to_string()).collect();
            let q = format!("table=notes&offset=-1&where=id%20IN%20({})", ids.join(","));
            let req = ShapeRequest::from_query(&q).unwrap();
            let def = defs.resolve(&req, Arc::clone(&table), &HashMap::new(), None).unwrap();
            assert!(def.estimated_bytes() > 500 * 64, "{}", def.estimated_bytes());
            assert!(defs.bytes() <= budget, "{} bytes after {n}", defs.bytes());
        }
        // Over the where limit: a 400, never cached.
        let long = format!("table=notes&offset=-1&where=title%20%3D%20%27{}%27", "x".repeat(17 * 1024));
        let err = defs.resolve(&ShapeRequest::from_query(&long).unwrap(), table, &HashMap::new(), None).unwrap_err();
        assert!(matches!(err, ShapeError::Invalid { field: "where", .. }), "{err:?}");
    }
}
