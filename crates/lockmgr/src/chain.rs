//! Backing chains: the images under a disk that QEMU reads through it. `qcow2` parses the
//! header bytes; `walk` follows the chain on the filesystem. The registry locks what `walk`
//! finds in PR, as the disk's "backing" locks (docs/GUIDE.md, "Backing chains").

pub mod qcow2;
pub mod walk;
