use folio_shapes::TableSchema;

/// Columns of every type the evaluator models, plus one needing a quoted identifier.
pub const COLUMNS: &[(&str, &str)] = &[
    ("id", "int4"),
    ("i2", "int2"),
    ("i4", "int4"),
    ("i8", "int8"),
    ("n", "numeric"),
    ("f4", "float4"),
    ("f8", "float8"),
    ("t", "text"),
    ("v", "varchar"),
    ("c", "bpchar"),
    ("b", "bool"),
    ("u", "uuid"),
    ("d", "date"),
    ("ts", "timestamp"),
    ("tz", "timestamptz"),
    ("ai", "_int4"),
    ("at", "text[]"),
    ("Odd \"Name\"", "text"),
    ("j", "jsonb"),
];

pub fn schema() -> TableSchema {
    TableSchema::new(COLUMNS.iter().copied())
}

/// Row in schema order, values as Postgres prints them.
pub fn row<'a>(values: &[(&str, &'a str)]) -> Vec<Option<&'a str>> {
    COLUMNS.iter().map(|(name, _)| values.iter().find(|(n, _)| n == name).map(|(_, v)| *v)).collect()
}
