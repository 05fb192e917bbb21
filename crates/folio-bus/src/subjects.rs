//! Every NATS subject of Folio's change and job streams, and the one reversible encoding of
//! table names into subject tokens. Nothing else in the workspace builds a subject.
//!
//! - `<root>.changes.<table>.<tenant>`: row changes of one tenant (`_` when the table has no
//!   tenant column);
//! - `<root>.changes.<table>._all`: table-wide events (truncate, schema change, re-snapshot
//!   required), which every tenant-scoped consumer also subscribes to;
//! - `<root>.changes.<table>._txn`: `TRANSACTION_END` markers, for consumers that follow a whole
//!   table (`<table>.>`); kept off `_all` so a tenant-scoped consumer never sees them and "the
//!   table's latest table-wide event" stays a truncate or schema change;
//! - `<root>.jobs.<kind>`: jobs emitted with `pg_logical_emit_message(true, 'folio.jobs.<kind>', ..)`.
//!
//! A table token is the table name for the `public` schema and `<schema>~~<table>` otherwise.
//! Each name keeps `[A-Za-z0-9_-]` and writes every other byte as `~XX` (upper-case hex), so
//! dots, spaces, quotes, wildcards and non-ASCII never leak into the subject syntax. `~` always
//! starts a three-byte escape, so `~~` cannot occur inside an encoded name and separates the
//! schema unambiguously.

const ROW_LESS_TENANT: &str = "_";
/// Prefix of the logical messages (`pg_logical_emit_message(true, 'folio.jobs.<kind>', …)`)
/// that are jobs; fixed whatever the subject root.
pub const JOB_MESSAGE_PREFIX: &str = "folio.jobs.";

/// The logical message prefix a transaction writes to request a job of `kind`.
pub fn job_message_prefix(kind: &str) -> String {
    format!("{JOB_MESSAGE_PREFIX}{kind}")
}
const TABLE_WIDE: &str = "_all";
const TRANSACTION_ENDS: &str = "_txn";

#[derive(Debug, Clone)]
pub struct Subjects {
    root: String,
}

impl Subjects {
    pub fn new(root: impl Into<String>) -> Self {
        Self { root: root.into() }
    }

    pub fn root(&self) -> &str {
        &self.root
    }

    /// Filter of the changes stream.
    pub fn changes_filter(&self) -> String {
        format!("{}.changes.>", self.root)
    }

    /// Filter of the jobs stream.
    pub fn jobs_filter(&self) -> String {
        format!("{}.jobs.>", self.root)
    }

    /// Every subject of one table (row and table-wide events).
    pub fn table_filter(&self, schema: &str, table: &str) -> String {
        format!("{}.changes.{}.>", self.root, table_token(schema, table))
    }

    pub fn row(&self, schema: &str, table: &str, tenant: Option<&str>) -> String {
        Self::row_from_prefix(&self.row_prefix(schema, table), tenant)
    }

    /// `<root>.changes.<table>.`: computed once per table by callers on the hot path.
    pub fn row_prefix(&self, schema: &str, table: &str) -> String {
        format!("{}.changes.{}.", self.root, table_token(schema, table))
    }

    pub fn row_from_prefix(prefix: &str, tenant: Option<&str>) -> String {
        let mut subject = String::with_capacity(prefix.len() + 40);
        subject.push_str(prefix);
        match tenant {
            Some(t) => subject.push_str(&tenant_token(t)),
            None => subject.push_str(ROW_LESS_TENANT),
        }
        subject
    }

    pub fn table_wide(&self, schema: &str, table: &str) -> String {
        format!("{}.changes.{}.{TABLE_WIDE}", self.root, table_token(schema, table))
    }

    pub fn transaction_ends(&self, schema: &str, table: &str) -> String {
        format!("{}.changes.{}.{TRANSACTION_ENDS}", self.root, table_token(schema, table))
    }

    /// The work queue of one job kind, `<root>.jobs.<kind>`, as its worker consumes it.
    pub fn jobs(&self, kind: &str) -> String {
        format!("{}.jobs.{kind}", self.root)
    }

    /// Where a worker parks the jobs of `kind` it could not do, `<root>.dead.<kind>`.
    pub fn dead_letters(&self, kind: &str) -> String {
        format!("{}.dead.{kind}", self.root)
    }

    /// JetStream's direct-get API of `stream` (a server subject, outside `<root>`): reads by
    /// sequence from any replica without a consumer.
    pub fn direct_get(stream: &str) -> String {
        format!("$JS.API.DIRECT.GET.{stream}")
    }

    /// Where JetStream announces that `consumer` of `stream` gave up on a message after its
    /// last delivery (a server subject, outside `<root>`).
    pub fn max_deliveries_advisory(stream: &str, consumer: &str) -> String {
        format!("$JS.EVENT.ADVISORY.CONSUMER.MAX_DELIVERIES.{stream}.{consumer}")
    }

