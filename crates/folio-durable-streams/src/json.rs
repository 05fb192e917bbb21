//! JSON mode: a POST body is one message, or one message per element of a top-level array;
//! reads return the messages in range as one JSON array. Values are kept as sent (no
//! re-serialization), so object key order and number formatting survive.

use serde_json::value::RawValue;

/// One stored record: the comma-joined values of one append (empty when it carried none).
pub struct Record(pub String);

#[derive(Debug, thiserror::Error)]
pub enum JsonBodyError {
    #[error("body is not valid JSON: {0}")]
    Invalid(#[from] serde_json::Error),
    #[error("empty JSON array: an append needs at least one value")]
    EmptyArray,
}

/// Splits an append body into values; `[]` is allowed only when `allow_empty` (create).
pub fn split_values(body: &[u8], allow_empty: bool) -> Result<Record, JsonBodyError> {
    let text =
        std::str::from_utf8(body).map_err(|_| JsonBodyError::Invalid(serde::de::Error::custom("body is not UTF-8")))?;
    let trimmed = text.trim_start();
    if trimmed.starts_with('[') {
        let values: Vec<&RawValue> = serde_json::from_str(text)?;
        if values.is_empty() && !allow_empty {
            return Err(JsonBodyError::EmptyArray);
        }
        let joined = values.iter().map(|v| v.get()).collect::<Vec<_>>().join(",");
        return Ok(Record(joined));
    }
    let value: &RawValue = serde_json::from_str(text)?;
    Ok(Record(value.get().to_owned()))
}

/// The first `n` values of a stored record, or `None` if it has fewer.
pub fn prefix_values(record: &[u8], n: u64) -> Option<String> {
    let text = std::str::from_utf8(record).ok()?;
    let wrapped = format!("[{text}]");
    let values: Vec<&RawValue> = serde_json::from_str(&wrapped).ok()?;
    if (values.len() as u64) < n {
        return None;
    }
    Some(values[..n as usize].iter().map(|v| v.get()).collect::<Vec<_>>().join(","))
}

/// Wraps stored records into the JSON array a reader receives.
pub fn array_of<'a>(records: impl IntoIterator<Item = &'a [u8]>) -> Vec<u8> {
    let mut out = Vec::with_capacity(64);
    out.push(b'[');
    let mut first = true;
    for r in records {
        if r.is_empty() {
            continue;
        }
        if !first {
            out.push(b',');
        }
        out.extend_from_slice(r);
        first = false;
    }
    out.push(b']');
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flattens_one_level_of_arrays() {
        assert_eq!(split_values(br#"[{"a":1}, {"b":2}]"#, false).unwrap().0, r#"{"a":1},{"b":2}"#);
        assert_eq!(split_values(b"[[1,2],[3,4]]", false).unwrap().0, "[1,2],[3,4]");
        assert_eq!(split_values(b" 7 ", false).unwrap().0, "7");
        assert!(matches!(split_values(b"[]", false), Err(JsonBodyError::EmptyArray)));
        assert_eq!(split_values(b"[]", true).unwrap().0, "");
        assert!(split_values(b"{bad", false).is_err());
        assert_eq!(array_of([&b"1,2"[..], b"", b"3"]), b"[1,2,3]");
        assert_eq!(prefix_values(b"1,[2],3", 2).as_deref(), Some("1,[2]"));
        assert_eq!(prefix_values(b"1", 2), None);
    }
}
