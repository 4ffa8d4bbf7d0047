//! Resource naming: what a disk or lease *is* (its identity), and the DLM resource name made
//! from it. Every host must compute the same name for the same storage, so this is the one
//! place where names are decided.
//!
//! Disk identity, in order of preference:
//! 1. a block device: `dev:<id>`, where `<id>` is, in order: for a multipath map, the WWID of
//!    its paths (`wwid:…`, so the map and each raw path under it name one lock; the map's dm
//!    uuid `dm:mpath-…` if no path reports a WWID), for a partition of one (`partN-mpath-…`)
//!    the map's id + `-partN`; an LVM volume's dm uuid (`dm:LVM-…`); the kernel's WWID
//!    (`wwid:…` from `/sys/dev/block/M:m/device/wwid`; a partition gets its disk's WWID +
//!    `-partN`); or the preferred `/dev/disk/by-id` name the storage reports
//!    (`by-id:wwn-…` first, see `BY_ID_PREFERENCE`, then `BY_ID_STORAGE`; names made on the
//!    host such as `dm-name-…` are not used). A block device with none of these is refused
//!    ([`NamingError::NoStableId`]): its path (`/dev/rbd0`, `/dev/loop0`) is numbered per host;
//! 2. anything else: `path:<canonical path>`, where the canonical path is the realpath of the
//!    disk (symlinks and `..` resolved by the kernel) rewritten by the configured path map
//!    (`path_map = /mnt/nfs-a:/shared`: hosts that mount one share at different places agree).
//!
//! Path rules (predictable on every host; docs/RELIABILITY.md "Paths" has the table):
//! - the path must be absolute and contain no NUL byte, or it is refused;
//! - every spelling of one file names it once: `//`, `.`, `..`, symlinks and a trailing `/`
//!   all resolve away ([`resolve_path`]);
//! - a path that does not exist (yet) resolves as far as it exists, symlinks included (also
//!   one pointing at a missing file), and the missing rest is taken as written, normalised:
//!   the name is the one the file will have once it is created there;
//! - a symlink loop (more than 40 links) is refused;
//! - a realpath that is not UTF-8 is hashed from its raw bytes; people see it escaped
//!   (`\xff`), like control characters and `\\` ([`escape_bytes`]), so that two paths never look
//!   alike and a file name cannot drive a terminal.
//!
//! Lease identity: `lease:<len>:<lockspace><key>`, the lockspace (empty when absent) being
//! length-prefixed so that no two (lockspace, key) pairs collide. A NUL byte in either is
//! refused.
//!
//! Names (at most 64 bytes, the DLM's limit): `d1:` + the first 56 hex digits of
//! SHA-256(identity) for disks, `l1:` + the same for leases. The digit after the letter is
//! the naming version: a change to the rules above must bump it.

use proto::mode::Mode;
use proto::Resource;
use sha2::{Digest, Sha256};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Component, Path, PathBuf};

mod resolve;
pub use resolve::{resolve_path, Resolved};

/// Hex digits of the digest kept in a name: `d1:` + 56 = 59 bytes, under the DLM's 64.
const DIGEST_HEX: usize = 56;

/// A DLM-legal resource name (1..=64 bytes), made here; backends take and drop locks by it.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ResName(pub String);

/// Longest resource name the DLM accepts.
pub const DLM_RESNAME_MAX: usize = 64;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NamingError {
    #[error("disk path {0:?} is not absolute")]
    NotAbsolute(String),
    #[error("disk path {0:?} contains a NUL byte: no file has such a name, refused")]
    Nul(String),
    #[error("disk path {0:?} runs into a symlink loop (more than 40 links): refused")]
    SymlinkLoop(String),
    #[error("lease {0:?} contains a NUL byte: refused")]
    LeaseNul(String),
    #[error("lease key is empty")]
    EmptyKey,
    #[error(
        "block device {0} has no cluster-wide id (no WWID, no multipath or LVM device-mapper uuid, no /dev/disk/by-id \
         name reported by the storage): another host could reach the same storage under another name, or another \
         disk under this one (/dev/rbd0, /dev/loop0 are numbered per host), so it cannot be locked safely; refused. \
         Give the VM storage with such an id, or protect the disk with a <lease>"
    )]
    NoStableId(String),
}

/// Prefix rewrites applied to canonical paths, longest prefix first.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PathMap {
    rules: Vec<(PathBuf, PathBuf)>,
}

impl PathMap {
    /// `rules` are (local prefix, shared prefix) pairs; both must be absolute.
    pub fn new(mut rules: Vec<(PathBuf, PathBuf)>) -> Self {
        rules.sort_by_key(|r| std::cmp::Reverse(r.0.components().count()));
        PathMap { rules }
    }

