//! Following a disk's backing chain on the filesystem: the top image's qcow2 header names its
//! backing file, whose header names the next, and so on. Each image's start is read (one
//! small read, more only where its header says the name lies further, never past
//! [`qcow2::HEAD_BYTES`]); no process is started. The paths found are named for locking by
//! the daemon's naming rules, like any disk (the registry does that).

use super::qcow2::{self, Qcow2Error};
use std::collections::HashSet;
use std::ffi::OsStr;
use std::io::Read;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileTypeExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

/// Longest chain followed (backing images below the top). Longer chains are refused: QEMU
/// opens them, but one this deep is a mistake or an attack, and each link is a lock.
pub const MAX_DEPTH: usize = 64;

#[derive(Debug, thiserror::Error)]
pub enum ChainError {
    #[error("backing chain of {top}: cannot read {image}: {err}")]
    Read { top: String, image: String, err: std::io::Error },
    #[error("backing chain of {top}: {image}: {err}")]
    Header { top: String, image: String, err: Qcow2Error },
    #[error("backing chain of {top} loops: {image} is its own backing file, directly or not")]
    Loop { top: String, image: String },
    #[error("backing chain of {top} is longer than {MAX_DEPTH} images")]
    TooDeep { top: String },
}

/// A backing image found in a chain.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Link {
    /// The path QEMU opens: the name in the overlay's header, made absolute against the
    /// overlay's directory when it is relative.
    pub path: PathBuf,
}

/// The first bytes of `path` and its length; `None` when it is neither a regular file nor a
/// block device (nothing to follow).
///
/// Opened non-blocking and checked on the open descriptor: a plain open of a FIFO waits for a
/// writer, for ever, and would hang the request (and a check by path before the open could
/// be raced). Reads of regular files and block devices ignore O_NONBLOCK.
fn head(path: &Path) -> std::io::Result<Option<(Vec<u8>, u64)>> {
    let f = std::fs::OpenOptions::new().read(true).custom_flags(libc::O_NONBLOCK | libc::O_NOCTTY).open(path)?;
    let meta = f.metadata()?;
    let len = if meta.file_type().is_file() {
        meta.len()
    } else if meta.file_type().is_block_device() {
        // Block devices report length 0 in metadata; the header bounds are checked against
        // what was read instead.
        u64::MAX
    } else {
        return Ok(None);
    };
    let mut buf = vec![0u8; qcow2::FIRST_READ];
    let mut got = read_full(&f, &mut buf)?;
    if got == buf.len() {
        let need = qcow2::bytes_needed(&buf);
        if need > got {
            buf.resize(need, 0);
            got += read_full(&f, &mut buf[got..])?;
        }
    }
    buf.truncate(got);
    Ok(Some((buf, len)))
}

