//! The tenant rule: which column of a table holds the agency a row belongs to. wal-ingest puts
//! that value in the subject; the edge pins shapes to the caller's agency by the same column.

/// Rows of every tenant-scoped table carry their agency here.
pub const TENANT_COLUMN: &str = "agency_id";
/// The one table whose own `id` is the tenant.
pub const TENANT_TABLE: (&str, &str) = ("public", "agencies");

/// Index of the tenant column among `columns` (in table order), if the table has one.
pub fn tenant_column<'a>(schema: &str, table: &str, columns: impl IntoIterator<Item = &'a str>) -> Option<usize> {
    let wanted = if (schema, table) == TENANT_TABLE { "id" } else { TENANT_COLUMN };
    columns.into_iter().position(|c| c == wanted)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn agencies_are_their_own_tenant_and_other_tables_use_agency_id() {
        assert_eq!(tenant_column("public", "agencies", ["name", "id"]), Some(1));
        assert_eq!(tenant_column("public", "clients", ["id", "agency_id"]), Some(1));
        assert_eq!(tenant_column("billing", "agencies", ["id"]), None);
        assert_eq!(tenant_column("public", "notes", ["id", "body"]), None);
    }
}
