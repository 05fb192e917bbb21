//! lib0 framing of POST bodies (YJS-PROTOCOL §7): `varUint(len) ‖ bytes`, repeated. Clients
//! frame each Yjs update (or awareness update) so that a producer may concatenate several into
//! one POST; the edge stores the bytes as received. Here: checking that a document body is a
//! whole number of frames, and cutting an oversized body at frame boundaries.

use bytes::Bytes;

/// A body that is not a sequence of whole lib0 frames.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    #[error("the body is not a sequence of lib0-framed updates")]
    Malformed,
    #[error("one framed update of {size} bytes is larger than an append may be ({limit} bytes)")]
    TooLarge { size: usize, limit: usize },
}

/// lib0's varUint: 7 bits per byte, least significant group first, high bit = more follows.
/// JavaScript numbers bound it to 53 bits, so more than 8 bytes is malformed.
fn read_var_uint(body: &[u8], pos: &mut usize) -> Option<u64> {
    let mut value = 0u64;
    for shift in (0..56).step_by(7) {
        let byte = *body.get(*pos)?;
        *pos += 1;
        value |= u64::from(byte & 0x7f) << shift;
        if byte & 0x80 == 0 {
            return Some(value);
        }
    }
    None
}

/// The offsets where each frame of `body` ends; an error unless the body is whole frames.
pub fn frame_ends(body: &[u8]) -> Result<Vec<usize>, FrameError> {
    let mut ends = Vec::new();
    let mut pos = 0;
    while pos < body.len() {
        let len = read_var_uint(body, &mut pos).ok_or(FrameError::Malformed)?;
        let end = usize::try_from(len).ok().and_then(|l| pos.checked_add(l)).ok_or(FrameError::Malformed)?;
        if end > body.len() {
            return Err(FrameError::Malformed);
        }
        ends.push(end);
        pos = end;
    }
    Ok(ends)
}

/// Cuts a framed body into pieces of at most `limit` bytes, each whole frames, in order. A
/// client's producer batches up to 1 MiB plus one update, which may exceed one append; the
/// pieces are stored as consecutive messages, read back as the same byte sequence.
pub fn split(body: Bytes, limit: usize) -> Result<Vec<Bytes>, FrameError> {
    let ends = frame_ends(&body)?;
    let mut pieces = Vec::new();
    let mut start = 0;
    let mut last_end = 0;
    for end in ends {
        if end - last_end > limit {
            return Err(FrameError::TooLarge { size: end - last_end, limit });
        }
        if end - start > limit {
            pieces.push(body.slice(start..last_end));
            start = last_end;
        }
        last_end = end;
    }
    if start < body.len() {
        pieces.push(body.slice(start..));
    }
    Ok(pieces)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(len: usize) -> Vec<u8> {
        let mut out = Vec::new();
        let mut n = len;
        loop {
            let byte = (n & 0x7f) as u8;
            n >>= 7;
            if n == 0 {
                out.push(byte);
                break;
            }
            out.push(byte | 0x80);
        }
        out.extend(std::iter::repeat_n(7u8, len));
        out
    }

    #[test]
    fn var_uints_decode_as_lib0_writes_them() {
        for (bytes, value) in
            [(&[0x00][..], 0), (&[0x7f], 127), (&[0x80, 0x01], 128), (&[0xdd, 0x01], 221), (&[0xac, 0x02], 300)]
        {
            let mut pos = 0;
            assert_eq!(read_var_uint(bytes, &mut pos), Some(value));
            assert_eq!(pos, bytes.len());
        }
    }

    #[test]
    fn whole_frames_pass_and_anything_else_is_malformed() {
        let body = [frame(3), frame(221), frame(0)].concat();
        assert_eq!(frame_ends(&body).unwrap(), vec![4, 4 + 2 + 221, 4 + 2 + 221 + 1]);
        // The conformance suite's bytes [1, 2, 3]: a frame of one byte, then a frame of 3 that
        // is cut short.
        assert_eq!(frame_ends(&[1, 2, 3]), Err(FrameError::Malformed));
        assert_eq!(frame_ends(&[0x80]), Err(FrameError::Malformed));
        assert_eq!(frame_ends(&[0xff; 12]), Err(FrameError::Malformed));
        assert!(frame_ends(&[]).unwrap().is_empty());
    }

    #[test]
    fn oversized_bodies_are_cut_at_frame_boundaries() {
        let frames: Vec<Vec<u8>> = (0..10).map(|i| frame(30 + i)).collect();
        let body = Bytes::from(frames.concat());
        let pieces = split(body.clone(), 100).unwrap();
        assert!(pieces.len() > 1);
        assert!(pieces.iter().all(|p| p.len() <= 100 && frame_ends(p).is_ok()));
        assert_eq!(pieces.concat(), body.to_vec());
        assert_eq!(split(body.clone(), body.len()).unwrap(), vec![body]);
        assert_eq!(split(Bytes::from(frame(200)), 100), Err(FrameError::TooLarge { size: 202, limit: 100 }));
    }
}
