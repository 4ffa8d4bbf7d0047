//! A disk's backing images, locked with it (crate::chain): every image under a writable disk
//! is held in PR, so any number of VMs may read it through their overlays and no VM, on any
//! host, may open it for writing meanwhile. They are shown as "<image> (backing of <disk>)".

use super::{Registry, RegistryError};
use crate::backend::ResName;
use crate::naming::Named;
use proto::conflict;
use proto::Resource;

impl Registry {
    /// The backing images of disk `r` (named `top`), to lock in PR: none for leases,
    /// read-only disks (they write nothing through to a base) or with `backing_chains = false`.
    pub(super) fn backing_images(&self, r: &Resource, top: &Named) -> Result<Vec<Named>, RegistryError> {
        let Resource::Disk { path, readonly: false, .. } = r else { return Ok(Vec::new()) };
        if !self.naming.backing_chains {
            return Ok(Vec::new());
        }
        let links = crate::chain::walk::backing_chain(std::path::Path::new(path)).map_err(|e| {
            RegistryError::BadRequest(format!(
                "{e}; the disk is refused, as QEMU could not open it safely either. Fix the image chain \
                 (qemu-img info --backing-chain {}), or set backing_chains = false in virtdlmd.conf to lock only the disk itself",
                top.readable
            ))
        })?;
        let mut out = Vec::new();
        for l in links {
            let Some(path) = l.path.to_str() else {
                return Err(RegistryError::BadRequest(format!(
                    "backing chain of {}: backing file {} is not a UTF-8 path, which cannot be named for locking; refused",
                    top.readable,
                    l.path.display()
                )));
            };
            // Named as a writable disk would be (so `lock_readonly = false` does not skip it).
            let as_disk = Resource::Disk { path: path.to_owned(), readonly: false, shared: false };
            let Some(mut n) = self.naming.resolve(&as_disk).map_err(|e| RegistryError::BadRequest(e.to_string()))?
            else {
                continue;
            };
            n.mode = proto::mode::Mode::Pr;
            n.readable = conflict::backing_note(&n.readable, &top.readable);
            n.backing_of = Some(top.readable.clone());
            out.push(n);
        }
        Ok(out)
    }
}

