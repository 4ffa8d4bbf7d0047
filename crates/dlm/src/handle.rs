//! A lockspace as this process holds it open: the libdlm handle, its dispatcher thread, and the
//! registry of lock cells the kernel may still call back for. [`super::lock`] issues calls on
//! it, [`super::lockspace`] opens and releases it.

use super::cell::LockCell;
use super::dispatch::{Dispatcher, Registry};
use super::error::DlmError;
use super::name::LockspaceName;
use super::Result;
use parking_lot::{Mutex, RwLock};
use std::ffi::{c_void, CString};
use std::ptr::NonNull;
use std::sync::Arc;

/// libdlm keeps unprotected global state (the control device fd) used by create, open and
/// release: one call at a time in the whole process. Creating blocks until the lockspace has
/// joined, so an open or release may wait behind a create.
pub(super) static LIBDLM_GLOBAL: Mutex<()> = Mutex::new(());

/// The libdlm handle (a malloc'ed `{fd, tid}`).
pub(super) struct Handle(pub(super) NonNull<c_void>);

// SAFETY: libdlm's per-lock calls on a handle are independent `write()`s on its fd, which the
// kernel serialises; the handle itself is only freed under the lockspace's write lock.
unsafe impl Send for Handle {}
// SAFETY: see `Send`.
unsafe impl Sync for Handle {}

pub(super) struct Open {
    pub(super) handle: Handle,
    pub(super) dispatcher: Dispatcher,
}

pub(super) struct LsInner {
    pub(super) name: LockspaceName,
    pub(super) cname: CString,
    pub(super) open: RwLock<Option<Open>>,
    pub(super) registry: Arc<Registry>,
}

pub(super) fn close_open(open: Open) {
    open.dispatcher.stop();
    let _g = LIBDLM_GLOBAL.lock();
    // SAFETY: the handle is live and its dispatcher stopped; nothing uses it afterwards.
    unsafe { dlm_sys::dlm_close_lockspace(open.handle.0.as_ptr()) };
}

impl LsInner {
    pub(super) fn open(
        name: LockspaceName,
        call: &'static str,
        f: impl FnOnce(&CString) -> dlm_sys::dlm_lshandle_t,
    ) -> Result<LsInner> {
        let cname = CString::new(name.as_str()).expect("LockspaceName has no NUL");
        let handle = {
            let _g = LIBDLM_GLOBAL.lock();
            NonNull::new(f(&cname)).ok_or_else(|| DlmError::last_os(call))?
        };
        let registry = Arc::new(Registry::default());
        // SAFETY: `handle` is a live handle just returned by libdlm.
        let fd = unsafe { dlm_sys::dlm_ls_get_fd(handle.as_ptr()) };
        let dispatcher = match Dispatcher::start(name.as_str(), fd, registry.clone()) {
            Ok(d) => d,
            Err(e) => {
                let _g = LIBDLM_GLOBAL.lock();
                // SAFETY: the handle is live and not used after this.
                unsafe { dlm_sys::dlm_close_lockspace(handle.as_ptr()) };
                return Err(e);
            }
        };
        Ok(LsInner { name, cname, open: RwLock::new(Some(Open { handle: Handle(handle), dispatcher })), registry })
    }

    pub(super) fn name(&self) -> &LockspaceName {
        &self.name
    }

    /// Runs `f` with the open handle; the handle cannot be closed meanwhile.
    pub(super) fn with_handle<T>(&self, f: impl FnOnce(dlm_sys::dlm_lshandle_t) -> T) -> Result<T> {
        let open = self.open.read();
        match open.as_ref() {
            Some(o) => Ok(f(o.handle.0.as_ptr())),
            None => Err(DlmError::Released(self.name.to_string())),
        }
    }

    /// Keeps `cell` alive for the kernel's callbacks until its end of life.
    pub(super) fn register(&self, cell: &Arc<LockCell>) -> Result<()> {
        if self.open.read().is_none() {
            return Err(DlmError::Released(self.name.to_string()));
        }
        let mut reg = self.registry.lock();
        reg.retain(|_, c| !c.ended());
        reg.insert(Arc::as_ptr(cell) as usize, cell.clone());
        Ok(())
    }

    pub(super) fn take_open(&self) -> Result<Open> {
        self.open.write().take().ok_or_else(|| DlmError::Released(self.name.to_string()))
    }

    /// The fd is closed: no callback can come any more; wake and drop every cell.
    pub(super) fn closed(&self) {
        let cells: Vec<_> = self.registry.lock().drain().map(|(_, c)| c).collect();
        for c in cells {
            c.on_close();
        }
    }
}

impl Drop for LsInner {
    fn drop(&mut self) {
        if let Some(open) = self.open.get_mut().take() {
            close_open(open);
        }
    }
}
