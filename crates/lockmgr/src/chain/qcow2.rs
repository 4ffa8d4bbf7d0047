//! The part of a qcow2 header (v2 and v3) that names a backing file, parsed from the bytes at
//! the start of the image. Pure: no I/O, so it can be fuzzed and tested on hostile input.
//! Every offset and length read from the image is checked against the bytes given and the
//! file's length before it is used; nothing here allocates more than [`MAX_NAME`] bytes.
//!
//! Format: QEMU's docs/interop/qcow2.txt. External data files (incompatible feature bit 2)
//! are ignored: the data file is written only through its qcow2 image, which is locked.

/// `QFI\xfb`.
pub const MAGIC: [u8; 4] = *b"QFI\xfb";
/// Longest backing file name the format allows (QEMU refuses longer).
pub const MAX_NAME: usize = 1023;
/// The most of an image the walk reads: the header, its extensions and the backing file
/// name sit in the first cluster, and QEMU writes them in its first few hundred bytes.
pub const HEAD_BYTES: usize = 64 * 1024;
/// What the walk reads first: enough for any header QEMU writes; more is read only when the
/// header places its backing file name further ([`bytes_needed`]). A raw image, the common
/// case, costs one small read instead of [`HEAD_BYTES`].
pub const FIRST_READ: usize = 4096;

/// v2's fixed header length (v3 states its own, at least 104).
const V2_HEADER: usize = 72;
const V3_MIN_HEADER: usize = 104;
/// Header extension types.
const EXT_END: u32 = 0;
const EXT_BACKING_FORMAT: u32 = 0xe279_2aca;

/// The backing file an image names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Backing {
    /// As written in the header: absolute, or relative to the overlay's directory.
    pub name: Vec<u8>,
    /// The backing format extension (`raw`, `qcow2`, …), when present.
    pub format: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Qcow2Error {
    #[error("qcow2 header truncated ({0} bytes)")]
    Truncated(usize),
    #[error("qcow2 version {0} is not supported (2 and 3 are)")]
    Version(u32),
    #[error("qcow2 cluster_bits {0} is out of range (9..=21)")]
    ClusterBits(u32),
    #[error("qcow2 header length {0} is out of range")]
    HeaderLength(u32),
    #[error("qcow2 backing file name of {0} bytes is longer than {MAX_NAME}")]
    NameTooLong(u32),
    #[error("qcow2 backing file name at offset {offset} ({size} bytes) lies outside the header (first {limit} bytes)")]
    NameOutside { offset: u64, size: u32, limit: u64 },
    #[error("qcow2 header extension at offset {0} runs past the header")]
    Extension(usize),
}

/// Whether `head` starts like a qcow2 image.
pub fn is_qcow2(head: &[u8]) -> bool {
    head.starts_with(&MAGIC)
}

/// How many bytes of an image starting with `head` [`backing`] needs: up to the end of the
/// backing file name for a qcow2 image (at most [`HEAD_BYTES`]), else what is there.
pub fn bytes_needed(head: &[u8]) -> usize {
    match (is_qcow2(head), u64_at(head, 8), u32_at(head, 16)) {
        (true, Ok(offset), Ok(size)) => {
            let end = offset.saturating_add(u64::from(size)).min(HEAD_BYTES as u64) as usize;
            end.max(head.len())
        }
        _ => head.len(),
    }
}

fn u32_at(b: &[u8], at: usize) -> Result<u32, Qcow2Error> {
    let s = b.get(at..at + 4).ok_or(Qcow2Error::Truncated(b.len()))?;
    Ok(u32::from_be_bytes(s.try_into().expect("4 bytes")))
}

fn u64_at(b: &[u8], at: usize) -> Result<u64, Qcow2Error> {
    let s = b.get(at..at + 8).ok_or(Qcow2Error::Truncated(b.len()))?;
    Ok(u64::from_be_bytes(s.try_into().expect("8 bytes")))
}

