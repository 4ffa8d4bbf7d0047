//! Disk paths as a client sends them, turned into lock names on this host's real filesystem.
//! Properties: no panic; a name fits the DLM; the resolved path is normal (absolute, no `//`,
//! `.` or `..` component, no trailing `/`); resolving it again gives the same lock (every
//! spelling of one file names it once).
#![no_main]

use libfuzzer_sys::fuzz_target;
use lockmgr::naming::{Naming, DLM_RESNAME_MAX};
use proto::Resource;

fuzz_target!(|data: &[u8]| {
    let Ok(path) = std::str::from_utf8(data) else { return };
    let naming = Naming::default();
    let disk = |p: &str| Resource::Disk { path: p.into(), readonly: false, shared: false };
    let Ok(Some(named)) = naming.resolve(&disk(path)) else { return };
    assert!(named.name.0.len() <= DLM_RESNAME_MAX);
    // Block devices are named by their id; escaped text is not a path to resolve again.
    if !named.identity.starts_with("path:") || named.readable.contains('\\') {
        return;
    }
    let r = &named.readable;
    assert!(r.starts_with('/'), "{path:?} -> {r:?}");
    assert!(r == "/" || !r.ends_with('/'), "{path:?} -> {r:?}");
    let normal = r.split('/').skip(1).all(|c| !c.is_empty() && c != "." && c != "..");
    assert!(r == "/" || normal, "{path:?} -> {r:?}");
    let again = naming.resolve(&disk(r)).expect("a resolved path resolves").expect("disks are locked");
    assert_eq!((&again.name, &again.readable), (&named.name, r), "{path:?}");
});
