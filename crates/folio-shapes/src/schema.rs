//! Column types of the table a shape reads, as far as where clauses care about them.

use std::fmt;

/// A Postgres base type the evaluator understands.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum ScalarType {
    Int2,
    Int4,
    Int8,
    Numeric,
    Float4,
    Float8,
    Text,
    Varchar,
    Bpchar,
    Name,
    Bool,
    Uuid,
    Date,
    Timestamp,
    Timestamptz,
    /// Equality only (`=`, `<>`, `IN`, `= ANY`, array containment), and casts to and from text.
    Jsonb,
    /// Any other type (enums, domains, json, …). Such columns can only be tested for NULL or
    /// cast to text, as Electric documents for enums (`status::text IN (…)`).
    Other(String),
}

/// A column or expression type: a scalar or a one-dimensional array of one.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct PgType {
    pub scalar: ScalarType,
    pub array: bool,
}

impl PgType {
    pub const fn scalar(scalar: ScalarType) -> Self {
        Self { scalar, array: false }
    }

    /// Bytes held outside the value itself (the name of a type the evaluator does not model).
    pub(crate) fn heap_bytes(&self) -> usize {
        match &self.scalar {
            ScalarType::Other(name) => name.len(),
            _ => 0,
        }
    }

    pub const fn array_of(scalar: ScalarType) -> Self {
        Self { scalar, array: true }
    }

    pub(crate) fn element(&self) -> PgType {
        PgType::scalar(self.scalar.clone())
    }

    /// Parses a type name as Postgres spells it in catalogs (`int4`, `_int4`) or in SQL
    /// (`integer`, `int4[]`, `timestamp with time zone`). Unknown names become
    /// [`ScalarType::Other`] because a table may well hold enums.
    pub fn from_name(name: &str) -> PgType {
        // Modifiers (`varchar(255)`, `timestamp(3) with time zone`, as format_type prints them)
        // constrain stored values but do not change how they compare.
        let mut lower = String::with_capacity(name.len());
        let mut depth = 0usize;
        for c in name.trim().chars() {
            match c {
                '(' => depth += 1,
                ')' => depth = depth.saturating_sub(1),
                c if depth == 0 => lower.push(c.to_ascii_lowercase()),
                _ => {}
            }
        }
        if lower == "character" || lower == "character[]" {
            lower = lower.replace("character", "bpchar");
        }
        let (base, array) = if let Some(b) = lower.strip_suffix("[]") {
            (b.trim_end(), true)
        } else if let Some(b) = lower.strip_prefix('_') {
            (b, true)
        } else {
            (lower.as_str(), false)
        };
        match ScalarType::from_sql_name(base) {
            Some(scalar) => PgType { scalar, array },
            None => PgType { scalar: ScalarType::Other(name.trim().to_owned()), array: false },
        }
    }

    pub(crate) fn is_text_like(&self) -> bool {
        !self.array && self.scalar.is_text_like()
    }

    pub(crate) fn is_collatable(&self) -> bool {
        self.scalar.is_text_like()
    }
}

impl ScalarType {
    /// Names accepted in casts and schemas. Type modifiers (`varchar(10)`, `numeric(10,2)`) are
    /// deliberately absent: casting to them truncates or rounds, which the evaluator does not do.
    pub fn from_sql_name(name: &str) -> Option<ScalarType> {
        let collapsed: String = name.split_whitespace().collect::<Vec<_>>().join(" ");
        Some(match collapsed.as_str() {
            "int2" | "smallint" => ScalarType::Int2,
            "int4" | "int" | "integer" => ScalarType::Int4,
            "int8" | "bigint" => ScalarType::Int8,
            "numeric" | "decimal" => ScalarType::Numeric,
            "float4" | "real" => ScalarType::Float4,
            "float8" | "double precision" => ScalarType::Float8,
            "text" => ScalarType::Text,
            "varchar" | "character varying" => ScalarType::Varchar,
            "bpchar" => ScalarType::Bpchar,
            "name" => ScalarType::Name,
            "bool" | "boolean" => ScalarType::Bool,
            "uuid" => ScalarType::Uuid,
            "date" => ScalarType::Date,
            "timestamp" | "timestamp without time zone" => ScalarType::Timestamp,
            "timestamptz" | "timestamp with time zone" => ScalarType::Timestamptz,
            "jsonb" => ScalarType::Jsonb,
            _ => return None,
        })
    }

