//! Canonical stream paths, the routes they name, and subscription patterns.
//!
//! axum hands the handler the request path as sent, still percent-encoded, and the store keys
//! a stream by those exact bytes. So one stream must have one spelling: a path is accepted only
//! in its canonical form (no percent-encoding at all, no empty or dot segments, the reserved
//! first segments only in their exact lower-case spelling), and everything else is refused
//! rather than normalised, so `PROPOSALS/…`, `proposals%2F…` or `//proposals/…` can never be
//! created as look-alikes of a proposal's activity stream.
//!
//! Streams of an agency live under `agencies/<agency-uuid>/<name…>`; the proposal activity
//! streams keep `proposals/<id>/activity` and the reserved APIs `__ds/…`.

use folio_domain::AgencyId;

/// Longest stream path (after `/v1/stream/`), in bytes.
pub const MAX_PATH_BYTES: usize = 1024;

/// The first segment of the agency namespaces.
pub const AGENCIES: &str = "agencies";
/// The first segment of the proposal activity streams.
pub const PROPOSALS: &str = "proposals";
/// The first segment of the reserved subscription APIs.
pub const RESERVED_APIS: &str = "__ds";

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PathError {
    #[error("the stream path is empty")]
    Empty,
    #[error("the stream path is longer than {MAX_PATH_BYTES} bytes")]
    TooLong,
    #[error("the stream path has an empty segment (`//`, or a leading or trailing `/`)")]
    EmptySegment,
    #[error("the stream path has a `.` or `..` segment")]
    DotSegment,
    #[error("stream paths use letters, digits, `-`, `_`, `.` and `~` between `/` separators, never percent-encoding")]
    Character,
    #[error("`{0}` is reserved: only `{1}` in exactly that spelling is served")]
    ReservedVariant(String, &'static str),
    #[error("`{0}/…` is reserved and not a stream that can be created, forked or subscribed to")]
    Reserved(String),
    #[error("an agency's stream is agencies/<agency-id>/<name>, with the agency id as a lower-case UUID")]
    Namespace,
    #[error("subscription patterns use the stream path characters plus `*` between `/` separators")]
    PatternCharacter,
    #[error("malformed percent-encoding")]
    PercentEncoding,
}

/// What a request path after `/v1/stream/` addresses.
#[derive(Debug, PartialEq, Eq)]
pub enum Route<'a> {
    /// `__ds/<rest>`: the reserved subscription APIs (they check their own parts).
    ReservedApis(&'a str),
    /// `proposals/<rest>`: the read-only proposal activity streams (their own parser).
    Activity(&'a str),
    Stream(StreamPath),
}

impl<'a> Route<'a> {
    /// Routes the raw (still percent-encoded) path; refuses any spelling that is not canonical.
    pub fn parse(raw: &'a str) -> Result<Self, PathError> {
        let (first, rest) = raw.split_once('/').unwrap_or((raw, ""));
        match first {
            RESERVED_APIS => Ok(Route::ReservedApis(rest)),
            PROPOSALS => Ok(Route::Activity(rest)),
            _ => StreamPath::parse(raw).map(Route::Stream),
        }
    }
}

/// The segments of a path (or, with `glob`, a pattern), each in its canonical spelling.
fn checked_segments(raw: &str, glob: bool) -> Result<Vec<&str>, PathError> {
    if raw.is_empty() {
        return Err(PathError::Empty);
    }
    if raw.len() > MAX_PATH_BYTES {
        return Err(PathError::TooLong);
    }
    let segments: Vec<&str> = raw.split('/').collect();
    for segment in &segments {
        check_segment(segment, glob)?;
    }
    Ok(segments)
}

/// A stream path in its one canonical spelling, as the store keys it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StreamPath {
    path: String,
    namespace: Option<AgencyId>,
}

impl StreamPath {
    pub fn parse(raw: &str) -> Result<Self, PathError> {
        let segments = checked_segments(raw, false)?;
        let first = segments[0];
        for reserved in [RESERVED_APIS, PROPOSALS, AGENCIES] {
            if first != reserved && first.eq_ignore_ascii_case(reserved) {
                return Err(PathError::ReservedVariant(first.to_owned(), reserved));
            }
        }
        // `__ds` is the reserved APIs' root, and other `__` roots are kept for future ones.
        if first == PROPOSALS || first.starts_with("__") {
            return Err(PathError::Reserved(first.to_owned()));
        }
        let namespace = if first == AGENCIES {
            match segments.as_slice() {
                [_, agency, _, ..] => Some(canonical_agency(agency).ok_or(PathError::Namespace)?),
                _ => return Err(PathError::Namespace),
            }
        } else {
            None
        };
        Ok(StreamPath { path: raw.to_owned(), namespace })
    }

    /// A stream named inside a header or a body (`Stream-Forked-From`, a subscription's
    /// `streams` or `wake_stream`): the path component of its URL on this server, or the path
    /// itself.
    pub fn from_reference(reference: &str) -> Result<Self, PathError> {
        let reference = reference.split(['?', '#']).next().unwrap_or(reference);
        StreamPath::parse(reference.strip_prefix("/v1/stream/").unwrap_or(reference))
    }

    /// A stream path sent as one percent-encoded URL segment (`…/streams/manual%2Fb`); decoded
    /// once, then it must be canonical like any other (so `%252F` stays refused).
    pub fn from_encoded_segment(segment: &str) -> Result<Self, PathError> {
        StreamPath::parse(&percent_decode(segment)?)
    }

    pub fn as_str(&self) -> &str {
        &self.path
    }

    /// The agency whose namespace holds the stream (`agencies/<id>/…`), if any.
    pub fn namespace(&self) -> Option<AgencyId> {
        self.namespace
    }
}

impl std::fmt::Display for StreamPath {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.path)
    }
}

