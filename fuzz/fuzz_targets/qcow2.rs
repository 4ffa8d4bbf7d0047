//! The start of a disk image as virtdlmd reads it to follow a backing chain (a guest can write
//! any bytes into a raw image, and anyone into an image file). The first 8 bytes give the
//! file length claimed; the rest is the head read from the image.
//! Properties: no panic; a backing name found lies inside both the bytes given and the
//! claimed file, is at most MAX_NAME bytes, and is exactly the bytes at the offset the header
//! states.
#![no_main]

use libfuzzer_sys::fuzz_target;
use lockmgr::chain::qcow2::{backing, is_qcow2, MAX_NAME};

fuzz_target!(|data: &[u8]| {
    let Some((len, rest)) = data.split_first_chunk::<8>() else { return };
    let file_len = u64::from_le_bytes(*len);
    // Most inputs the fuzzer makes lack the magic: give it to half of them.
    let mut head = rest.to_vec();
    if len[0] & 1 == 1 && !is_qcow2(&head) {
        head.splice(0..0, *b"QFI\xfb");
    }
    if !is_qcow2(&head) {
        return;
    }
    let Ok(Some(b)) = backing(&head, file_len) else { return };
    assert!(b.name.len() <= MAX_NAME && !b.name.is_empty());
    let offset = u64::from_be_bytes(head[8..16].try_into().unwrap());
    let end = offset + b.name.len() as u64;
    assert!(end <= head.len() as u64 && end <= file_len, "name at {offset}..{end} outside the input");
    assert_eq!(&head[offset as usize..end as usize], b.name.as_slice());
});