    pub(crate) fn sql_name(&self) -> &str {
        match self {
            ScalarType::Int2 => "int2",
            ScalarType::Int4 => "int4",
            ScalarType::Int8 => "int8",
            ScalarType::Numeric => "numeric",
            ScalarType::Float4 => "float4",
            ScalarType::Float8 => "float8",
            ScalarType::Text => "text",
            ScalarType::Varchar => "varchar",
            ScalarType::Bpchar => "bpchar",
            ScalarType::Name => "name",
            ScalarType::Bool => "bool",
            ScalarType::Uuid => "uuid",
            ScalarType::Date => "date",
            ScalarType::Timestamp => "timestamp",
            ScalarType::Timestamptz => "timestamptz",
            ScalarType::Jsonb => "jsonb",
            ScalarType::Other(n) => n,
        }
    }

    pub(crate) fn is_int(&self) -> bool {
        matches!(self, ScalarType::Int2 | ScalarType::Int4 | ScalarType::Int8)
    }

    pub(crate) fn is_numeric_family(&self) -> bool {
        self.is_int() || matches!(self, ScalarType::Numeric | ScalarType::Float4 | ScalarType::Float8)
    }

    pub(crate) fn is_text_like(&self) -> bool {
        matches!(self, ScalarType::Text | ScalarType::Varchar | ScalarType::Bpchar | ScalarType::Name)
    }

    pub(crate) fn is_datetime(&self) -> bool {
        matches!(self, ScalarType::Date | ScalarType::Timestamp | ScalarType::Timestamptz)
    }
}

impl fmt::Display for PgType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.scalar {
            // Other names come from the catalog and are rendered quoted in SQL, never here.
            ScalarType::Other(n) => write!(f, "{n}")?,
            s => f.write_str(s.sql_name())?,
        }
        if self.array {
            f.write_str("[]")?;
        }
        Ok(())
    }
}

/// The columns of one table, in table order, with their types. Rows handed to the evaluator
/// list their values in this same order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TableSchema {
    columns: Vec<(String, PgType)>,
}

impl TableSchema {
    /// Columns as `(name, type name)` pairs; type names as in [`PgType::from_name`].
    pub fn new<N: Into<String>, T: AsRef<str>>(columns: impl IntoIterator<Item = (N, T)>) -> Self {
        Self { columns: columns.into_iter().map(|(n, t)| (n.into(), PgType::from_name(t.as_ref()))).collect() }
    }

    pub fn from_types(columns: impl IntoIterator<Item = (String, PgType)>) -> Self {
        Self { columns: columns.into_iter().collect() }
    }

    pub fn columns(&self) -> &[(String, PgType)] {
        &self.columns
    }

    pub(crate) fn lookup(&self, name: &str) -> Option<(usize, &PgType)> {
        self.columns.iter().position(|(n, _)| n == name).map(|i| (i, &self.columns[i].1))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn catalog_and_sql_spellings() {
        assert_eq!(PgType::from_name("_int4"), PgType::array_of(ScalarType::Int4));
        assert_eq!(PgType::from_name("text[]"), PgType::array_of(ScalarType::Text));
        assert_eq!(PgType::from_name("character varying(255)"), PgType::scalar(ScalarType::Varchar));
        assert_eq!(PgType::from_name("timestamp(3) with time zone"), PgType::scalar(ScalarType::Timestamptz));
        assert_eq!(PgType::from_name("numeric(10,2)"), PgType::scalar(ScalarType::Numeric));
        assert_eq!(PgType::from_name("character(3)"), PgType::scalar(ScalarType::Bpchar));
        assert_eq!(PgType::from_name("proposal_status"), PgType::scalar(ScalarType::Other("proposal_status".into())));
    }
}
