//! The flags every service that touches NATS shares, so they cannot disagree.

use crate::Subjects;

#[derive(Debug, Clone, clap::Args)]
pub struct BusArgs {
    /// NATS server with JetStream (>= 2.11).
    #[arg(long = "nats-url", env = "FOLIO_NATS_URL", default_value = "nats://127.0.0.1:4333")]
    pub nats_url: String,

    /// First token of every subject: `<root>.changes.…`, `<root>.jobs.…`.
    #[arg(long = "subject-root", env = "FOLIO_SUBJECT_ROOT", default_value = "folio", value_parser = parse_token)]
    pub subject_root: String,

    /// JetStream stream holding `<root>.changes.>` (wal-ingest declares it).
    #[arg(long = "changes-stream", env = "FOLIO_CHANGES_STREAM", default_value = "FOLIO_CHANGES", value_parser = parse_token)]
    pub changes_stream: String,

    /// JetStream work-queue stream holding `<root>.jobs.>` (wal-ingest declares it).
    #[arg(long = "jobs-stream", env = "FOLIO_JOBS_STREAM", default_value = "FOLIO_JOBS", value_parser = parse_token)]
    pub jobs_stream: String,

    /// Replicas of every stream, bucket and dead-letter stream Folio declares: 1 on a single
    /// node, 3 on a cluster (acks then wait for a quorum).
    #[arg(long = "stream-replicas", env = "FOLIO_STREAM_REPLICAS", default_value_t = 1)]
    pub stream_replicas: usize,

    /// JetStream Object Store bucket of rendered PDFs (pdf-render writes, the API reads).
    #[arg(long = "pdf-bucket", env = "FOLIO_PDF_BUCKET", default_value = "folio-pdfs", value_parser = parse_token)]
    pub pdf_bucket: String,
}

impl BusArgs {
    pub fn subjects(&self) -> Subjects {
        Subjects::new(self.subject_root.clone())
    }

    /// Names for one test or benchmark run: subjects under `<root>`, streams
    /// `<stream_prefix>_CHANGES` and `<stream_prefix>_JOBS`, bucket `pdfs_<stream_prefix>`.
    pub fn for_names(nats_url: &str, root: &str, prefix: &str) -> Self {
        BusArgs {
            nats_url: nats_url.to_owned(),
            subject_root: root.to_owned(),
            changes_stream: format!("{prefix}_CHANGES"),
            jobs_stream: format!("{prefix}_JOBS"),
            stream_replicas: 1,
            pdf_bucket: format!("pdfs_{prefix}"),
        }
    }
}

/// Subject tokens and stream names: letters, digits, `_` and `-` only.
pub fn parse_token(s: &str) -> Result<String, String> {
    if !s.is_empty() && s.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-') {
        Ok(s.to_owned())
    } else {
        Err(format!("{s:?} must be letters, digits, '_' or '-'"))
    }
}