/// The backing file named by the qcow2 image starting with `head` (the first bytes of a file
/// of `file_len` bytes; `head` must start with [`MAGIC`]). `Ok(None)`: no backing file.
pub fn backing(head: &[u8], file_len: u64) -> Result<Option<Backing>, Qcow2Error> {
    if !is_qcow2(head) || head.len() < V2_HEADER {
        return Err(Qcow2Error::Truncated(head.len()));
    }
    let version = u32_at(head, 4)?;
    let offset = u64_at(head, 8)?;
    let size = u32_at(head, 16)?;
    let cluster_bits = u32_at(head, 20)?;
    if !(9..=21).contains(&cluster_bits) {
        return Err(Qcow2Error::ClusterBits(cluster_bits));
    }
    let header_len = match version {
        2 => V2_HEADER,
        3 => {
            let l = u32_at(head, 100)?;
            if (l as usize) < V3_MIN_HEADER || l % 8 != 0 || u64::from(l) > 1 << cluster_bits {
                return Err(Qcow2Error::HeaderLength(l));
            }
            l as usize
        }
        v => return Err(Qcow2Error::Version(v)),
    };
    if offset == 0 || size == 0 {
        return Ok(None);
    }
    if size as usize > MAX_NAME {
        return Err(Qcow2Error::NameTooLong(size));
    }
    // The name must lie in the first cluster (as QEMU requires), in the file, and in what was read.
    let limit = (1u64 << cluster_bits).min(file_len).min(head.len() as u64);
    let end = offset.checked_add(u64::from(size));
    if offset < header_len as u64 || end.is_none_or(|e| e > limit) {
        return Err(Qcow2Error::NameOutside { offset, size, limit });
    }
    let name = head[offset as usize..offset as usize + size as usize].to_vec();
    let format = backing_format(head, header_len, offset as usize)?;
    Ok(Some(Backing { name, format }))
}

/// The backing format extension, read from the extensions between the header and the name.
fn backing_format(head: &[u8], mut at: usize, end: usize) -> Result<Option<String>, Qcow2Error> {
    let mut format = None;
    while at + 8 <= end {
        let kind = u32_at(head, at)?;
        let len = u32_at(head, at + 4)? as usize;
        if kind == EXT_END {
            break;
        }
        let data = at + 8;
        // Data is padded to a multiple of 8; `len` is bounded by `end` before any arithmetic grows.
        if len > end - data {
            return Err(Qcow2Error::Extension(at));
        }
        if kind == EXT_BACKING_FORMAT {
            format = Some(String::from_utf8_lossy(&head[data..data + len]).into_owned());
        }
        at = data + len.div_ceil(8) * 8;
    }
    Ok(format)
}