/// Reads into `buf` until it is full or the file ends; the bytes read.
fn read_full(mut f: &std::fs::File, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut got = 0;
    while got < buf.len() {
        match f.read(&mut buf[got..]) {
            Ok(0) => break,
            Ok(n) => got += n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(got)
}

/// A backing name that is not a local file (`json:{…}`, `nbd://…`, `rbd:pool/img`): QEMU
/// opens it through a protocol driver, and it has no path to lock.
fn is_protocol(name: &[u8]) -> bool {
    let Some(colon) = name.iter().position(|&b| b == b':') else { return false };
    let prefix = &name[..colon];
    !prefix.is_empty()
        && !prefix.contains(&b'/')
        && prefix.iter().all(|b| b.is_ascii_alphanumeric() || b"+-._".contains(b))
}

/// The backing images of the disk at `top`, nearest first. Empty for a raw image, a qcow2
/// image without backing file, or a top that cannot be opened (it is locked by its path as
/// before; QEMU reports the missing file). A backing file that cannot be read, a hostile
/// header, a loop or a chain deeper than [`MAX_DEPTH`] is an error: the disk is refused.
pub fn backing_chain(top: &Path) -> Result<Vec<Link>, ChainError> {
    let shown = |p: &Path| p.display().to_string();
    let mut seen: HashSet<PathBuf> = HashSet::new();
    let mut links = Vec::new();
    let mut image = top.to_path_buf();
    // Whether `image` must be parsed: the top always is probed; a backing image declared
    // `raw` ends the chain unread.
    let mut probe = true;
    loop {
        let read = if image == top {
            match head(&image) {
                Ok(h) => h,
                Err(_) => return Ok(links),
            }
        } else {
            head(&image).map_err(|err| ChainError::Read { top: shown(top), image: shown(&image), err })?
        };
        let Some((bytes, len)) = read else { return Ok(links) };
        if !probe || !qcow2::is_qcow2(&bytes) {
            return Ok(links);
        }
        // Loops are found by the file itself, whatever it is called.
        let canonical = std::fs::canonicalize(&image).unwrap_or_else(|_| image.clone());
        if !seen.insert(canonical) {
            return Err(ChainError::Loop { top: shown(top), image: shown(&image) });
        }
        let backing = qcow2::backing(&bytes, len).map_err(|err| ChainError::Header {
            top: shown(top),
            image: shown(&image),
            err,
        })?;
        let Some(b) = backing else { return Ok(links) };
        if is_protocol(&b.name) {
            tracing::warn!(top = %shown(top), image = %shown(&image), "backing file {:?} is not a local file: not locked",
                String::from_utf8_lossy(&b.name));
            return Ok(links);
        }
        if links.len() == MAX_DEPTH {
            return Err(ChainError::TooDeep { top: shown(top) });
        }
        let name = Path::new(OsStr::from_bytes(&b.name));
        let next = match image.parent() {
            Some(dir) if name.is_relative() => dir.join(name),
            _ => name.to_path_buf(),
        };
        probe = b.format.as_deref() != Some("raw");
        links.push(Link { path: next.clone() });
        image = next;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Dir(PathBuf);
    impl Drop for Dir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
    fn dir(tag: &str) -> Dir {
        let d = std::env::temp_dir().join(format!("chain-walk-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        Dir(d)
    }
    fn qcow(path: &Path, backing: Option<&str>, fmt: Option<&str>) {
        std::fs::write(path, qcow2::build(3, backing.map(|b| (b.as_bytes(), fmt)))).unwrap();
    }
    fn paths(v: &[Link]) -> Vec<PathBuf> {
        v.iter().map(|l| l.path.clone()).collect()
    }

    #[test]
    fn follows_relative_and_absolute_names_and_stops_at_raw() {
        let d = dir("follow");
        std::fs::create_dir_all(d.0.join("sub")).unwrap();
        std::fs::write(d.0.join("base.raw"), b"raw data, not qcow2").unwrap();
        let mid = d.0.join("sub/mid.qcow2");
        qcow(&mid, Some("../base.raw"), Some("raw"));
        let top = d.0.join("top.qcow2");
        qcow(&top, Some(mid.to_str().unwrap()), Some("qcow2"));
        let got = backing_chain(&top).unwrap();
        assert_eq!(paths(&got), vec![mid.clone(), d.0.join("sub/../base.raw")]);
        // A raw top, a qcow2 without backing file, a missing top: no chain.
        assert!(backing_chain(&d.0.join("base.raw")).unwrap().is_empty());
        qcow(&d.0.join("alone.qcow2"), None, None);
        assert!(backing_chain(&d.0.join("alone.qcow2")).unwrap().is_empty());
        assert!(backing_chain(&d.0.join("nothing")).unwrap().is_empty());
    }

    /// A FIFO as disk (or as backing file) ends the chain at once. Break it: open with
    /// `File::open` again: the walk blocks in open(2) for want of a writer, and this test
    /// fails with "the walk hangs on a FIFO" (checked).
    /// The first read is small: a name placed further (as a hand-made image may) is still
    /// read. Fails if the walk reads only `FIRST_READ` bytes.
    #[test]
    fn a_name_past_the_first_read_is_followed() {
        let d = dir("far");
        let base = d.0.join("base.raw");
        std::fs::write(&base, b"raw").unwrap();
        let mut h = qcow2::build(3, None);
        let name = base.to_str().unwrap().as_bytes();
        let at = qcow2::FIRST_READ + 100;
        h.resize(at, 0);
        h.extend_from_slice(name);
        h.resize(3 * qcow2::FIRST_READ, 0);
        h[8..16].copy_from_slice(&(at as u64).to_be_bytes());
        h[16..20].copy_from_slice(&(name.len() as u32).to_be_bytes());
        // Cluster size 64 KiB, so the name lies inside the first cluster.
        h[20..24].copy_from_slice(&16u32.to_be_bytes());
        let top = d.0.join("top.qcow2");
        std::fs::write(&top, &h).unwrap();
        assert_eq!(paths(&backing_chain(&top).unwrap()), vec![base]);
    }

    #[test]
    fn a_fifo_does_not_hang_the_walk() {
        let d = dir("fifo");
        let fifo = d.0.join("fifo");
        assert!(std::process::Command::new("mkfifo").arg(&fifo).status().unwrap().success());
        qcow(&d.0.join("top"), Some("fifo"), None);
        let (tx, rx) = std::sync::mpsc::channel();
        let (f, t) = (fifo.clone(), d.0.join("top"));
        std::thread::spawn(move || {
            let _ = tx.send((backing_chain(&f).map(|l| l.len()), backing_chain(&t).map(|l| paths(&l))));
        });
        let (alone, behind) = rx.recv_timeout(std::time::Duration::from_secs(20)).expect("the walk hangs on a FIFO");
        assert_eq!(alone.unwrap(), 0);
        assert_eq!(behind.unwrap(), vec![fifo]);
    }

    /// A backing file declared raw is not parsed, even when it looks like qcow2 (a guest
    /// wrote it): fails if `probe` is ignored.
    #[test]
    fn raw_backing_is_not_parsed() {
        let d = dir("raw");
        qcow(&d.0.join("guest-written"), Some("/etc/passwd"), None);
        qcow(&d.0.join("top"), Some("guest-written"), Some("raw"));
        assert_eq!(paths(&backing_chain(&d.0.join("top")).unwrap()), vec![d.0.join("guest-written")]);
    }

    /// Fails if the `seen` check is removed (the walk then stops only at MAX_DEPTH, TooDeep).
    #[test]
    fn loops_are_refused() {
        let d = dir("loop");
        qcow(&d.0.join("a"), Some("b"), None);
        qcow(&d.0.join("b"), Some("./a"), None);
        assert!(matches!(backing_chain(&d.0.join("a")), Err(ChainError::Loop { .. })));
        qcow(&d.0.join("self"), Some("self"), None);
        assert!(matches!(backing_chain(&d.0.join("self")), Err(ChainError::Loop { .. })));
    }

    #[test]
    fn depth_is_bounded() {
        let d = dir("deep");
        for i in 0..=MAX_DEPTH + 1 {
            let backing = (i <= MAX_DEPTH).then(|| format!("i{}", i + 1));
            qcow(&d.0.join(format!("i{i}")), backing.as_deref(), None);
        }
        assert!(matches!(backing_chain(&d.0.join("i0")), Err(ChainError::TooDeep { .. })));
        assert_eq!(backing_chain(&d.0.join("i1")).unwrap().len(), MAX_DEPTH);
    }

    #[test]
    fn missing_backing_and_bad_headers_are_errors() {
        let d = dir("bad");
        qcow(&d.0.join("top"), Some("gone"), None);
        assert!(matches!(backing_chain(&d.0.join("top")), Err(ChainError::Read { .. })));
        let mut h = qcow2::build(3, Some((b"x", None)));
        h.truncate(h.len() - 1);
        std::fs::write(d.0.join("cut"), &h).unwrap();
        assert!(matches!(backing_chain(&d.0.join("cut")), Err(ChainError::Header { .. })));
    }

    #[test]
    fn protocol_backing_ends_the_chain() {
        let d = dir("proto");
        qcow(&d.0.join("top"), Some("nbd://host:10809/x"), None);
        assert!(backing_chain(&d.0.join("top")).unwrap().is_empty());
        assert!(is_protocol(b"json:{}") && is_protocol(b"rbd:pool/img"));
        assert!(!is_protocol(b"/a:b") && !is_protocol(b"dir/a:b") && !is_protocol(b"base.qcow2"));
    }
}
