//! File names a proposal's PDFs are offered under: the same in a download and an attachment.

/// `"Website redesign — phase 2"` → `"website-redesign---phase-2"`: ASCII only, so it is safe
/// in a `Content-Disposition` header without encoding.
pub fn slug(title: &str) -> String {
    let s: String =
        title.chars().map(|c| if c.is_ascii_alphanumeric() { c.to_ascii_lowercase() } else { '-' }).take(60).collect();
    let s = s.trim_matches('-').to_owned();
    if s.is_empty() { "proposal".to_owned() } else { s }
}

/// The signed copy of version `version` of a proposal titled `title`.
pub fn signed_copy(title: &str, version: i64) -> String {
    format!("{}-v{version}-signed.pdf", slug(title))
}

#[cfg(test)]
mod tests {
    #[test]
    fn titles_become_safe_file_names() {
        assert_eq!(super::slug("Website redesign: phase 2"), "website-redesign--phase-2");
        assert_eq!(super::slug("Überblick"), "berblick");
        assert_eq!(super::slug("«»"), "proposal");
        assert_eq!(super::slug("Website redesign, 2027!"), "website-redesign--2027");
        assert_eq!(super::signed_copy("Audit", 3), "audit-v3-signed.pdf");
    }
}