    /// Rewrites `path` by the longest matching prefix (matching whole components only, so
    /// `/mnt/a` does not match `/mnt/ab`).
    pub fn apply(&self, path: &Path) -> PathBuf {
        for (from, to) in &self.rules {
            if let Ok(rest) = path.strip_prefix(from) {
                return if rest.as_os_str().is_empty() { to.clone() } else { to.join(rest) };
            }
        }
        path.to_path_buf()
    }
}

/// The naming rules in force on this host (from the config).
#[derive(Debug, Clone)]
pub struct Naming {
    pub path_map: PathMap,
    /// Whether read-only disks are locked (PR/CR) or left alone, as sanlock and lockd do.
    pub lock_readonly: bool,
    /// Whether a writable disk's backing images are locked with it (crate::chain).
    pub backing_chains: bool,
    /// Where `/dev/disk/by-id` lives (tests point it elsewhere).
    pub by_id_dir: PathBuf,
    /// Where `/sys/dev/block` lives.
    pub sys_block_dir: PathBuf,
}

impl Default for Naming {
    fn default() -> Self {
        Naming {
            path_map: PathMap::default(),
            lock_readonly: true,
            backing_chains: true,
            by_id_dir: PathBuf::from("/dev/disk/by-id"),
            sys_block_dir: PathBuf::from("/sys/dev/block"),
        }
    }
}

/// A resource resolved for locking.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Named {
    /// The DLM name (`d1:…` / `l1:…`).
    pub name: ResName,
    /// The exact string hashed into the name (`path:/…`, `dev:…`, `lease:…`).
    pub identity: String,
    /// What people read: the canonical path (or the device path with its id), or
    /// `lease <lockspace>/<key>`.
    pub readable: String,
    pub mode: Mode,
    /// For a backing image locked with a disk: that disk's readable form.
    pub backing_of: Option<String>,
    /// A disk's path as the client gave it (what QEMU opens: its backing chain is read there).
    pub source: Option<String>,
}

impl Naming {
    /// Resolves a libvirt resource. `Ok(None)`: nothing to lock (a read-only disk while
    /// `lock_readonly = false`).
    pub fn resolve(&self, res: &Resource) -> Result<Option<Named>, NamingError> {
        match res {
            Resource::Disk { path, readonly, shared } => {
                if *readonly && !self.lock_readonly {
                    return Ok(None);
                }
                let (identity, readable) = self.disk_identity(path)?;
                Ok(Some(Named {
                    name: ResName(name_for("d1:", identity.as_bytes())),
                    identity: escape_bytes(identity.as_bytes()),
                    readable,
                    mode: Mode::for_disk(*readonly, *shared),
                    backing_of: None,
                    source: Some(path.clone()),
                }))
            }
            Resource::Lease { lockspace, key, .. } => {
                if key.is_empty() {
                    return Err(NamingError::EmptyKey);
                }
                let space = lockspace.as_deref().unwrap_or("");
                let shown = if space.is_empty() { key.clone() } else { format!("{space}/{key}") };
                if shown.contains('\0') {
                    return Err(NamingError::LeaseNul(shown));
                }
                let identity = format!("lease:{}:{space}{key}", space.len());
                let readable = format!("lease {}", escape_bytes(shown.as_bytes()));
                Ok(Some(Named {
                    name: ResName(name_for("l1:", identity.as_bytes())),
                    identity,
                    readable,
                    mode: Mode::Ex,
                    backing_of: None,
                    source: None,
                }))
            }
        }
    }

    /// (identity bytes as a string, readable form) of a disk path.
    fn disk_identity(&self, path: &str) -> Result<(IdentityBytes, String), NamingError> {
        if path.contains('\0') {
            return Err(NamingError::Nul(path.to_owned()));
        }
        let p = Path::new(path);
        if !p.is_absolute() {
            return Err(NamingError::NotAbsolute(path.to_owned()));
        }
        let Resolved { path: canonical, meta } =
            resolve::resolve(p).ok_or_else(|| NamingError::SymlinkLoop(path.to_owned()))?;
        if let Some(id) = self.block_device_id(&canonical, meta) {
            let shown = escape_bytes(canonical.as_os_str().as_bytes());
            let id = id.ok_or(NamingError::NoStableId(shown.clone()))?;
            return Ok((IdentityBytes(format!("dev:{id}").into_bytes()), format!("{shown} ({id})")));
        }
        let mapped = self.path_map.apply(&canonical);
        let mut bytes = b"path:".to_vec();
        bytes.extend_from_slice(mapped.as_os_str().as_bytes());
        Ok((IdentityBytes(bytes), escape_bytes(mapped.as_os_str().as_bytes())))
    }

