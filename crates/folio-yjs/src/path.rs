//! The Yjs URL, `/v1/yjs/{service}/docs/{docPath}[?awareness=<name>]`, and the Durable Streams
//! a document is stored in.
//!
//! Stream layout (the reference server's, so the DS API sees the same names):
//! `<base>/.updates` is the update log and `<base>/.awareness/<name>` an awareness stream, where
//! `<base>` is `agencies/<service>/yjs/docs/<docPath>` when `{service}` is an agency id (the
//! agency's own namespace: the DS access rules then decide who may read, write and delete), and
//! `yjs/<service>/docs/<docPath>` otherwise, a path outside every namespace that only an open
//! edge (`--ds-open`, the conformance suite) serves. `.`-prefixed segments cannot collide with
//! a document path, which never has one.

use folio_domain::{AgencyId, ProposalId};
use folio_durable_streams::path::StreamPath;

/// Longest document path (after percent-decoding), as in the reference server.
pub const MAX_DOC_PATH: usize = 256;
/// Longest `{service}` segment and awareness name.
const MAX_NAME: usize = 64;

/// The awareness stream clients use (the provider has no option for another).
pub const DEFAULT_AWARENESS: &str = "default";

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum YjsPathError {
    #[error("Invalid document path")]
    DocPath,
    #[error("Invalid service name")]
    Service,
    #[error("Invalid awareness stream name")]
    AwarenessName,
    /// `proposals/…` in an agency's namespace names exactly one proposal.
    #[error("Invalid proposal document path: proposals/<proposal id>")]
    ProposalPath,
}

/// One document, as addressed by a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DocAddress {
    service: String,
    doc_path: String,
    base: String,
    proposal: Option<(AgencyId, ProposalId)>,
}

/// The first segment of a proposal's document path in its agency's namespace:
/// `/v1/yjs/<agency id>/docs/proposals/<proposal id>`.
pub const PROPOSALS: &str = "proposals";

impl DocAddress {
    /// The path after `/v1/yjs/`, still percent-encoded as sent.
    pub fn parse(raw_path: &str) -> Result<Self, YjsPathError> {
        // Dot segments in the URL as sent are refused before any decoding, as by the reference.
        if raw_path.contains("/..") || raw_path.contains("/./") || raw_path.ends_with("/.") {
            return Err(YjsPathError::DocPath);
        }
        let rest = raw_path.strip_prefix("/v1/yjs/").ok_or(YjsPathError::DocPath)?;
        let (service, doc) = rest.split_once("/docs/").ok_or(YjsPathError::DocPath)?;
        if !is_name(service) {
            return Err(YjsPathError::Service);
        }
        let decoded = percent_decode(doc).ok_or(YjsPathError::DocPath)?;
        let segments: Vec<&str> = decoded.split('/').filter(|s| !s.is_empty()).collect();
        let ok = |s: &&str| {
            *s != "." && *s != ".." && s.bytes().all(|c| c.is_ascii_alphanumeric() || c == b'_' || c == b'-')
        };
        if segments.is_empty() || !segments.iter().all(ok) {
            return Err(YjsPathError::DocPath);
        }
        let doc_path = segments.join("/");
        if doc_path.len() > MAX_DOC_PATH {
            return Err(YjsPathError::DocPath);
        }
        let agency = folio_durable_streams::path::namespace_of(&format!("agencies/{service}/x"))
            // Only the canonical (lower-case) spelling of an agency id names its namespace.
            .filter(|agency| agency.to_string() == service);
        let (base, proposal) = match agency {
            Some(agency) => {
                let proposal = match segments.as_slice() {
                    [PROPOSALS, id] => Some((agency, canonical_proposal(id).ok_or(YjsPathError::ProposalPath)?)),
                    [PROPOSALS, ..] => return Err(YjsPathError::ProposalPath),
                    _ => None,
                };
                (format!("agencies/{service}/yjs/docs/{doc_path}"), proposal)
            }
            None => (format!("yjs/{service}/docs/{doc_path}"), None),
        };
        Ok(DocAddress { service: service.to_owned(), doc_path, base, proposal })
    }

    /// The document of `proposal` in `agency`'s namespace.
    pub fn of_proposal(agency: AgencyId, proposal: ProposalId) -> Self {
        DocAddress::parse(&format!("/v1/yjs/{agency}/docs/{PROPOSALS}/{proposal}"))
            .expect("an agency id and a proposal id make a proposal document's path")
    }

    /// The proposal whose document this is (`proposals/<id>` in the agency's namespace).
    pub fn proposal(&self) -> Option<(AgencyId, ProposalId)> {
        self.proposal
    }

    pub fn doc_path(&self) -> &str {
        &self.doc_path
    }

    pub fn service(&self) -> &str {
        &self.service
    }

    /// The update log's stream.
    pub fn updates(&self) -> StreamPath {
        self.stream(".updates")
    }

    /// The awareness stream `name` (checked with [`check_awareness_name`]).
    pub fn awareness(&self, name: &str) -> StreamPath {
        self.stream(&format!(".awareness/{name}"))
    }

