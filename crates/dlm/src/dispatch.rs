//! The dispatcher: one thread per lockspace polls the lockspace fd and calls `dlm_dispatch`,
//! which reads the kernel's results and calls our ASTs and BASTs on this thread.
//!
//! `dlm_dispatch` never blocks (it reads until EAGAIN), but it flips O_NONBLOCK on the shared
//! fd, so exactly one thread may call it per fd: this one. A second fd (an eventfd) stops it.

use super::cell::LockCell;
use super::error::DlmError;
use std::collections::HashMap;
use std::ffi::c_void;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::Arc;
use std::thread::JoinHandle;

/// The cells the kernel may still call back for, by address (the AST argument).
pub(super) type Registry = parking_lot::Mutex<HashMap<usize, Arc<LockCell>>>;

/// Completion AST, called by `dlm_dispatch` on the dispatcher thread.
pub(super) unsafe extern "C" fn ast_trampoline(arg: *mut c_void) {
    // Never unwind into C.
    let _ = catch_unwind(AssertUnwindSafe(|| {
        // SAFETY: `arg` is the address of a LockCell that the lockspace registry keeps alive
        // until the lock's end of life or the close of the fd; ASTs only run on the dispatcher
        // thread while the fd is open.
        let cell = unsafe { &*(arg as *const LockCell) };
        cell.on_ast();
    }));
}

/// Blocking AST (another holder waits), called like `ast_trampoline`.
pub(super) unsafe extern "C" fn bast_trampoline(arg: *mut c_void) {
    let _ = catch_unwind(AssertUnwindSafe(|| {
        // SAFETY: as in `ast_trampoline`.
        let cell = unsafe { &*(arg as *const LockCell) };
        cell.on_bast();
    }));
}

pub(super) struct Dispatcher {
    stop: OwnedFd,
    thread: Option<JoinHandle<()>>,
}

impl Dispatcher {
    /// Starts the thread for lockspace fd `fd` (owned by libdlm's handle, which must stay open
    /// until [`Dispatcher::stop`] returned).
    pub(super) fn start(ls_name: &str, fd: RawFd, registry: Arc<Registry>) -> Result<Dispatcher, DlmError> {
        // SAFETY: plain syscall; the result is checked.
        let efd = unsafe { libc::eventfd(0, libc::EFD_CLOEXEC | libc::EFD_NONBLOCK) };
        if efd < 0 {
            return Err(DlmError::last_os("eventfd"));
        }
        // SAFETY: `efd` is a fresh fd that nothing else owns.
        let stop = unsafe { OwnedFd::from_raw_fd(efd) };
        let stop_fd = stop.as_raw_fd();
        let thread = std::thread::Builder::new()
            .name(format!("dlm-{ls_name}"))
            .spawn(move || run(fd, stop_fd, &registry))
            .map_err(|source| DlmError::Sys { call: "thread spawn", source })?;
        Ok(Dispatcher { stop, thread: Some(thread) })
    }

    /// Stops the thread and waits for it; no AST runs after this returns.
    pub(super) fn stop(mut self) {
        self.signal_and_join();
    }

    fn signal_and_join(&mut self) {
        let one: u64 = 1;
        // SAFETY: writes 8 bytes from a live u64 to our eventfd.
        unsafe { libc::write(self.stop.as_raw_fd(), (&one as *const u64).cast(), 8) };
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for Dispatcher {
    fn drop(&mut self) {
        self.signal_and_join();
    }
}

fn run(fd: RawFd, stop_fd: RawFd, registry: &Registry) {
    loop {
        let mut fds = [
            libc::pollfd { fd, events: libc::POLLIN, revents: 0 },
            libc::pollfd { fd: stop_fd, events: libc::POLLIN, revents: 0 },
        ];
        // SAFETY: `fds` is a live array of two pollfd.
        let n = unsafe { libc::poll(fds.as_mut_ptr(), 2, -1) };
        if n < 0 {
            if std::io::Error::last_os_error().kind() == std::io::ErrorKind::Interrupted {
                continue;
            }
            tracing::error!(error = %std::io::Error::last_os_error(), "poll on DLM lockspace fd failed");
            return;
        }
        if fds[1].revents != 0 {
            return;
        }
        if fds[0].revents & (libc::POLLERR | libc::POLLNVAL | libc::POLLHUP) != 0 {
            tracing::error!(revents = fds[0].revents, "DLM lockspace fd failed; no more completions");
            return;
        }
        if fds[0].revents & libc::POLLIN != 0 {
            // SAFETY: `fd` is the lockspace fd, open until `stop` returned; the callbacks it
            // runs are our trampolines, whose arguments the registry keeps alive.
            let rv = unsafe { dlm_sys::dlm_dispatch(fd) };
            if rv != 0 {
                tracing::warn!(error = %std::io::Error::last_os_error(), "dlm_dispatch failed");
            }
            // Cells past their end of life get no more ASTs: free them.
            registry.lock().retain(|_, cell| !cell.ended());
        }
    }
}
