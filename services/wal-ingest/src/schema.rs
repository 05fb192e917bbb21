//! What a published row needs to know about its table: column types by name, the primary key
//! (pgoutput flags every column as "key" under REPLICA IDENTITY FULL, so the real key comes
//! from the catalog) and which column holds the tenant.
//!
//! The catalog is read when a Relation message arrives, i.e. at stream time, not at the WAL
//! position of the change. A primary key altered between a write and its decoding can be
//! described with the newer key (Debezium documents the same race); column names and types
//! always come from the Relation message itself, which is exact.

use std::collections::HashMap;

use folio_proto::events::v1::ColumnType;
use sqlx::PgConnection;

use crate::decode::Relation;

/// `ChangeEvent.column_types` in change_event.proto.
const COLUMN_TYPES_FIELD: u32 = 14;

#[derive(Debug, Clone)]
pub struct Table {
    pub relation: Relation,
    pub column_types: Vec<ColumnType>,
    pub primary_key: Vec<usize>,
    pub tenant_column: Option<usize>,
    /// `column_types` already encoded as ChangeEvent field 14: appended to every row event's
    /// bytes instead of cloning and re-encoding the same strings per row.
    pub column_types_encoded: bytes::Bytes,
}

impl Table {
    pub fn new(
        relation: Relation,
        column_types: Vec<ColumnType>,
        primary_key: Vec<usize>,
        tenant_column: Option<usize>,
    ) -> Self {
        let mut encoded = Vec::new();
        for column in &column_types {
            prost::encoding::message::encode(COLUMN_TYPES_FIELD, column, &mut encoded);
        }
        Self { relation, column_types, primary_key, tenant_column, column_types_encoded: encoded.into() }
    }

    pub fn schema(&self) -> &str {
        &self.relation.schema
    }
    pub fn name(&self) -> &str {
        &self.relation.name
    }
}

/// Type names for OIDs: built-ins known up front, custom types from pgoutput Type messages and
/// anything else from `pg_type`.
#[derive(Debug, Default)]
pub struct Catalog {
    custom_types: HashMap<u32, String>,
}

impl Catalog {
    pub fn learn_type(&mut self, oid: u32, schema: &str, name: &str) {
        let qualified = if schema.is_empty() || schema == "public" || schema == "pg_catalog" {
            name.to_owned()
        } else {
            format!("{schema}.{name}")
        };
        self.custom_types.insert(oid, qualified);
    }

    pub async fn describe(&mut self, conn: &mut PgConnection, relation: Relation) -> Result<Table, sqlx::Error> {
        let unknown: Vec<i64> = relation
            .columns
            .iter()
            .map(|c| c.type_oid)
            .filter(|oid| builtin_type_name(*oid).is_none() && !self.custom_types.contains_key(oid))
            .map(i64::from)
            .collect();
        if !unknown.is_empty() {
            let rows: Vec<(i64, String)> = sqlx::query_as(
                "SELECT oid::int8, format_type(oid, NULL) FROM pg_type WHERE oid = ANY($1::int8[]::oid[])",
            )
            .bind(&unknown)
            .fetch_all(&mut *conn)
            .await?;
            for (oid, name) in rows {
                self.custom_types.insert(oid as u32, name);
            }
        }
        let key_names: Vec<(String,)> = sqlx::query_as(
            "SELECT a.attname::text FROM pg_index i \
             CROSS JOIN LATERAL unnest(i.indkey) WITH ORDINALITY AS k(attnum, ord) \
             JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = k.attnum \
             WHERE i.indrelid = $1::int8::oid AND i.indisprimary ORDER BY k.ord",
        )
        .bind(i64::from(relation.oid))
        .fetch_all(&mut *conn)
        .await?;
        let index_of = |name: &str| relation.columns.iter().position(|c| c.name == name);
        let mut primary_key: Vec<usize> = key_names.iter().filter_map(|(n,)| index_of(n)).collect();
        if primary_key.is_empty() {
            // No primary key: fall back to the replica identity columns pgoutput flagged.
            primary_key = relation.columns.iter().enumerate().filter(|(_, c)| c.part_of_key).map(|(i, _)| i).collect();
        }
        let tenant_column = folio_bus::tenant::tenant_column(
            &relation.schema,
            &relation.name,
            relation.columns.iter().map(|c| c.name.as_str()),
        );
        let column_types: Vec<ColumnType> = relation
            .columns
            .iter()
            .enumerate()
            .map(|(i, c)| ColumnType {
                name: c.name.clone(),
                type_oid: c.type_oid,
                type_name: self.type_name(c.type_oid),
                type_modifier: c.type_modifier,
                part_of_key: primary_key.contains(&i),
            })
            .collect();
        Ok(Table::new(relation, column_types, primary_key, tenant_column))
    }

    fn type_name(&self, oid: u32) -> String {
        builtin_type_name(oid)
            .map(str::to_owned)
            .or_else(|| self.custom_types.get(&oid).cloned())
            .unwrap_or_else(|| format!("oid:{oid}"))
    }
}

/// Built-in types (fixed OIDs in every Postgres), so the common case needs no catalog query.
fn builtin_type_name(oid: u32) -> Option<&'static str> {
    Some(match oid {
        16 => "bool",
        17 => "bytea",
        18 => "char",
        19 => "name",
        20 => "int8",
        21 => "int2",
        23 => "int4",
        25 => "text",
        26 => "oid",
        114 => "json",
        142 => "xml",
        199 => "_json",
        650 => "cidr",
        700 => "float4",
        701 => "float8",
        790 => "money",
        829 => "macaddr",
        869 => "inet",
        1000 => "_bool",
        1001 => "_bytea",
        1005 => "_int2",
        1007 => "_int4",
        1009 => "_text",
        1014 => "_bpchar",
        1015 => "_varchar",
        1016 => "_int8",
        1021 => "_float4",
        1022 => "_float8",
        1042 => "bpchar",
        1043 => "varchar",
        1082 => "date",
        1083 => "time",
        1114 => "timestamp",
        1115 => "_timestamp",
        1182 => "_date",
        1184 => "timestamptz",
        1185 => "_timestamptz",
        1186 => "interval",
        1231 => "_numeric",
        1266 => "timetz",
        1560 => "bit",
        1562 => "varbit",
        1700 => "numeric",
        2950 => "uuid",
        2951 => "_uuid",
        3614 => "tsvector",
        3802 => "jsonb",
        3807 => "_jsonb",
        _ => return None,
    })
}
