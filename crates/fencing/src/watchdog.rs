//! The last resort: a hardware (or softdog) watchdog that resets the host when a VM outlives
//! SIGKILL. The daemon pets it while it can vouch for its VMs; firing means "stop petting".
//!
//! Opening the device arms it with the driver's configured timeout; set that timeout (for
//! example `softdog soft_margin=`) below the survivors' fencing delay. The device is never
//! closed with the magic 'V', so a daemon that dies also stops the petting.

use parking_lot::Mutex;
use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

#[derive(Debug)]
pub struct Watchdog {
    device: Option<(PathBuf, Mutex<File>)>,
    /// The driver's timeout (`WDIOC_GETTIMEOUT`), when the device says.
    timeout: Option<Duration>,
    fired: AtomicBool,
}

/// The timeout the driver of `f` resets the host after (`WDIOC_GETTIMEOUT`); `None` when `f`
/// is no watchdog device or does not say.
fn driver_timeout(f: &File) -> Option<Duration> {
    const WDIOC_GETTIMEOUT: rustix::ioctl::Opcode = rustix::ioctl::opcode::read::<libc::c_int>(b'W', 7);
    // SAFETY: linux/watchdog.h defines WDIOC_GETTIMEOUT as _IOR('W', 7, int): the kernel
    // writes one int, the Getter's output type.
    let get = unsafe { rustix::ioctl::Getter::<WDIOC_GETTIMEOUT, libc::c_int>::new() };
    // SAFETY: the opcode and the output type match (above); `f` is an open file.
    let secs = unsafe { rustix::ioctl::ioctl(f, get) }.ok()?;
    u64::try_from(secs).ok().filter(|s| *s > 0).map(Duration::from_secs)
}

impl Watchdog {
    /// Opens and arms `path` (usually /dev/watchdog).
    pub fn open(path: &Path) -> io::Result<Watchdog> {
        let file = OpenOptions::new().write(true).open(path)?;
        let timeout = driver_timeout(&file);
        Ok(Watchdog { device: Some((path.to_owned(), Mutex::new(file))), timeout, fired: AtomicBool::new(false) })
    }

    /// No watchdog: firing only logs what would have happened. For tests and for hosts where
    /// another component (sbd, sanlock's wdmd) owns the watchdog.
    pub fn none() -> Watchdog {
        Watchdog { device: None, timeout: None, fired: AtomicBool::new(false) }
    }

    /// Keeps the host alive for another watchdog period. Does nothing once fired.
    pub fn pet(&self) -> io::Result<()> {
        if self.fired() {
            return Ok(());
        }
        match &self.device {
            Some((_, file)) => file.lock().write_all(b"1"),
            None => Ok(()),
        }
    }

    /// Stops petting for good: the host resets when the watchdog period runs out.
    pub fn fire(&self, why: &str) {
        if self.fired.swap(true, Ordering::SeqCst) {
            return;
        }
        match &self.device {
            Some((path, _)) => tracing::error!(
                device = %path.display(), reason = why,
                "watchdog: petting stopped, the host will be reset when the watchdog expires"
            ),
            None => tracing::error!(
                reason = why,
                "watchdog: none configured; a watchdog would now reset this host (it will NOT be reset)"
            ),
        }
    }

    pub fn fired(&self) -> bool {
        self.fired.load(Ordering::SeqCst)
    }

    /// How long after it fires the host is reset, as the driver reports it (`None`: no
    /// device, or it does not say). A VM that survived SIGKILL may write until then.
    pub fn timeout(&self) -> Option<Duration> {
        self.timeout
    }

    /// The device in use, if any.
    pub fn device(&self) -> Option<&Path> {
        self.device.as_ref().map(|(p, _)| p.as_path())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_fired_watchdog_is_never_petted_again() {
        let dir = std::env::temp_dir().join(format!("wd-test-{}", std::process::id()));
        std::fs::write(&dir, b"").unwrap();
        let wd = Watchdog::open(&dir).unwrap();
        wd.pet().unwrap();
        wd.pet().unwrap();
        assert_eq!(std::fs::read(&dir).unwrap(), b"11");
        wd.fire("test");
        assert!(wd.fired());
        wd.pet().unwrap();
        assert_eq!(std::fs::read(&dir).unwrap(), b"11", "petted after firing");
        assert_eq!(wd.timeout(), None, "a plain file reports no timeout");
        std::fs::remove_file(&dir).unwrap();
    }

    #[test]
    fn none_records_that_it_fired() {
        let wd = Watchdog::none();
        assert!(!wd.fired());
        wd.fire("test");
        assert!(wd.fired());
        assert!(wd.device().is_none());
    }
}