/// The namespace of a stream path that is already canonical (a stored or written stream's),
/// without the allocations of a full parse: this runs for every subscription on every write.
pub fn namespace_of(path: &str) -> Option<AgencyId> {
    let mut segments = path.splitn(3, '/');
    if segments.next() != Some(AGENCIES) {
        return None;
    }
    let agency = segments.next()?;
    segments.next()?;
    AgencyId::parse(agency).ok()
}

/// A subscription's glob (`*` within a segment, `**` across segments), checked like a path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pattern {
    pattern: String,
    confined_to: Option<AgencyId>,
}

impl Pattern {
    pub fn parse(raw: &str) -> Result<Self, PathError> {
        let segments = checked_segments(raw, true)?;
        // Only a literal `agencies/<uuid>/` prefix confines the matches: the glob never lets a
        // literal byte match anything but itself.
        let confined_to = match segments.as_slice() {
            [AGENCIES, agency, _, ..] => canonical_agency(agency),
            _ => None,
        };
        Ok(Pattern { pattern: raw.to_owned(), confined_to })
    }

    pub fn as_str(&self) -> &str {
        &self.pattern
    }

    /// The one agency namespace every path this pattern can match lies in, if there is one.
    pub fn confined_to(&self) -> Option<AgencyId> {
        self.confined_to
    }
}

fn check_segment(segment: &str, glob: bool) -> Result<(), PathError> {
    if segment.is_empty() {
        return Err(PathError::EmptySegment);
    }
    if segment == "." || segment == ".." {
        return Err(PathError::DotSegment);
    }
    // RFC 3986's unreserved characters: they never need percent-encoding, so a canonical path
    // has exactly one spelling; `*` is the glob's, so never part of a stream's name.
    let ok = |c: u8| c.is_ascii_alphanumeric() || matches!(c, b'-' | b'_' | b'.' | b'~') || (glob && c == b'*');
    if segment.bytes().all(ok) {
        Ok(())
    } else if glob {
        Err(PathError::PatternCharacter)
    } else {
        Err(PathError::Character)
    }
}

/// The agency of a namespace segment, only in the UUID's canonical (lower-case, hyphenated)
/// spelling, so one namespace has one name.
fn canonical_agency(segment: &str) -> Option<AgencyId> {
    AgencyId::parse(segment).ok().filter(|a| a.to_string() == segment)
}

fn percent_decode(s: &str) -> Result<String, PathError> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' {
            let v = b
                .get(i + 1..i + 3)
                .and_then(|h| std::str::from_utf8(h).ok())
                .and_then(|h| u8::from_str_radix(h, 16).ok())
                .ok_or(PathError::PercentEncoding)?;
            out.push(v);
            i += 3;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8(out).map_err(|_| PathError::PercentEncoding)
}

#[cfg(test)]
mod tests {
    use super::*;

    const AGENCY: &str = "0190a0d4-7a3b-7c2e-9f00-1234567890ab";

    #[test]
    fn canonical_paths_route_and_carry_their_namespace() {
        let p = StreamPath::parse(&format!("agencies/{AGENCY}/orders/2024")).unwrap();
        assert_eq!(p.namespace().map(|a| a.to_string()).as_deref(), Some(AGENCY));
        assert_eq!(StreamPath::parse("chat-1/a_b.c~d").unwrap().namespace(), None);
        assert_eq!(Route::parse("__ds/subscriptions/x"), Ok(Route::ReservedApis("subscriptions/x")));
        assert_eq!(Route::parse("__ds"), Ok(Route::ReservedApis("")));
        assert_eq!(Route::parse("proposals/abc/activity"), Ok(Route::Activity("abc/activity")));
        assert_eq!(Route::parse("proposals"), Ok(Route::Activity("")));
        assert!(matches!(Route::parse("events/1"), Ok(Route::Stream(_))));
    }