    /// `None` if `path` is no block device; else its cluster-wide id (`Some(None)`: it has none).
    /// `meta`: the file's metadata when its resolution already read them.
    fn block_device_id(&self, path: &Path, meta: Option<std::fs::Metadata>) -> Option<Option<String>> {
        let meta = match meta {
            Some(m) => m,
            None => std::fs::metadata(path).ok()?,
        };
        if !meta.file_type().is_block_device() {
            return None;
        }
        let rdev = meta.rdev();
        let sys = self.sys_block_dir.join(format!("{}:{}", libc::major(rdev), libc::minor(rdev)));
        Some(sysfs_id(&sys).or_else(|| self.by_id_link(rdev)))
    }

    /// The preferred `/dev/disk/by-id` name of device `rdev`.
    fn by_id_link(&self, rdev: u64) -> Option<String> {
        let mut links: Vec<String> = std::fs::read_dir(&self.by_id_dir)
            .ok()?
            .filter_map(|e| e.ok())
            .filter(|e| {
                std::fs::metadata(e.path())
                    .map(|m| m.file_type().is_block_device() && m.rdev() == rdev)
                    .unwrap_or(false)
            })
            .filter_map(|e| e.file_name().to_str().map(str::to_owned))
            .collect();
        // Only names the storage itself reports (WWN, NVMe EUI/UUID, SCSI page 83, then model
        // and serial); sorted within a class, so every host that sees the same links picks the
        // same. Names made on this host (`dm-name-…`, `md-name-…`, `dm-uuid-CRYPT-…`) are not ids.
        let class = |l: &str| BY_ID_PREFERENCE.iter().chain(BY_ID_STORAGE).position(|p| l.starts_with(p));
        links.retain(|l| class(l).is_some());
        links.sort_by_key(|l| (class(l), l.clone()));
        links.into_iter().next().map(|l| format!("by-id:{l}"))
    }
}

/// `/dev/disk/by-id` prefixes in order of preference.
const BY_ID_PREFERENCE: &[&str] = &["wwn-", "nvme-eui.", "nvme-uuid.", "scsi-3", "dm-uuid-mpath-", "dm-uuid-LVM-"];

/// Further `/dev/disk/by-id` names the storage reports (bus + model + serial), after those above.
const BY_ID_STORAGE: &[&str] = &["scsi-", "nvme-", "ata-", "virtio-", "usb-", "mmc-"];

/// An id from sysfs (`sys` = `/sys/dev/block/M:m`): a multipath map's or LVM volume's
/// device-mapper uuid (the same on every host that sees the storage), the disk's WWID, or
/// for a partition its disk's WWID plus the partition number.
fn sysfs_id(sys: &Path) -> Option<String> {
    let read = |p: PathBuf| std::fs::read_to_string(p).ok().map(|v| v.trim().to_owned()).filter(|v| !v.is_empty());
    if let Some(uuid) = read(sys.join("dm/uuid")) {
        // A multipath map is named by its paths' WWID, as each path is (a host without
        // multipath opens the path itself); its dm uuid only if no path reports one.
        if uuid.starts_with("mpath-") {
            return slaves_id(sys).filter(|id| id.starts_with("wwid:")).or(Some(format!("dm:{uuid}")));
        }
        // A partition of a multipath map (kpartx: `partN-mpath-…`): like that partition of a path.
        if let Some((n, _)) =
            uuid.strip_prefix("part").and_then(|r| r.split_once("-mpath-")).filter(|(n, _)| n.parse::<u32>().is_ok())
        {
            return slaves_id(sys).map(|id| format!("{id}-part{n}"));
        }
        if uuid.starts_with("LVM-") {
            return Some(format!("dm:{uuid}"));
        }
    }
    if let Some(wwid) = read(sys.join("device/wwid")) {
        return Some(format!("wwid:{wwid}"));
    }
    let part = read(sys.join("partition"))?;
    // A partition's sysfs directory sits inside its disk's.
    let disk = std::fs::canonicalize(sys).ok()?.parent()?.to_path_buf();
    let wwid = read(disk.join("device/wwid"))?;
    Some(format!("wwid:{wwid}-part{part}"))
}

/// The id of the first device under a device-mapper device (`slaves/`, sorted) that has one.
fn slaves_id(sys: &Path) -> Option<String> {
    let mut slaves: Vec<PathBuf> =
        std::fs::read_dir(sys.join("slaves")).ok()?.filter_map(|e| e.ok()).map(|e| e.path()).collect();
    slaves.sort();
    slaves.iter().find_map(|s| sysfs_id(s))
}

/// Identity as raw bytes (a realpath need not be UTF-8).
#[derive(Debug, Clone)]
struct IdentityBytes(Vec<u8>);