    /// The job subject for a logical message prefix, or `None` if the prefix is not a job.
    pub fn job(&self, prefix: &str) -> Option<String> {
        let kind = prefix.strip_prefix(JOB_MESSAGE_PREFIX)?;
        if kind.is_empty() {
            return None;
        }
        // A kind may name a hierarchy (`pdf.render`): keep its dots, encode everything else.
        let tokens: Vec<String> = kind.split('.').map(encode_name).collect();
        if tokens.iter().any(String::is_empty) {
            return None;
        }
        Some(format!("{}.jobs.{}", self.root, tokens.join(".")))
    }
}

/// `_` and `_all` are reserved in the tenant position, so a tenant value starting with `_` has
/// that byte escaped.
fn tenant_token(tenant: &str) -> String {
    let encoded = encode_name(tenant);
    match encoded.strip_prefix('_') {
        Some(rest) => format!("~5F{rest}"),
        None => encoded,
    }
}

pub fn table_token(schema: &str, table: &str) -> String {
    if schema == "public" { encode_name(table) } else { format!("{}~~{}", encode_name(schema), encode_name(table)) }
}

/// Inverse of [`table_token`]: `(schema, table)`.
pub fn parse_table_token(token: &str) -> Option<(String, String)> {
    match token.split_once("~~") {
        Some((schema, table)) => Some((decode_name(schema)?, decode_name(table)?)),
        None => Some(("public".to_owned(), decode_name(token)?)),
    }
}

pub fn encode_name(name: &str) -> String {
    let mut out = String::with_capacity(name.len());
    for &b in name.as_bytes() {
        if b.is_ascii_alphanumeric() || b == b'_' || b == b'-' {
            out.push(b as char);
        } else {
            out.push('~');
            out.push(char::from(HEX[usize::from(b >> 4)]));
            out.push(char::from(HEX[usize::from(b & 0xf)]));
        }
    }
    out
}

const HEX: &[u8; 16] = b"0123456789ABCDEF";

pub fn decode_name(token: &str) -> Option<String> {
    let bytes = token.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'~' {
            let hex = token.get(i + 1..i + 3)?;
            if !hex.bytes().all(|c| c.is_ascii_digit() || (b'A'..=b'F').contains(&c)) {
                return None;
            }
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            let b = bytes[i];
            if !(b.is_ascii_alphanumeric() || b == b'_' || b == b'-') {
                return None;
            }
            out.push(b);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    const AWKWARD: &[&str] = &[
        "proposals",
        "line_items",
        "My Table",
        "a.b",
        "say \"hi\"",
        "it's",
        "~",
        "~~",
        "a~~b",
        "*",
        ">",
        "tab\there",
        "ünïcødé",
        "x-y",
        "_all",
        "~5F",
    ];

    #[test]
    fn table_tokens_round_trip_and_stay_one_token() {
        for schema in ["public", "Sales.EU", "~", "a~~b", "x y"] {
            for table in AWKWARD {
                let token = table_token(schema, table);
                assert!(!token.is_empty());
                assert!(token.bytes().all(|b| b.is_ascii_alphanumeric() || b"_-~".contains(&b)), "{token}");
                assert_eq!(parse_table_token(&token), Some((schema.to_owned(), (*table).to_owned())), "{token}");
            }
        }
    }

    #[test]
    fn tokens_are_injective() {
        let mut seen = std::collections::HashMap::new();
        for schema in ["public", "a", "a~~b", "a.b", "~"] {
            for table in AWKWARD {
                let token = table_token(schema, table);
                if let Some(prev) = seen.insert(token.clone(), (schema, *table)) {
                    panic!("{token} from both {prev:?} and {:?}", (schema, table));
                }
            }
        }
    }

    #[test]
    fn subjects_have_the_documented_shape() {
        let s = Subjects::new("folio");
        assert_eq!(s.row("public", "proposals", Some("0b6c")), "folio.changes.proposals.0b6c");
        assert_eq!(s.row("public", "proposals", None), "folio.changes.proposals._");
        assert_eq!(s.row("public", "proposals", Some("_all")), "folio.changes.proposals.~5Fall");
        assert_eq!(s.table_wide("billing", "My Table"), "folio.changes.billing~~My~20Table._all");
        assert_eq!(s.transaction_ends("public", "proposals"), "folio.changes.proposals._txn");
        assert_eq!(s.job("folio.jobs.pdf").as_deref(), Some("folio.jobs.pdf"));
        assert_eq!(s.job("folio.jobs.pdf.render").as_deref(), Some("folio.jobs.pdf.render"));
        assert_eq!(s.job("folio.jobs.").as_deref(), None);
        assert_eq!(s.job("folio.jobs.a..b").as_deref(), None);
        assert_eq!(s.job("other.prefix"), None);
        assert_eq!(Subjects::new("t1").job("folio.jobs.pdf").as_deref(), Some("t1.jobs.pdf"));
    }

    #[test]
    fn decode_rejects_malformed_tokens() {
        for bad in ["~", "~4", "~4g", "a.b", "a b", "~ff"] {
            assert_eq!(decode_name(bad), None, "{bad}");
        }
    }
}
