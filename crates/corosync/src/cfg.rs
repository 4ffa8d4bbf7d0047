//! cfg: corosync's configuration service, used for our own node id.

use super::error::{check, Result};
use cpg_sys as sys;
use std::fmt;

/// A libcfg handle (no callbacks).
pub struct Cfg {
    handle: sys::corosync_cfg_handle_t,
}

impl fmt::Debug for Cfg {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Cfg").field("handle", &self.handle).finish()
    }
}

impl Cfg {
    /// Connects (`corosync_cfg_initialize`, no callbacks).
    pub fn new() -> Result<Self> {
        let mut handle: sys::corosync_cfg_handle_t = 0;
        // SAFETY: valid out-pointer; a null callbacks pointer means "no callbacks".
        check("corosync_cfg_initialize", unsafe { sys::corosync_cfg_initialize(&mut handle, std::ptr::null()) })?;
        Ok(Cfg { handle })
    }

    /// This node's id (`corosync_cfg_local_get`), as dlm_controld gets it; it is the id the
    /// kernel DLM knows this node by.
    pub fn local_nodeid(&self) -> Result<u32> {
        let mut id: std::ffi::c_uint = 0;
        // SAFETY: valid handle, valid out-pointer.
        check("corosync_cfg_local_get", unsafe { sys::corosync_cfg_local_get(self.handle, &mut id) })?;
        Ok(id)
    }
}

impl Drop for Cfg {
    /// `corosync_cfg_finalize`.
    fn drop(&mut self) {
        // SAFETY: valid handle, finalized exactly once.
        unsafe { sys::corosync_cfg_finalize(self.handle) };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn without_corosync_new_fails_with_not_running() {
        let err = super::super::test_isolation::without_corosync(Cfg::new)
            .expect_err("no corosync is reachable in an empty network namespace");
        assert!(err.is_not_running(), "{err}");
        assert!(err.to_string().starts_with("corosync_cfg_initialize:"), "{err}");
    }
}