impl Registry {
    /// The images among `releasing` that another of the owner's disks still reads through
    /// (its chain, read again now: it may have changed since it was locked). Called under
    /// the table lock: a release reads a few 64 KiB headers, as the acquire did. A chain that
    /// cannot be read now keeps nothing: its disk was granted on a chain that could be.
    pub(super) fn still_read(&self, o: &super::Owner, releasing: &[ResName]) -> Vec<ResName> {
        if !self.naming.backing_chains || releasing.is_empty() {
            return Vec::new();
        }
        let mut out = Vec::new();
        for (name, h) in &o.held {
            let Some(source) = h.source.as_deref().filter(|_| !h.backing && !releasing.contains(name)) else {
                continue;
            };
            let Ok(links) = crate::chain::walk::backing_chain(std::path::Path::new(source)) else { continue };
            for l in links {
                let Some(path) = l.path.to_str() else { continue };
                let as_disk = Resource::Disk { path: path.to_owned(), readonly: false, shared: false };
                if let Ok(Some(n)) = self.naming.resolve(&as_disk) {
                    if releasing.contains(&n.name) && !out.contains(&n.name) {
                        out.push(n.name);
                    }
                }
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::local::LocalBackend;
    use crate::chain::qcow2;
    use crate::journal::Journal;
    use crate::lockloss::tests::spec;
    use crate::naming::Naming;
    use proto::mode::Mode;
    use std::path::{Path, PathBuf};
    use std::sync::Arc;

    struct Setup {
        dir: PathBuf,
        registry: Registry,
        vms: Vec<std::process::Child>,
    }

    impl Drop for Setup {
        fn drop(&mut self) {
            for p in &mut self.vms {
                let _ = p.kill();
                let _ = p.wait();
            }
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }

    /// A registry on the local backend, `vms` live processes standing for QEMUs, and in
    /// `dir`: base.raw, base.qcow2 (over base.raw, declared raw), ov1.qcow2 and ov2.qcow2
    /// (over base.qcow2, by relative name).
    fn setup(tag: &str, vms: usize, naming: Naming) -> Setup {
        let dir = std::env::temp_dir().join(format!("registry-backing-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("base.raw"), b"raw").unwrap();
        std::fs::write(dir.join("base.qcow2"), qcow2::build(3, Some((b"base.raw", Some("raw"))))).unwrap();
        for ov in ["ov1.qcow2", "ov2.qcow2"] {
            std::fs::write(dir.join(ov), qcow2::build(2, Some((b"./base.qcow2", Some("qcow2"))))).unwrap();
        }
        let (journal, _) = Journal::open(&dir.join("journal"), 1 << 20, false).unwrap();
        let (tx, _rx) = tokio::sync::mpsc::unbounded_channel();
        let registry = Registry::new(Arc::new(LocalBackend::new("n1")), naming, journal, tx);
        let vms = (0..vms).map(|_| std::process::Command::new("sleep").arg("60").spawn().unwrap()).collect();
        Setup { dir, registry, vms }
    }

    fn disk(p: &Path) -> Resource {
        Resource::Disk { path: p.to_str().unwrap().into(), readonly: false, shared: false }
    }

    impl Setup {
        fn vm(&self, n: usize) -> proto::OwnerSpec {
            spec(self.vms[n].id(), n as u8 + 1)
        }
        fn acquire(&self, n: usize, image: &str) -> Result<(), RegistryError> {
            self.registry.acquire(None, &self.vm(n), &[disk(&self.dir.join(image))], 0)
        }
        /// (identity, mode, vm name) of every lock held.
        fn held(&self) -> Vec<(String, Mode, String)> {
            let strip = |s: &str| s.replace(&format!("{}/", self.dir.display()), "");
            self.registry.local_locks().iter().map(|l| (strip(&l.identity), l.mode, l.vm_name.clone())).collect()
        }
    }

    fn refusal(r: Result<(), RegistryError>) -> String {
        match r {
            Err(RegistryError::Conflict { message, .. }) => message,
            other => panic!("expected a conflict, got {other:?}"),
        }
    }

    /// The base of a running overlay is held PR, under its own name (the one a VM started on
    /// the base would take), so a VM on the base is refused, naming overlay and VM, while a
    /// second overlay's VM runs. Fails if `backing_images` returns no image.
    #[test]
    fn a_base_is_held_read_only_for_its_overlays() {
        let s = setup("base", 3, Naming::default());
        s.acquire(0, "ov1.qcow2").unwrap();
        let v = |i: &str, m, vm: &str| (i.to_string(), m, vm.to_string());
        assert_eq!(
            s.held(),
            vec![
                v("base.qcow2 (backing of ov1.qcow2)", Mode::Pr, "vm1"),
                v("base.raw (backing of ov1.qcow2)", Mode::Pr, "vm1"),
                v("ov1.qcow2", Mode::Ex, "vm1"),
            ]
        );
        let m = refusal(s.acquire(1, "base.qcow2"));
        let ov1 = s.dir.join("ov1.qcow2");
        assert!(m.contains(&format!("is the backing file of {}, used by VM vm1", ov1.display())), "{m}");
        assert!(m.contains("virsh blockpull"), "{m}");
        // The raw image under the base is protected too.
        assert!(refusal(s.acquire(1, "base.raw")).contains("used by VM vm1"));
        s.acquire(2, "ov2.qcow2").expect("a second overlay over the same base runs");
        assert_eq!(s.held().iter().filter(|l| l.0.starts_with("base.qcow2")).count(), 2);
    }

    /// An overlay whose base another VM writes is refused, naming that VM.
    #[test]
    fn an_overlay_over_a_base_in_use_is_refused() {
        let s = setup("writer", 2, Naming::default());
        s.acquire(0, "base.qcow2").unwrap();
        let m = refusal(s.acquire(1, "ov1.qcow2"));
        assert!(m.contains("(backing of") && m.contains("held exclusively by VM vm1"), "{m}");
        assert!(s.held().iter().all(|l| l.2 == "vm1"), "all or nothing: {:?}", s.held());
    }

    /// One owner listing an image as a disk and as another disk's backing image holds it
    /// once, in the stronger mode, shown as the disk; after a snapshot (the old top becomes a
    /// backing image of the new one) the old top stays EX.
    #[test]
    fn an_image_listed_twice_is_held_once_in_the_stronger_mode() {
        let s = setup("twice", 1, Naming::default());
        let both = [disk(&s.dir.join("base.qcow2")), disk(&s.dir.join("ov1.qcow2"))];
        s.registry.acquire(None, &s.vm(0), &both, 0).unwrap();
        assert!(s.held().contains(&("base.qcow2".into(), Mode::Ex, "vm1".into())), "{:?}", s.held());
        s.registry.release(None, &s.vm(0), &both).unwrap();
        assert!(s.held().is_empty(), "{:?}", s.held());

        // Snapshot: the VM runs on base.qcow2, then libvirt attaches the new top ov1.qcow2.
        s.acquire(0, "base.qcow2").unwrap();
        s.acquire(0, "ov1.qcow2").expect("the old top, held EX, is the new top's backing image");
        assert!(s.held().contains(&("base.qcow2".into(), Mode::Ex, "vm1".into())), "{:?}", s.held());
    }

    /// A disk-only snapshot: libvirt takes the new top (still empty), QEMU writes its header
    /// (backing file: the old top), then libvirt releases the old top. The old top stays
    /// held, EX, while the new top reads through it. Fails if `release` ignores `still_read`.
    #[test]
    fn the_old_top_stays_held_after_a_snapshot() {
        let s = setup("snapshot", 2, Naming::default());
        s.acquire(0, "ov1.qcow2").unwrap();
        let snap = s.dir.join("ov1.snap");
        std::fs::write(&snap, b"").unwrap();
        s.registry.acquire(None, &s.vm(0), &[disk(&snap)], 0).unwrap();
        std::fs::write(&snap, qcow2::build(3, Some((b"ov1.qcow2", Some("qcow2"))))).unwrap();
        s.registry.release(None, &s.vm(0), &[disk(&s.dir.join("ov1.qcow2"))]).unwrap();
        assert!(s.held().contains(&("ov1.qcow2".into(), Mode::Ex, "vm1".into())), "{:?}", s.held());
        assert!(s.acquire(1, "ov1.qcow2").is_err(), "the old top is protected from a writer");
        // An active commit into the old top: libvirt lists it as a disk again, then releases
        // the committed image; the old top is the VM's disk again and stays, with its base.
        // Fails if acquire leaves it flagged as a backing image (all went with the release).
        s.acquire(0, "ov1.qcow2").unwrap();
        s.registry.release(None, &s.vm(0), &[disk(&snap)]).unwrap();
        assert!(s.held().contains(&("ov1.qcow2".into(), Mode::Ex, "vm1".into())), "{:?}", s.held());
        assert!(s.held().iter().any(|l| l.0 == "base.qcow2 (backing of ov1.qcow2)"), "{:?}", s.held());
        // A disk no other disk reads through goes at once (hot unplug).
        std::fs::write(s.dir.join("plain.img"), b"raw").unwrap();
        s.acquire(0, "plain.img").unwrap();
        s.registry.release(None, &s.vm(0), &[disk(&s.dir.join("plain.img"))]).unwrap();
        s.acquire(1, "plain.img").expect("released on unplug");
    }

    /// `virsh blockcommit --base B` while the VM runs: libvirt asks for B, which the VM
    /// reads as a backing file (PR), as a disk (EX). Refused with what to do instead, and
    /// nothing changes. Break it: drop the `h.backing` arm in `acquire_gated`: the message is
    /// the generic "release it before taking it in another mode" and this test fails (checked).
    #[test]
    fn committing_into_a_base_read_as_backing_is_refused_with_what_to_do() {
        let s = setup("commit", 1, Naming::default());
        s.acquire(0, "ov1.qcow2").unwrap();
        let before = s.held();
        let m = match s.acquire(0, "base.qcow2") {
            Err(RegistryError::OutOfOrder(m)) => m,
            other => panic!("expected a refusal, got {other:?}"),
        };
        let ov1 = s.dir.join("ov1.qcow2");
        assert!(m.contains(&format!("as the backing file of {}", ov1.display())), "{m}");
        assert!(m.contains("does not convert a backing image's shared read lock"), "{m}");
        assert!(m.contains("qemu-img commit") && m.contains("virsh blockpull"), "{m}");
        assert_eq!(s.held(), before);
    }

    /// Backing images go with the owner's last disk, not before: fails if `release` drops
    /// them with the first disk or keeps them after the last.
    #[test]
    pub(super) fn backing_images_are_released_with_the_last_disk() {
        let s = setup("release", 1, Naming::default());
        let ov1 = disk(&s.dir.join("ov1.qcow2"));
        let other = Resource::Lease { lockspace: None, key: "k".into(), path: None, offset: None };
        s.registry.acquire(None, &s.vm(0), &[ov1.clone(), other.clone()], 0).unwrap();
        s.registry.release(None, &s.vm(0), &[ov1]).unwrap();
        assert_eq!(s.held().len(), 3, "the base stays while the VM holds anything: {:?}", s.held());
        s.registry.release(None, &s.vm(0), &[other]).unwrap();
        assert!(s.held().is_empty(), "{:?}", s.held());
    }

    /// `backing_chains = false` and read-only disks: only the disk itself, as before.
    #[test]
    fn switched_off_and_read_only_disks_lock_the_disk_alone() {
        let s = setup("off", 2, Naming { backing_chains: false, ..Naming::default() });
        s.acquire(0, "ov1.qcow2").unwrap();
        assert_eq!(s.held().len(), 1);
        s.acquire(1, "base.qcow2").expect("nothing holds the base");
        let s = setup("ro", 1, Naming::default());
        let ro =
            Resource::Disk { path: s.dir.join("ov1.qcow2").to_str().unwrap().into(), readonly: true, shared: false };
        s.registry.acquire(None, &s.vm(0), &[ro], 0).unwrap();
        assert_eq!(s.held(), vec![("ov1.qcow2".into(), Mode::Pr, "vm1".into())]);
    }

    /// A chain that cannot be read safely refuses the disk, saying what to do.
    #[test]
    fn a_broken_chain_refuses_the_disk() {
        let s = setup("broken", 1, Naming::default());
        std::fs::write(s.dir.join("loop.qcow2"), qcow2::build(3, Some((b"loop.qcow2", None)))).unwrap();
        match s.acquire(0, "loop.qcow2") {
            Err(RegistryError::BadRequest(m)) => {
                assert!(m.contains("loops") && m.contains("backing_chains = false"), "{m}")
            }
            other => panic!("{other:?}"),
        }
        assert!(s.held().is_empty());
    }
}