impl IdentityBytes {
    fn as_bytes(&self) -> &[u8] {
        &self.0
    }
}

/// Bytes for people: UTF-8 as it is, but every byte that is not UTF-8 as `\xNN`, control
/// characters escaped (`\n`, `\u{1b}`) and `\` doubled, so that different paths never look
/// the same in a lock table and a file name cannot drive the terminal showing it.
pub fn escape_bytes(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len());
    for chunk in bytes.utf8_chunks() {
        for c in chunk.valid().chars() {
            if c == '\\' || c.is_control() {
                out.extend(c.escape_default());
            } else {
                out.push(c);
            }
        }
        for b in chunk.invalid() {
            out.push_str(&format!("\\x{b:02x}"));
        }
    }
    out
}

/// `prefix` + the first [`DIGEST_HEX`] hex digits of SHA-256(`identity`).
fn name_for(prefix: &str, identity: &[u8]) -> String {
    let digest = Sha256::digest(identity);
    let mut out = String::with_capacity(prefix.len() + DIGEST_HEX);
    out.push_str(prefix);
    for b in digest.iter() {
        out.push_str(&format!("{b:02x}"));
    }
    out.truncate(prefix.len() + DIGEST_HEX);
    out
}

/// `.` and `..` resolved on the text alone (for paths that do not exist).
pub fn lexical_normalise(p: &Path) -> PathBuf {
    let mut out = PathBuf::from("/");
    for c in p.components() {
        match c {
            Component::Normal(s) => out.push(s),
            Component::ParentDir => {
                out.pop();
            }
            Component::CurDir | Component::RootDir | Component::Prefix(_) => {}
        }
    }
    out
}