/// A qcow2 header for tests: `version` 2 or 3, with `backing` (and its format) when given.
/// Laid out as qemu-img lays it out: header, extensions, end marker, then the name.
pub fn build(version: u32, backing: Option<(&[u8], Option<&str>)>) -> Vec<u8> {
    let header_len = if version == 3 { V3_MIN_HEADER } else { V2_HEADER };
    let mut h = vec![0u8; header_len];
    h[..4].copy_from_slice(&MAGIC);
    h[4..8].copy_from_slice(&version.to_be_bytes());
    h[20..24].copy_from_slice(&16u32.to_be_bytes());
    if version == 3 {
        h[96..100].copy_from_slice(&4u32.to_be_bytes());
        h[100..104].copy_from_slice(&(header_len as u32).to_be_bytes());
    }
    if let Some((name, fmt)) = backing {
        if let Some(f) = fmt {
            h.extend_from_slice(&EXT_BACKING_FORMAT.to_be_bytes());
            h.extend_from_slice(&(f.len() as u32).to_be_bytes());
            h.extend_from_slice(f.as_bytes());
            h.resize(h.len().div_ceil(8) * 8, 0);
        }
        h.extend_from_slice(&[0u8; 8]);
        let offset = h.len() as u64;
        h.extend_from_slice(name);
        h[8..16].copy_from_slice(&offset.to_be_bytes());
        h[16..20].copy_from_slice(&(name.len() as u32).to_be_bytes());
    }
    h
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn parse(h: &[u8]) -> Result<Option<Backing>, Qcow2Error> {
        backing(h, h.len() as u64)
    }

    #[test]
    fn more_is_needed_only_for_a_name_past_what_was_read() {
        let h = build(3, Some((b"base.qcow2", Some("qcow2"))));
        assert_eq!(bytes_needed(&h), h.len(), "the whole name is in what was read");
        assert_eq!(bytes_needed(&h[..FIRST_READ.min(24)]), h.len(), "a cut header asks up to the name's end");
        let mut far = h.clone();
        far[8..16].copy_from_slice(&(10_000u64).to_be_bytes());
        assert_eq!(bytes_needed(&far), 10_000 + 10);
        far[8..16].copy_from_slice(&u64::MAX.to_be_bytes());
        assert_eq!(bytes_needed(&far), HEAD_BYTES, "bounded, whatever the header says");
        assert_eq!(bytes_needed(&[0u8; 512]), 512, "not qcow2: nothing more");
        assert_eq!(bytes_needed(&build(3, None)), build(3, None).len(), "no backing file");
    }

    #[test]
    fn reads_name_and_format_in_v2_and_v3() {
        for v in [2, 3] {
            let h = build(v, Some((b"../base.qcow2", Some("qcow2"))));
            let b = parse(&h).unwrap().unwrap();
            assert_eq!((b.name.as_slice(), b.format.as_deref()), (&b"../base.qcow2"[..], Some("qcow2")), "v{v}");
            let h = build(v, Some((b"/b.raw", None)));
            assert_eq!(parse(&h).unwrap().unwrap().format, None);
            assert_eq!(parse(&build(v, None)), Ok(None));
        }
    }

    #[test]
    fn refuses_hostile_headers() {
        let h = build(3, Some((b"/base", None)));
        for cut in [0, 10, 71, h.len() - 1] {
            assert!(parse(&h[..cut]).is_err(), "truncated to {cut}");
        }
        let mut long = build(2, Some((b"x", None)));
        long[16..20].copy_from_slice(&1024u32.to_be_bytes());
        assert_eq!(parse(&long), Err(Qcow2Error::NameTooLong(1024)));
        // The name offset past the end of the file (and near u64::MAX: no overflow).
        for off in [h.len() as u64 + 10, u64::MAX - 1] {
            let mut past = h.clone();
            past[8..16].copy_from_slice(&off.to_be_bytes());
            assert!(matches!(parse(&past), Err(Qcow2Error::NameOutside { .. })), "offset {off}");
        }
        // The head read holds the name, but the file is said to be shorter.
        assert!(matches!(backing(&h, 80), Err(Qcow2Error::NameOutside { .. })));
        let mut v4 = h.clone();
        v4[4..8].copy_from_slice(&4u32.to_be_bytes());
        assert_eq!(parse(&v4), Err(Qcow2Error::Version(4)));
        let mut ext = build(2, Some((b"/base", Some("raw"))));
        ext[V2_HEADER + 4..V2_HEADER + 8].copy_from_slice(&u32::MAX.to_be_bytes());
        assert_eq!(parse(&ext), Err(Qcow2Error::Extension(V2_HEADER)));
    }

    proptest! {
        /// Any bytes after the magic: no panic, and a name found lies within the input.
        #[test]
        fn never_panics(rest in proptest::collection::vec(any::<u8>(), 0..400), len in any::<u64>()) {
            let mut h = MAGIC.to_vec();
            h.extend_from_slice(&rest);
            if let Ok(Some(b)) = backing(&h, len) {
                prop_assert!(b.name.len() <= MAX_NAME && b.name.len() < h.len());
            }
        }

        /// Whatever name is written is read back.
        #[test]
        fn round_trips(name in proptest::collection::vec(any::<u8>(), 1..=MAX_NAME), v in 2u32..=3) {
            let h = build(v, Some((&name, Some("qcow2"))));
            prop_assert_eq!(parse(&h).unwrap().unwrap().name, name);
        }
    }
}