    fn stream(&self, suffix: &str) -> StreamPath {
        // Built from checked parts only: every segment is in the DS path alphabet and the whole
        // is far below its length limit, so this cannot fail.
        StreamPath::parse(&format!("{}/{suffix}", self.base)).expect("a checked document path is a stream path")
    }
}

/// One spelling per proposal (lower-case), so a document is never reachable under two paths.
fn canonical_proposal(segment: &str) -> Option<ProposalId> {
    ProposalId::parse(segment).ok().filter(|id| id.to_string() == segment)
}

/// Awareness names address a stream of their own, so they are checked like path segments
/// (the reference server does not, and `../.updates` would reach the update log).
pub fn check_awareness_name(name: &str) -> Result<(), YjsPathError> {
    if is_name(name) { Ok(()) } else { Err(YjsPathError::AwarenessName) }
}

fn is_name(s: &str) -> bool {
    !s.is_empty() && s.len() <= MAX_NAME && s.bytes().all(|c| c.is_ascii_alphanumeric() || c == b'_' || c == b'-')
}

pub fn percent_decode(s: &str) -> Option<String> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' {
            let hex = std::str::from_utf8(b.get(i + 1..i + 3)?).ok()?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn documents_map_to_streams_in_their_namespace() {
        let d = DocAddress::parse("/v1/yjs/test/docs/project-1/chapter-1/section-a").unwrap();
        assert_eq!(d.doc_path(), "project-1/chapter-1/section-a");
        assert_eq!(d.updates().as_str(), "yjs/test/docs/project-1/chapter-1/section-a/.updates");
        assert_eq!(d.updates().namespace(), None);
        assert_eq!(d.awareness("default").as_str(), "yjs/test/docs/project-1/chapter-1/section-a/.awareness/default");
        let agency = "0190a0d4-7a3b-7c2e-9f00-1234567890ab";
        let d = DocAddress::parse(&format!("/v1/yjs/{agency}/docs/p//q")).unwrap();
        assert_eq!(d.updates().as_str(), format!("agencies/{agency}/yjs/docs/p/q/.updates"));
        assert_eq!(d.updates().namespace().map(|a| a.to_string()).as_deref(), Some(agency));
        let upper = DocAddress::parse(&format!("/v1/yjs/{}/docs/p", agency.to_uppercase())).unwrap();
        assert_eq!(upper.updates().namespace(), None);
    }

    #[test]
    fn a_proposal_document_names_one_proposal_of_the_agency() {
        let agency = "0190a0d4-7a3b-7c2e-9f00-1234567890ab";
        let proposal = "0190a0d4-7a3b-7c2e-9f00-00000000cafe";
        let d = DocAddress::parse(&format!("/v1/yjs/{agency}/docs/proposals/{proposal}")).unwrap();
        let (a, p) = d.proposal().unwrap();
        assert_eq!((a.to_string().as_str(), p.to_string().as_str()), (agency, proposal));
        assert_eq!(d.updates().as_str(), format!("agencies/{agency}/yjs/docs/proposals/{proposal}/.updates"));
        for bad in [
            format!("proposals/{}", proposal.to_uppercase()),
            "proposals/not-an-id".to_owned(),
            format!("proposals/{proposal}/extra"),
            "proposals".to_owned(),
        ] {
            assert_eq!(
                DocAddress::parse(&format!("/v1/yjs/{agency}/docs/{bad}")),
                Err(YjsPathError::ProposalPath),
                "{bad}"
            );
        }
        // Other documents of the agency, and `proposals/…` outside every namespace, are plain.
        assert_eq!(DocAddress::parse(&format!("/v1/yjs/{agency}/docs/notes/{proposal}")).unwrap().proposal(), None);
        assert_eq!(DocAddress::parse("/v1/yjs/test/docs/proposals/x").unwrap().proposal(), None);
    }

    #[test]
    fn dot_segments_and_foreign_characters_are_refused() {
        for bad in [
            "/v1/yjs/test/docs/foo%2F..%2Fbar",
            "/v1/yjs/test/docs/foo%2F.%2Fbar",
            "/v1/yjs/test/docs/foo/../bar",
            "/v1/yjs/test/docs/foo/./bar",
            "/v1/yjs/test/docs/foo/.",
            "/v1/yjs/test/docs/",
            "/v1/yjs/test/docs/a.b",
            "/v1/yjs/test/docs/a%20b",
            "/v1/yjs/test/docs/%zz",
            "/v1/yjs/test/other/a",
            "/v1/yjs/test",
        ] {
            assert_eq!(DocAddress::parse(bad), Err(YjsPathError::DocPath), "{bad}");
        }
        assert_eq!(DocAddress::parse("/v1/yjs/te.st/docs/a"), Err(YjsPathError::Service));
        assert_eq!(DocAddress::parse(&format!("/v1/yjs/test/docs/{}", "a".repeat(257))), Err(YjsPathError::DocPath));
        assert!(check_awareness_name("cursors").is_ok());
        for bad in ["", "../.updates", ".index", "a/b", &"a".repeat(65)] {
            assert!(check_awareness_name(bad).is_err(), "{bad}");
        }
    }
}