/// Parses one `path_map` value: `LOCAL:SHARED`, both absolute.
pub fn parse_path_map_rule(v: &str) -> Result<(PathBuf, PathBuf), String> {
    let (from, to) = v.split_once(':').ok_or_else(|| format!("expected LOCAL:SHARED, got {v:?}"))?;
    let (from, to) = (Path::new(from.trim()), Path::new(to.trim()));
    if !from.is_absolute() || !to.is_absolute() {
        return Err(format!("both prefixes must be absolute paths, got {v:?}"));
    }
    Ok((lexical_normalise(from), lexical_normalise(to)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn disk(path: &str, readonly: bool, shared: bool) -> Resource {
        Resource::Disk { path: path.into(), readonly, shared }
    }

    fn tmpdir(tag: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("virtdlm-naming-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    #[test]
    fn names_have_the_documented_shape() {
        let n = Naming::default().resolve(&disk("/nonexistent/x/a.img", false, false)).unwrap().unwrap();
        assert!(n.name.0.starts_with("d1:"));
        assert_eq!(n.name.0.len(), 3 + DIGEST_HEX);
        assert_eq!(n.identity, "path:/nonexistent/x/a.img");
        assert_eq!(n.mode, Mode::Ex);
        // SHA-256("path:/nonexistent/x/a.img"), first 56 hex digits: fixed forever for d1.
        let full = format!("{:x}", Sha256::digest(b"path:/nonexistent/x/a.img"));
        assert_eq!(&n.name.0[3..], &full[..56]);
        let l = Naming::default()
            .resolve(&Resource::Lease { lockspace: Some("space".into()), key: "k".into(), path: None, offset: None })
            .unwrap()
            .unwrap();
        assert!(l.name.0.starts_with("l1:"));
        assert_eq!(l.readable, "lease space/k");
    }

    #[test]
    fn missing_paths_are_normalised_lexically() {
        let a = Naming::default().resolve(&disk("/nonexistent//x/./y/../a.img", false, false)).unwrap().unwrap();
        let b = Naming::default().resolve(&disk("/nonexistent/x/a.img", false, false)).unwrap().unwrap();
        assert_eq!(a.name, b.name);
        assert_eq!(lexical_normalise(Path::new("/../a/..//b")), PathBuf::from("/b"));
    }

    #[test]
    fn symlinks_and_dotdot_resolve_to_the_real_file() {
        let d = tmpdir("link");
        std::fs::create_dir(d.join("sub")).unwrap();
        std::fs::write(d.join("real.img"), b"").unwrap();
        std::os::unix::fs::symlink(d.join("real.img"), d.join("link.img")).unwrap();
        let n = Naming::default();
        let real = n.resolve(&disk(d.join("real.img").to_str().unwrap(), false, false)).unwrap().unwrap();
        let link = n.resolve(&disk(d.join("link.img").to_str().unwrap(), false, false)).unwrap().unwrap();
        let dots = n.resolve(&disk(d.join("sub/../real.img").to_str().unwrap(), false, false)).unwrap().unwrap();
        assert_eq!(real.name, link.name);
        assert_eq!(real.name, dots.name);
        std::fs::remove_dir_all(d).unwrap();
    }

    fn name_of(n: &Naming, path: &Path) -> Named {
        n.resolve(&disk(path.to_str().expect("test paths are UTF-8"), false, false)).unwrap().unwrap()
    }

    #[test]
    fn every_spelling_of_a_file_names_it_once() {
        let d = tmpdir("spell");
        std::fs::create_dir_all(d.join("real/sub")).unwrap();
        std::fs::write(d.join("real/a.img"), b"").unwrap();
        std::os::unix::fs::symlink("real", d.join("dirlink")).unwrap();
        std::os::unix::fs::symlink("../a.img", d.join("real/sub/rel.img")).unwrap();
        let n = Naming::default();
        let want = name_of(&n, &d.join("real/a.img"));
        let base = d.to_str().unwrap();
        for spelling in [
            format!("{base}//real///a.img"),
            format!("{base}/./real/./a.img"),
            format!("{base}/real/sub/../a.img"),
            format!("{base}/dirlink/a.img"),
            format!("{base}/dirlink/sub/../../dirlink/a.img"),
            format!("{base}/real/sub/rel.img"),
            format!("{base}/real/a.img/"),
        ] {
            let got = name_of(&n, Path::new(&spelling));
            assert_eq!((&got.name, &got.readable), (&want.name, &want.readable), "{spelling}");
        }
        assert_ne!(name_of(&n, &d.join("real/b.img")).name, want.name);
        std::fs::remove_dir_all(d).unwrap();
    }

    #[test]
    fn a_missing_file_gets_the_name_it_will_have_once_created() {
        let d = tmpdir("missing");
        std::fs::create_dir(d.join("real")).unwrap();
        std::os::unix::fs::symlink(d.join("real"), d.join("dirlink")).unwrap();
        std::os::unix::fs::symlink("later.img", d.join("real/dangling.img")).unwrap();
        let n = Naming::default();
        let through_link = name_of(&n, &d.join("dirlink/new.img"));
        let dangling = name_of(&n, &d.join("dirlink/dangling.img"));
        let beyond = name_of(&n, &d.join("dirlink/nodir/../x//y/./z.img"));
        assert_eq!(through_link.readable, format!("{}/real/new.img", d.display()));
        std::fs::write(d.join("real/new.img"), b"").unwrap();
        std::fs::write(d.join("real/later.img"), b"").unwrap();
        assert_eq!(name_of(&n, &d.join("real/new.img")).name, through_link.name);
        assert_eq!(name_of(&n, &d.join("real/later.img")).name, dangling.name);
        assert_eq!(beyond.readable, format!("{}/real/x/y/z.img", d.display()));
        std::fs::remove_dir_all(d).unwrap();
    }

    #[test]
    fn symlink_loops_are_refused() {
        let d = tmpdir("loop");
        std::os::unix::fs::symlink("b", d.join("a")).unwrap();
        std::os::unix::fs::symlink("a", d.join("b")).unwrap();
        let path = d.join("a/disk.img");
        let e = Naming::default().resolve(&disk(path.to_str().unwrap(), false, false)).unwrap_err();
        assert_eq!(e, NamingError::SymlinkLoop(path.to_str().unwrap().into()));
        assert!(e.to_string().contains("symlink loop"), "{e}");
        std::fs::remove_dir_all(d).unwrap();
    }

    #[test]
    fn a_non_utf8_file_is_named_by_its_bytes_and_shown_escaped() {
        use std::ffi::OsStr;
        let d = tmpdir("latin1");
        let latin1 = d.join(OsStr::from_bytes(b"caf\xe9.img"));
        let lookalike = d.join("caf\u{fffd}.img");
        std::fs::write(&latin1, b"").unwrap();
        std::fs::write(&lookalike, b"").unwrap();
        // The wire carries UTF-8 only: the file is reached through a UTF-8 symlink.
        std::os::unix::fs::symlink(&latin1, d.join("vm.img")).unwrap();
        let n = Naming::default();
        let a = name_of(&n, &d.join("vm.img"));
        assert_eq!(a.name, name_of(&n, &d.join("vm.img")).name, "stable");
        assert_eq!(a.readable, format!("{}/caf\\xe9.img", d.display()));
        assert_eq!(a.identity, format!("path:{}/caf\\xe9.img", d.display()));
        let b = name_of(&n, &lookalike);
        assert_ne!(a.name, b.name);
        assert_ne!(a.readable, b.readable);
        std::fs::remove_dir_all(d).unwrap();
    }

    #[test]
    fn escaping_keeps_text_and_marks_everything_else() {
        assert_eq!(escape_bytes("/var/lib/été/a b.img".as_bytes()), "/var/lib/été/a b.img");
        assert_eq!(escape_bytes(b"/a\\b\n\x1b[2J\xff\xfe"), "/a\\\\b\\n\\u{1b}[2J\\xff\\xfe");
    }

    #[test]
    fn path_map_makes_two_mount_points_agree() {
        let a = Naming {
            path_map: PathMap::new(vec![parse_path_map_rule("/mnt/nfs-a:/shared").unwrap()]),
            ..Naming::default()
        };
        let b = Naming {
            path_map: PathMap::new(vec![parse_path_map_rule("/srv/images:/shared").unwrap()]),
            ..Naming::default()
        };
        let na = a.resolve(&disk("/mnt/nfs-a/vm/a.img", false, false)).unwrap().unwrap();
        let nb = b.resolve(&disk("/srv/images/vm/a.img", false, false)).unwrap().unwrap();
        assert_eq!(na.name, nb.name);
        assert_eq!(na.readable, "/shared/vm/a.img");
        // Whole components only.
        let other = a.resolve(&disk("/mnt/nfs-ab/vm/a.img", false, false)).unwrap().unwrap();
        assert_eq!(other.readable, "/mnt/nfs-ab/vm/a.img");
        assert!(parse_path_map_rule("relative:/x").is_err());
        assert!(parse_path_map_rule("/no-colon").is_err());
    }

    #[test]
    fn modes_follow_the_disk_flags_and_readonly_can_be_left_unlocked() {
        let n = Naming::default();
        for (ro, sh, m) in
            [(false, false, Mode::Ex), (false, true, Mode::Cw), (true, false, Mode::Pr), (true, true, Mode::Cr)]
        {
            assert_eq!(n.resolve(&disk("/x/a.img", ro, sh)).unwrap().unwrap().mode, m);
        }
        let off = Naming { lock_readonly: false, ..Naming::default() };
        assert_eq!(off.resolve(&disk("/x/a.img", true, false)).unwrap(), None);
        assert_eq!(off.resolve(&disk("/x/a.img", true, true)).unwrap(), None);
        assert!(off.resolve(&disk("/x/a.img", false, true)).unwrap().is_some());
    }

    #[test]
    fn bad_paths_are_refused() {
        let n = Naming::default();
        assert!(matches!(n.resolve(&disk("rel/a.img", false, false)), Err(NamingError::NotAbsolute(_))));
        let e = n.resolve(&disk("/img/a\0b.img", false, false)).unwrap_err();
        assert_eq!(e, NamingError::Nul("/img/a\0b.img".into()));
        assert_eq!(e.to_string(), r#"disk path "/img/a\0b.img" contains a NUL byte: no file has such a name, refused"#);
        let empty = Resource::Lease { lockspace: None, key: String::new(), path: None, offset: None };
        assert_eq!(n.resolve(&empty), Err(NamingError::EmptyKey));
        let nul = Resource::Lease { lockspace: Some("s\0".into()), key: "k".into(), path: None, offset: None };
        assert_eq!(n.resolve(&nul), Err(NamingError::LeaseNul("s\0/k".into())));
    }

    #[test]
    fn block_devices_use_their_stable_id() {
        // /dev/null is a char device; /dev/loop0 (if any) a block device. Build a fake sysfs.
        let n = Naming { sys_block_dir: tmpdir("sys"), by_id_dir: tmpdir("byid"), ..Naming::default() };
        let Some(dev) = ["/dev/loop0", "/dev/sda", "/dev/vda", "/dev/nvme0n1", "/dev/xvda", "/dev/ram0"]
            .into_iter()
            .find(|p| std::fs::metadata(p).map(|m| m.file_type().is_block_device()).unwrap_or(false))
        else {
            panic!("no block device on this machine to test with (looked for loop0, sda, vda, ram0)");
        };
        let rdev = std::fs::metadata(dev).unwrap().rdev();
        let sys = n.sys_block_dir.join(format!("{}:{}/device", libc::major(rdev), libc::minor(rdev)));
        // No wwid, no by-id link: refused (host_local_block_device_names_are_refused).
        assert!(n.resolve(&disk(dev, false, false)).is_err());
        // A by-id link: wwn- preferred over others.
        std::os::unix::fs::symlink(dev, n.by_id_dir.join("ata-DISK_123")).unwrap();
        std::os::unix::fs::symlink(dev, n.by_id_dir.join("wwn-0x5000")).unwrap();
        let byid = n.resolve(&disk(dev, false, false)).unwrap().unwrap();
        assert_eq!(byid.identity, "dev:by-id:wwn-0x5000");
        // The kernel's WWID wins.
        std::fs::create_dir_all(&sys).unwrap();
        std::fs::write(sys.join("wwid"), "naa.600a0b80\n").unwrap();
        let wwid = n.resolve(&disk(dev, false, false)).unwrap().unwrap();
        assert_eq!(wwid.identity, "dev:wwid:naa.600a0b80");
        // A multipath map or LVM volume: the dm uuid wins.
        std::fs::create_dir_all(sys.parent().unwrap().join("dm")).unwrap();
        std::fs::write(sys.parent().unwrap().join("dm/uuid"), "mpath-3600a0b80\n").unwrap();
        let dm = n.resolve(&disk(dev, false, false)).unwrap().unwrap();
        assert_eq!(dm.identity, "dev:dm:mpath-3600a0b80");
        std::fs::remove_dir_all(&n.sys_block_dir).unwrap();
        std::fs::remove_dir_all(&n.by_id_dir).unwrap();
    }

    /// A fake /sys/dev/block: `M:m` links to device directories under `devices/`.
    fn fake_sys(root: &Path, dev: &str, majmin: &str) -> PathBuf {
        let d = root.join("devices").join(dev);
        std::fs::create_dir_all(&d).unwrap();
        std::fs::create_dir_all(root.join("block")).unwrap();
        std::os::unix::fs::symlink(&d, root.join("block").join(majmin)).unwrap();
        d
    }

    /// A multipath map and each raw path under it name one lock: the map by its paths' WWID,
    /// so a host that opens /dev/mapper/mpatha and a host that opens /dev/sdb (no multipath
    /// there) lock the same disk; a partition of the map like the same partition of a path.
    /// Break it: name a map by its dm uuid (`dm:mpath-…`, as before): this test fails with
    /// "left: Some(\"dm:mpath-3600a0b80\")" (checked).
    #[test]
    fn a_multipath_map_and_its_paths_name_one_lock() {
        let root = tmpdir("mpath");
        for (dev, mm) in [("sdb", "8:16"), ("sdc", "8:32")] {
            let d = fake_sys(&root, dev, mm);
            std::fs::create_dir_all(d.join("device")).unwrap();
            std::fs::write(d.join("device/wwid"), "naa.600a0b80\n").unwrap();
        }
        let map = fake_sys(&root, "dm-0", "253:0");
        std::fs::create_dir_all(map.join("dm")).unwrap();
        std::fs::write(map.join("dm/uuid"), "mpath-3600a0b80\n").unwrap();
        std::fs::create_dir_all(map.join("slaves")).unwrap();
        std::os::unix::fs::symlink(root.join("devices/sdc"), map.join("slaves/sdc")).unwrap();
        std::os::unix::fs::symlink(root.join("devices/sdb"), map.join("slaves/sdb")).unwrap();
        let part = fake_sys(&root, "dm-1", "253:1");
        std::fs::create_dir_all(part.join("dm")).unwrap();
        std::fs::write(part.join("dm/uuid"), "part2-mpath-3600a0b80\n").unwrap();
        std::fs::create_dir_all(part.join("slaves")).unwrap();
        std::os::unix::fs::symlink(&map, part.join("slaves/dm-0")).unwrap();
        let raw_part = root.join("devices/sdb/sdb2");
        std::fs::create_dir_all(&raw_part).unwrap();
        std::fs::write(raw_part.join("partition"), "2\n").unwrap();
        std::os::unix::fs::symlink(&raw_part, root.join("block/8:18")).unwrap();
        let id = |mm: &str| sysfs_id(&root.join("block").join(mm));
        assert_eq!(id("253:0").as_deref(), Some("wwid:naa.600a0b80"));
        assert_eq!(id("253:0"), id("8:16"), "the map and a path");
        assert_eq!(id("8:16"), id("8:32"), "two paths");
        assert_eq!(id("253:1").as_deref(), Some("wwid:naa.600a0b80-part2"));
        assert_eq!(id("253:1"), id("8:18"), "a partition of the map and of a path");
        // A map whose paths report no WWID keeps its dm uuid (the same on every host).
        std::fs::remove_file(root.join("devices/sdb/device/wwid")).unwrap();
        std::fs::remove_file(root.join("devices/sdc/device/wwid")).unwrap();
        assert_eq!(id("253:0").as_deref(), Some("dm:mpath-3600a0b80"));
        std::fs::remove_dir_all(root).unwrap();
    }

    /// Only `/dev/disk/by-id` names the storage itself reports are taken; names this host
    /// made up (`dm-name-…`, the device-mapper name chosen here) are not, and a block device
    /// with no cluster-wide id is refused, never named by its host-local path (`/dev/rbd0`,
    /// `/dev/loop0` are numbered per host).
    /// Break it: accept every by-id link (drop the `links.retain` in `by_id_link`, as before):
    /// this test fails with `Ok("dev:by-id:dm-name-vg-data")` (checked); the refusal replaces
    /// the former `path:` fallback (`block_devices_use_their_stable_id` asserted it).
    #[test]
    fn host_local_block_device_names_are_refused() {
        let n = Naming { sys_block_dir: tmpdir("sys-local"), by_id_dir: tmpdir("byid-local"), ..Naming::default() };
        let dev = a_block_device();
        let id = || n.resolve(&disk(dev, false, false)).map(|r| r.unwrap().identity);
        assert!(matches!(id(), Err(NamingError::NoStableId(_))), "{:?}", id());
        let e = id().unwrap_err().to_string();
        assert!(e.contains(dev) && e.contains("no cluster-wide id") && e.contains("by-id"), "{e}");
        std::os::unix::fs::symlink(dev, n.by_id_dir.join("dm-name-vg-data")).unwrap();
        std::os::unix::fs::symlink(dev, n.by_id_dir.join("dm-uuid-CRYPT-LUKS2-0f1e-data")).unwrap();
        assert!(matches!(id(), Err(NamingError::NoStableId(_))), "{:?}", id());
        std::os::unix::fs::symlink(dev, n.by_id_dir.join("scsi-SATA_DISK_123")).unwrap();
        assert_eq!(id(), Ok("dev:by-id:scsi-SATA_DISK_123".to_string()));
        std::fs::remove_dir_all(&n.sys_block_dir).unwrap();
        std::fs::remove_dir_all(&n.by_id_dir).unwrap();
    }

    fn a_block_device() -> &'static str {
        ["/dev/loop0", "/dev/sda", "/dev/vda", "/dev/nvme0n1", "/dev/xvda", "/dev/ram0"]
            .into_iter()
            .find(|p| std::fs::metadata(p).map(|m| m.file_type().is_block_device()).unwrap_or(false))
            .expect("no block device on this machine to test with (looked for loop0, sda, vda, ram0)")
    }

    #[test]
    fn a_partition_is_named_by_its_disks_wwid() {
        let root = tmpdir("part");
        let disk_dir = root.join("devices/sda");
        std::fs::create_dir_all(disk_dir.join("device")).unwrap();
        std::fs::create_dir_all(disk_dir.join("sda2")).unwrap();
        std::fs::write(disk_dir.join("device/wwid"), "naa.5000c500\n").unwrap();
        std::fs::write(disk_dir.join("sda2/partition"), "2\n").unwrap();
        std::fs::create_dir_all(root.join("block")).unwrap();
        std::os::unix::fs::symlink(disk_dir.join("sda2"), root.join("block/8:2")).unwrap();
        assert_eq!(sysfs_id(&root.join("block/8:2")).as_deref(), Some("wwid:naa.5000c500-part2"));
        // Not a partition and no wwid: nothing from sysfs.
        std::os::unix::fs::symlink(root.join("devices"), root.join("block/8:9")).unwrap();
        assert_eq!(sysfs_id(&root.join("block/8:9")), None);
        std::fs::remove_dir_all(root).unwrap();
    }

    proptest! {
        #[test]
        fn names_fit_are_stable_and_distinct(a in "/[a-z0-9/._-]{0,300}", b in "/[a-z0-9/._-]{0,300}") {
            let n = Naming::default();
            let na = n.resolve(&disk(&a, false, false)).unwrap().unwrap();
            prop_assert!(na.name.0.len() <= DLM_RESNAME_MAX);
            prop_assert_eq!(&na.name, &n.resolve(&disk(&a, false, false)).unwrap().unwrap().name);
            let nb = n.resolve(&disk(&b, false, false)).unwrap().unwrap();
            prop_assert_eq!(na.identity == nb.identity, na.name == nb.name);
        }

        #[test]
        fn lease_names_fit_and_do_not_collide(s1 in "[a-z:/]{0,20}", k1 in "[a-z:/]{1,20}", s2 in "[a-z:/]{0,20}", k2 in "[a-z:/]{1,20}") {
            let n = Naming::default();
            let l = |s: &str, k: &str| n.resolve(&Resource::Lease {
                lockspace: if s.is_empty() { None } else { Some(s.into()) }, key: k.into(), path: None, offset: None,
            }).unwrap().unwrap();
            let (a, b) = (l(&s1, &k1), l(&s2, &k2));
            prop_assert!(a.name.0.len() <= DLM_RESNAME_MAX);
            prop_assert_eq!(s1 == s2 && k1 == k2, a.name == b.name);
        }
    }
}
