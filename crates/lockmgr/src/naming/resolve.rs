//! Where a disk path leads: the canonical path the disk is named by, found with as few
//! syscalls as the kernel allows (docs/PERFORMANCE.md, "Profile of the request path").
//!
//! `realpath(3)` asks the kernel about every component of the path in turn (one `readlink`
//! each, walking the path from `/` again every time). For a file that exists, one `open`
//! with `O_PATH` walks the path once, symlinks included, and `/proc/self/fd/N` then gives
//! the kernel's own name of what was reached (`d_path`, the name `realpath` builds); the
//! `fstat` of that fd also answers whether it is a block device. Anything this cannot name
//! exactly (a missing file, a deleted one, no `/proc`) goes the component-by-component way.

use std::fs::Metadata;
use std::os::fd::AsRawFd;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Component, Path, PathBuf};

/// A resolved disk path and, when the resolution opened the file, its metadata.
#[derive(Debug)]
pub struct Resolved {
    pub path: PathBuf,
    pub meta: Option<Metadata>,
}

/// [`resolve_path`], through the file itself when it exists.
pub(super) fn resolve(p: &Path) -> Option<Resolved> {
    match through_fd(p) {
        Ok(Some(r)) => Some(r),
        // Not there (or a file taken for a directory): realpath would fail the same way.
        Err(e) if matches!(e.raw_os_error(), Some(libc::ENOENT | libc::ENOTDIR)) => {
            walk(p).map(|path| Resolved { path, meta: None })
        }
        _ => resolve_path(p).map(|path| Resolved { path, meta: None }),
    }
}

/// The canonical path of an existing file from an `O_PATH` fd on it (opens no device: `O_PATH`
/// reads and writes nothing). `Ok(None)` when that name could be wrong or is unknown; the
/// open's error when there is no such file.
fn through_fd(p: &Path) -> std::io::Result<Option<Resolved>> {
    let f = std::fs::OpenOptions::new().read(true).custom_flags(libc::O_PATH).open(p)?;
    Ok(named(&f))
}

fn named(f: &std::fs::File) -> Option<Resolved> {
    let meta = f.metadata().ok()?;
    // Removed meanwhile: the kernel names it "… (deleted)", no path it can be found by.
    if meta.nlink() == 0 {
        return None;
    }
    let name = std::fs::read_link(format!("/proc/self/fd/{}", f.as_raw_fd())).ok()?;
    // Outside this process's root (never for the daemon) the kernel names it "(unreachable)/…";
    // a name ending in " (deleted)" may be a file removed after the open (or a file named so:
    // the slow way names both right).
    if !name.is_absolute() || name.as_os_str().as_encoded_bytes().ends_with(b" (deleted)") {
        return None;
    }
    Some(Resolved { path: name, meta: Some(meta) })
}

/// Most symlinks followed while resolving one path (the kernel's limit, MAXSYMLINKS).
const MAX_SYMLINKS: usize = 40;

/// Where an absolute path leads, as `realpath -m` answers: symlinks are followed wherever
/// they are (a link to a file not created yet too), `.`, `..`, `//` and a trailing `/` are
/// resolved, and components that do not exist are kept as written. For a path that exists
/// this is the kernel's realpath; for one that does not, it is the realpath the file will
/// have once it is created. `None`: more than [`MAX_SYMLINKS`] links (a loop).
pub fn resolve_path(p: &Path) -> Option<PathBuf> {
    if let Ok(real) = std::fs::canonicalize(p) {
        return Some(real);
    }
    walk(p)
}