    #[test]
    fn look_alikes_and_non_canonical_spellings_are_refused() {
        let id = "0190a0d4-7a3b-7c2e-9f00-1234567890ab";
        for (raw, expected) in [
            (format!("PROPOSALS/{id}/activity"), PathError::ReservedVariant("PROPOSALS".into(), PROPOSALS)),
            (format!("Proposals/{id}/activity"), PathError::ReservedVariant("Proposals".into(), PROPOSALS)),
            (format!("proposals%2F{id}%2Factivity"), PathError::Character),
            (format!("/proposals/{id}/activity"), PathError::EmptySegment),
            (format!("agencies/{AGENCY}/../../proposals/{id}/activity"), PathError::DotSegment),
            ("a//b".into(), PathError::EmptySegment),
            ("a/".into(), PathError::EmptySegment),
            ("a/./b".into(), PathError::DotSegment),
            ("%61bc".into(), PathError::Character),
            ("a%252Fb".into(), PathError::Character),
            ("a b".into(), PathError::Character),
            ("a*".into(), PathError::Character),
            ("__DS/subscriptions".into(), PathError::ReservedVariant("__DS".into(), RESERVED_APIS)),
            ("__other/x".into(), PathError::Reserved("__other".into())),
            ("AGENCIES/x/y".into(), PathError::ReservedVariant("AGENCIES".into(), AGENCIES)),
            (format!("agencies/{}/x", AGENCY.to_uppercase()), PathError::Namespace),
            (format!("agencies/{AGENCY}"), PathError::Namespace),
            ("agencies/not-a-uuid/x".into(), PathError::Namespace),
            ("x".repeat(MAX_PATH_BYTES + 1), PathError::TooLong),
            (String::new(), PathError::Empty),
        ] {
            assert_eq!(StreamPath::parse(&raw), Err(expected), "{raw:?}");
        }
        // What routes to the activity or reserved APIs is never a stream of its own.
        assert_eq!(StreamPath::parse("proposals/x/activity"), Err(PathError::Reserved(PROPOSALS.into())));
        assert_eq!(StreamPath::parse("__ds"), Err(PathError::Reserved(RESERVED_APIS.into())));
    }

    #[test]
    fn references_and_encoded_segments_must_be_canonical_too() {
        assert_eq!(StreamPath::from_reference("/v1/stream/a/b?x=1").unwrap().as_str(), "a/b");
        assert_eq!(StreamPath::from_reference("a/b").unwrap().as_str(), "a/b");
        assert_eq!(StreamPath::from_reference("//a/b"), Err(PathError::EmptySegment));
        assert_eq!(
            StreamPath::from_reference("/v1/stream/proposals/x/activity"),
            Err(PathError::Reserved(PROPOSALS.into()))
        );
        assert_eq!(StreamPath::from_encoded_segment("manual%2Fb").unwrap().as_str(), "manual/b");
        assert_eq!(StreamPath::from_encoded_segment("manual%252Fb"), Err(PathError::Character));
        assert_eq!(StreamPath::from_encoded_segment("manual%2"), Err(PathError::PercentEncoding));
    }

    #[test]
    fn only_a_literal_namespace_prefix_confines_a_pattern() {
        let own: AgencyId = AgencyId::parse(AGENCY).unwrap();
        assert_eq!(Pattern::parse(&format!("agencies/{AGENCY}/**")).unwrap().confined_to(), Some(own));
        assert_eq!(Pattern::parse(&format!("agencies/{AGENCY}/orders/*")).unwrap().confined_to(), Some(own));
        for open in ["**", "*", "agencies/**", "agencies/*/x", &format!("agencies/{AGENCY}*/x"), "events/*"] {
            assert_eq!(Pattern::parse(open).unwrap().confined_to(), None, "{open}");
        }
        assert_eq!(Pattern::parse(&format!("agencies/{AGENCY}")).unwrap().confined_to(), None);
        assert_eq!(Pattern::parse("a//*"), Err(PathError::EmptySegment));
        assert_eq!(Pattern::parse("a/../*"), Err(PathError::DotSegment));
        assert_eq!(Pattern::parse("a/%2A"), Err(PathError::PatternCharacter));
    }
}
