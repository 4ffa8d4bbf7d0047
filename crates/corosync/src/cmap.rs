//! cmap: corosync's configuration map, read for the cluster's node names and quorum options.

use super::error::{check, CsError, Error, Result};
use cpg_sys as sys;
use std::collections::BTreeMap;
use std::ffi::{c_char, CStr, CString};
use std::fmt;

/// A libcmap handle (no tracking, no callbacks).
pub struct Cmap {
    handle: sys::cmap_handle_t,
}

impl fmt::Debug for Cmap {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Cmap").field("handle", &self.handle).finish()
    }
}

fn key(k: &str) -> Result<CString> {
    CString::new(k).map_err(|_| Error::BadName { what: "cmap key", name: k.to_owned(), why: "it contains a NUL byte" })
}

impl Cmap {
    /// Connects (`cmap_initialize`).
    pub fn new() -> Result<Self> {
        let mut handle: sys::cmap_handle_t = 0;
        // SAFETY: valid out-pointer.
        check("cmap_initialize", unsafe { sys::cmap_initialize(&mut handle) })?;
        Ok(Cmap { handle })
    }

    /// A u32 key (`cmap_get_uint32`); `None` if the key does not exist.
    pub fn get_u32(&self, k: &str) -> Result<Option<u32>> {
        let k = key(k)?;
        let mut v: u32 = 0;
        // SAFETY: valid handle, NUL-terminated key, valid out-pointer.
        let rc = unsafe { sys::cmap_get_uint32(self.handle, k.as_ptr(), &mut v) };
        not_exist_is_none(check("cmap_get_uint32", rc).map(|()| v))
    }

    /// A u8 key (`cmap_get_uint8`, e.g. `quorum.two_node`); `None` if the key does not exist.
    pub fn get_u8(&self, k: &str) -> Result<Option<u8>> {
        let k = key(k)?;
        let mut v: u8 = 0;
        // SAFETY: valid handle, NUL-terminated key, valid out-pointer.
        let rc = unsafe { sys::cmap_get_uint8(self.handle, k.as_ptr(), &mut v) };
        not_exist_is_none(check("cmap_get_uint8", rc).map(|()| v))
    }

    /// A string key (`cmap_get_string`); `None` if the key does not exist.
    pub fn get_string(&self, k: &str) -> Result<Option<String>> {
        let k = key(k)?;
        let mut p: *mut c_char = std::ptr::null_mut();
        // SAFETY: valid handle, NUL-terminated key, valid out-pointer.
        let rc = unsafe { sys::cmap_get_string(self.handle, k.as_ptr(), &mut p) };
        let r = check("cmap_get_string", rc).map(|()| {
            if p.is_null() {
                return String::new();
            }
            // SAFETY: on success libcmap returns a malloc'ed NUL-terminated string.
            let s = unsafe { CStr::from_ptr(p) }.to_string_lossy().into_owned();
            // SAFETY: the string was malloc'ed by libcmap and is ours to free, once.
            unsafe { libc::free(p.cast()) };
            s
        });
        not_exist_is_none(r)
    }

    /// Node id -> name from the configured nodelist: `nodelist.node.<i>.nodeid` for
    /// i = 0, 1, … and its `.name`, or `.ring0_addr` when the node has no name (the
    /// fallback pacemaker uses too).
    pub fn node_names(&self) -> Result<BTreeMap<u32, String>> {
        let mut names = BTreeMap::new();
        for i in 0.. {
            let Some(nodeid) = self.get_u32(&format!("nodelist.node.{i}.nodeid"))? else {
                break;
            };
            let name = match self.get_string(&format!("nodelist.node.{i}.name"))? {
                Some(n) => n,
                None => self.get_string(&format!("nodelist.node.{i}.ring0_addr"))?.unwrap_or_default(),
            };
            names.insert(nodeid, name);
        }
        Ok(names)
    }
}

fn not_exist_is_none<T>(r: Result<T>) -> Result<Option<T>> {
    match r {
        Ok(v) => Ok(Some(v)),
        Err(e) if e.code() == Some(CsError::NotExist) => Ok(None),
        Err(e) => Err(e),
    }
}

impl Drop for Cmap {
    /// `cmap_finalize`.
    fn drop(&mut self) {
        // SAFETY: valid handle, finalized exactly once.
        unsafe { sys::cmap_finalize(self.handle) };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn not_exist_is_absence_not_failure() {
        let e = check("cmap_get_uint32", sys::CS_ERR_NOT_EXIST).map(|()| 0u32);
        assert_eq!(not_exist_is_none(e).unwrap(), None);
        let e = check("cmap_get_uint32", sys::CS_ERR_ACCESS).map(|()| 0u32);
        assert_eq!(not_exist_is_none(e).unwrap_err().code(), Some(CsError::Access));
        assert!(key("a\0b").is_err());
    }

    #[test]
    fn without_corosync_new_fails_with_not_running() {
        let err = super::super::test_isolation::without_corosync(Cmap::new)
            .expect_err("no corosync is reachable in an empty network namespace");
        assert!(err.is_not_running(), "{err}");
    }
}