/// [`resolve_path`] one component at a time (what is missing is taken as written).
fn walk(p: &Path) -> Option<PathBuf> {
    let mut out = PathBuf::from("/");
    // Components still to walk, the next one last.
    let mut todo: Vec<std::ffi::OsString> = Vec::new();
    let push_all = |todo: &mut Vec<std::ffi::OsString>, p: &Path| {
        for c in p.components().rev() {
            match c {
                Component::Normal(s) => todo.push(s.to_owned()),
                Component::ParentDir => todo.push("..".into()),
                Component::CurDir | Component::RootDir | Component::Prefix(_) => {}
            }
        }
    };
    push_all(&mut todo, p);
    let mut links = 0;
    while let Some(c) = todo.pop() {
        if c == ".." {
            // `out` holds no symlink, so its parent is the real parent.
            out.pop();
            continue;
        }
        out.push(&c);
        // A component that cannot be looked at (missing, not a directory) is taken as written.
        let Ok(target) = std::fs::read_link(&out) else { continue };
        links += 1;
        if links > MAX_SYMLINKS {
            return None;
        }
        out.pop();
        if target.is_absolute() {
            out = PathBuf::from("/");
        }
        push_all(&mut todo, &target);
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tmpdir(tag: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("virtdlm-resolve-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        d.canonicalize().unwrap()
    }

    /// The walk through the file's fd names every existing file as the component walk does.
    #[test]
    fn through_fd_agrees_with_the_component_walk() {
        let d = tmpdir("agree");
        std::fs::create_dir_all(d.join("real/sub")).unwrap();
        std::fs::write(d.join("real/sub/disk.img"), b"").unwrap();
        std::fs::write(d.join("named (deleted)"), b"").unwrap();
        std::os::unix::fs::symlink(d.join("real"), d.join("abs")).unwrap();
        std::os::unix::fs::symlink("real/sub", d.join("rel")).unwrap();
        std::os::unix::fs::symlink("disk.img", d.join("real/sub/link.img")).unwrap();
        let cases = [
            d.join("abs/sub/disk.img"),
            d.join("rel/disk.img"),
            d.join("rel/link.img"),
            d.join("rel/../sub/./disk.img"),
            d.join("abs//sub/"),
            d.join("real/sub/disk.img"),
        ];
        for c in &cases {
            let fast = through_fd(c).unwrap().unwrap_or_else(|| panic!("{c:?} exists: named through its fd"));
            assert_eq!(fast.path, d.join("real/sub").join(if c.ends_with("sub/") { "" } else { "disk.img" }), "{c:?}");
            assert_eq!(Some(fast.path), resolve_path(c), "{c:?}");
            assert!(fast.meta.is_some());
        }
        // A file whose name looks like the kernel's mark of a removed one: named the slow way.
        assert!(through_fd(&d.join("named (deleted)")).unwrap().is_none());
        assert_eq!(resolve(&d.join("named (deleted)")).unwrap().path, d.join("named (deleted)"));
        // Missing: the component walk names it as written.
        assert!(through_fd(&d.join("abs/new.img")).is_err());
        assert_eq!(resolve(&d.join("abs/new.img")).unwrap().path, d.join("real/new.img"));
        // A link to a file not created yet leads where that file will be; a loop is refused.
        std::os::unix::fs::symlink(d.join("real/later.img"), d.join("dangling")).unwrap();
        assert_eq!(resolve(&d.join("dangling")).unwrap().path, d.join("real/later.img"));
        std::os::unix::fs::symlink(d.join("loop"), d.join("loop")).unwrap();
        assert!(resolve(&d.join("loop/x")).is_none());
        // A file as a directory: not opened, named by the walk (the file's own name).
        assert!(through_fd(&d.join("real/sub/disk.img/")).is_err());
        assert_eq!(
            resolve(&d.join("real/sub/disk.img/")).unwrap().path,
            resolve_path(&d.join("real/sub/disk.img/")).unwrap()
        );
        let _ = std::fs::remove_dir_all(&d);
    }

    /// A device is named without being opened for reading or writing, and its metadata come along.
    #[test]
    fn a_device_is_named_with_its_metadata() {
        use std::os::unix::fs::FileTypeExt;
        let r = resolve(Path::new("/dev/null")).unwrap();
        assert_eq!(r.path, PathBuf::from("/dev/null"));
        assert!(r.meta.unwrap().file_type().is_char_device());
    }
}
