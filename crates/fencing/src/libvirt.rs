//! Suspending a VM through libvirt, for the `pause` failure action.
//!
//! It runs `virsh -c URI suspend UUID` rather than linking libvirt: the daemon must keep working
//! when libvirtd is stuck, and a child process can be abandoned at a deadline, a library call
//! cannot.

use std::io::Read;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// The URI used when libvirt did not pass one.
pub const DEFAULT_URI: &str = "qemu:///system";

#[derive(Debug, thiserror::Error)]
pub enum PauseError {
    #[error("could not run {virsh}: {source}")]
    Spawn { virsh: String, source: std::io::Error },
    #[error("libvirt did not suspend the VM within {0:?}")]
    TimedOut(Duration),
    #[error("libvirt refused to suspend the VM: {0}")]
    Refused(String),
}

/// Suspends VM `uuid` through the libvirt at `uri`, waiting at most `timeout`.
pub fn suspend(virsh: &str, uri: Option<&str>, uuid: &str, timeout: Duration) -> Result<(), PauseError> {
    let uri = uri.unwrap_or(DEFAULT_URI);
    let mut child = Command::new(virsh)
        .args(["-q", "-c", uri, "suspend", uuid])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|source| PauseError::Spawn { virsh: virsh.to_owned(), source })?;
    let deadline = Instant::now() + timeout;
    loop {
        match child.try_wait() {
            Ok(Some(status)) => {
                if status.success() {
                    return Ok(());
                }
                let mut err = String::new();
                if let Some(mut e) = child.stderr.take() {
                    let _ = e.read_to_string(&mut err);
                }
                let err = err.trim();
                return Err(PauseError::Refused(if err.is_empty() { status.to_string() } else { err.to_owned() }));
            }
            Ok(None) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(10)),
            _ => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(PauseError::TimedOut(timeout));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn have_virsh() -> bool {
        Command::new("virsh").arg("--version").output().map(|o| o.status.success()).unwrap_or(false)
    }

    // libvirt's built-in test driver has a running domain "test" with this uuid.
    const TEST_DOMAIN: &str = "6695eb01-f6a4-8304-79aa-97f2502e193f";

    #[test]
    fn suspends_a_running_domain_of_the_test_driver() {
        assert!(have_virsh(), "virsh is required (libvirt-clients); run tests/install-deps.sh");
        suspend("virsh", Some("test:///default"), TEST_DOMAIN, Duration::from_secs(20)).unwrap();
    }

    #[test]
    fn an_unknown_domain_is_a_clear_refusal() {
        assert!(have_virsh(), "virsh is required (libvirt-clients); run tests/install-deps.sh");
        let e =
            suspend("virsh", Some("test:///default"), "00000000-0000-0000-0000-0000000000aa", Duration::from_secs(20))
                .unwrap_err();
        assert!(matches!(e, PauseError::Refused(ref m) if m.contains("omain")), "{e}");
    }

    #[test]
    fn a_missing_virsh_is_reported() {
        let e = suspend("/nonexistent/virsh", None, TEST_DOMAIN, Duration::from_secs(1)).unwrap_err();
        assert!(matches!(e, PauseError::Spawn { .. }), "{e}");
    }
}
