//! Building a snapshot with `yrs`: a document's previous snapshot plus every update appended
//! after it, replayed into one `yrs::Doc` and encoded as one Yjs v1 update. Pure and
//! blocking: the compactor runs it on a blocking thread.

use yrs::encoding::read::{Cursor, Read};
use yrs::updates::decoder::Decode;
use yrs::updates::encoder::Encode;
use yrs::{Doc, GetString, OffsetKind, Options, ReadTxn, StateVector, Text, Transact, Update};

/// A snapshot that cannot be read: the stored previous snapshot is not a Yjs v1 update.
#[derive(Debug, thiserror::Error)]
#[error("the previous snapshot is not a Yjs update")]
pub struct CorruptSnapshot(#[source] pub Box<dyn std::error::Error + Send + Sync>);

/// A new snapshot and what went into it.
pub struct Compacted {
    /// The whole document as one raw (unframed) Yjs v1 update.
    pub snapshot: Vec<u8>,
    /// Its state vector (v1 encoding).
    pub state_vector: Vec<u8>,
    /// Frames that did not decode or integrate (a broken client's bytes); they are left out.
    pub skipped: usize,
}

/// `previous`: the current snapshot, if any. `messages`: the update log's messages after it,
/// oldest first, each one POST body of lib0-framed v1 updates.
pub fn compact<M: AsRef<[u8]>>(previous: Option<&[u8]>, messages: &[M]) -> Result<Compacted, CorruptSnapshot> {
    let Replayed { doc, skipped } = replay(previous, messages)?;
    let txn = doc.transact();
    Ok(Compacted {
        snapshot: txn.encode_state_as_update_v1(&StateVector::default()),
        state_vector: txn.state_vector().encode_v1(),
        skipped,
    })
}

/// A document rebuilt from its snapshot and log.
pub struct Replayed {
    pub doc: Doc,
    /// Frames that did not decode or integrate.
    pub skipped: usize,
}

/// Replays a snapshot and the messages after it into one `yrs::Doc` (see [`compact`]). Text
/// offsets of the doc count UTF-8 bytes.
pub fn replay<M: AsRef<[u8]>>(previous: Option<&[u8]>, messages: &[M]) -> Result<Replayed, CorruptSnapshot> {
    let doc = Doc::with_options(Options { offset_kind: OffsetKind::Bytes, ..Options::default() });
    let mut skipped = 0;
    {
        let mut txn = doc.transact_mut();
        if let Some(snapshot) = previous {
            let update = Update::decode_v1(snapshot).map_err(|e| CorruptSnapshot(e.into()))?;
            txn.apply_update(update).map_err(|e| CorruptSnapshot(e.into()))?;
        }
        for message in messages {
            let mut cursor = Cursor::new(message.as_ref());
            while cursor.has_content() {
                // A frame cut short makes the rest of its message unreadable.
                let Ok(frame) = cursor.read_buf() else {
                    skipped += 1;
                    break;
                };
                match Update::decode_v1(frame) {
                    // Updates whose causal predecessors are missing stay pending inside the
                    // doc and are still part of the encoded state.
                    Ok(update) => {
                        if txn.apply_update(update).is_err() {
                            skipped += 1;
                        }
                    }
                    Err(_) => skipped += 1,
                }
            }
        }
    }
    Ok(Replayed { doc, skipped })
}

/// The string held by the top-level `Y.Text` called `name` (empty when it was never written).
pub fn text(doc: &Doc, name: &str) -> String {
    let text = doc.get_or_insert_text(name);
    text.get_string(&doc.transact())
}

/// Changes the `Y.Text` `name` of `doc` to hold `target`, by the smallest edit (what lies
/// between the common prefix and suffix is replaced), and returns that edit as one raw v1
/// update; `None` when it already holds `target`. Edits made concurrently elsewhere in the
/// text survive the merge.
pub fn set_text(doc: &Doc, name: &str, target: &str) -> Option<Vec<u8>> {
    let text = doc.get_or_insert_text(name);
    let current = text.get_string(&doc.transact());
    if current == target {
        return None;
    }
    let before = doc.transact().state_vector();
    let (start, current_end, target_end) = changed_span(&current, target);
    {
        let mut txn = doc.transact_mut();
        // Byte offsets at character boundaries: the doc counts UTF-8 bytes (`replay`).
        if current_end > start {
            text.remove_range(&mut txn, start as u32, (current_end - start) as u32);
        }
        if target_end > start {
            text.insert(&mut txn, start as u32, &target[start..target_end]);
        }
    }
    Some(doc.transact().encode_state_as_update_v1(&before))
}

/// A document holding only `content` in the `Y.Text` `name`, as one raw v1 update.
pub fn seed(name: &str, content: &str) -> Vec<u8> {
    let doc = Doc::with_options(Options { offset_kind: OffsetKind::Bytes, ..Options::default() });
    let text = doc.get_or_insert_text(name);
    text.insert(&mut doc.transact_mut(), 0, content);
    doc.transact().encode_state_as_update_v1(&StateVector::default())
}

/// Byte offsets `(start, end in a, end in b)` of the span where `a` and `b` differ, at
/// character boundaries.
fn changed_span(a: &str, b: &str) -> (usize, usize, usize) {
    let prefix: usize = a.chars().zip(b.chars()).take_while(|(x, y)| x == y).map(|(x, _)| x.len_utf8()).sum();
    let (ra, rb) = (&a[prefix..], &b[prefix..]);
    let suffix: usize =
        ra.chars().rev().zip(rb.chars().rev()).take_while(|(x, y)| x == y).map(|(x, _)| x.len_utf8()).sum();
    (prefix, a.len() - suffix, b.len() - suffix)
}

#[cfg(test)]
mod tests {
    use yrs::encoding::write::Write;

    use super::*;

    /// The updates of `edits` on a fresh client, each lib0-framed as a provider POSTs it.
    fn framed_edits(client: u64, edits: &[&str]) -> (Doc, Vec<Vec<u8>>) {
        let doc = Doc::with_client_id(client);
        let text = doc.get_or_insert_text("content");
        let mut posts = Vec::new();
        for edit in edits {
            let before = doc.transact().state_vector();
            {
                let mut txn = doc.transact_mut();
                let len = text.len(&txn);
                text.insert(&mut txn, len, edit);
            }
            let update = doc.transact().encode_state_as_update_v1(&before);
            let mut post = Vec::new();
            post.write_buf(&update);
            posts.push(post);
        }
        (doc, posts)
    }

    fn text_of(snapshot: &[u8]) -> String {
        let doc = Doc::new();
        let text = doc.get_or_insert_text("content");
        doc.transact_mut().apply_update(Update::decode_v1(snapshot).unwrap()).unwrap();
        text.get_string(&doc.transact())
    }

    #[test]
    fn staged_and_single_compactions_give_the_writers_state() {
        let (writer, posts) = framed_edits(7, &["a", "bc", "def", "g"]);
        let once = compact::<Vec<u8>>(None, &posts).unwrap();
        let first = compact(None, &posts[..2]).unwrap();
        let staged = compact(Some(&first.snapshot), &posts[2..]).unwrap();
        // Replaying updates a snapshot already holds changes nothing (resume earlier, never later).
        let overlapped = compact(Some(&staged.snapshot), &posts[1..]).unwrap();
        let expected = writer.transact().state_vector().encode_v1();
        for c in [&once, &staged, &overlapped] {
            assert_eq!(c.state_vector, expected);
            assert_eq!(text_of(&c.snapshot), "abcdefg");
            assert_eq!(c.skipped, 0);
        }
    }

    #[test]
    fn garbage_frames_are_skipped_not_fatal() {
        let (_, posts) = framed_edits(9, &["x"]);
        let c = compact(None, &[vec![1u8, 2, 3], posts[0].clone()]).unwrap();
        assert_eq!(text_of(&c.snapshot), "x");
        assert_eq!(c.skipped, 2);
        assert!(compact::<Vec<u8>>(Some(&[0xff, 0xff, 0xff]), &[]).is_err());
    }

    #[test]
    fn set_text_makes_the_smallest_edit_and_keeps_concurrent_ones() {
        for (from, to) in
            [("hello world", "hello brave world"), ("abc", ""), ("", "né ü"), ("été", "ete"), ("aaa", "aa")]
        {
            let seeded = seed("content", from);
            let doc = replay::<Vec<u8>>(Some(&seeded), &[]).unwrap().doc;
            let update = set_text(&doc, "content", to).unwrap();
            assert_eq!(text(&doc, "content"), to);
            assert!(set_text(&doc, "content", to).is_none(), "no edit when it already holds the target");
            // The seed and the edit, replayed elsewhere as a log, give the target too.
            let mut framed = Vec::new();
            framed.write_buf(&update);
            assert_eq!(text(&replay(Some(&seeded), &[framed]).unwrap().doc, "content"), to);
        }
        // A concurrent insert elsewhere survives the replacement of a span.
        let base = seed("content", "one two three");
        let a = replay::<Vec<u8>>(Some(&base), &[]).unwrap().doc;
        let b = replay::<Vec<u8>>(Some(&base), &[]).unwrap().doc;
        let edit_a = set_text(&a, "content", "one 2 three").unwrap();
        let edit_b = set_text(&b, "content", "one two three four").unwrap();
        let mut framed = Vec::new();
        framed.write_buf(&edit_a);
        framed.write_buf(&edit_b);
        let merged = replay(Some(&base), &[framed]).unwrap().doc;
        assert_eq!(text(&merged, "content"), "one 2 three four");
    }
}
