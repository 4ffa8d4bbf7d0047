//! The three lock operations libvirt asks for, over a filled-in [`Manager`].
//!
//! | libvirt call                                  | request to virtdlmd                   |
//! |-----------------------------------------------|---------------------------------------|
//! | Acquire(REGISTER_ONLY), in the forked child   | `Register` (owner + resources, no lock) |
//! | Acquire(0): boot, resume, hotplug             | `Acquire` (all or nothing)            |
//! | Release: pause, save, detach                  | `Release` (idempotent), returns state |
//! | Inquire: migration                            | `Inquire`                             |
//!
//! Nothing is sent for an Acquire or Release without resources (libvirt makes such calls
//! around cdrom media changes); the child always registers, so that virtdlmd watches the
//! QEMU pid from its first instant and hotplug later finds the owner.

use crate::client;
use crate::config::Config;
use crate::error::PluginError;
use crate::manager::Manager;
use proto::{ErrorCode, FailureAction, Op, Response};

/// `VIR_LOCK_MANAGER_ACQUIRE_REGISTER_ONLY` / `_RESTRICT`.
pub const ACQUIRE_REGISTER_ONLY: u32 = 1 << 0;
pub const ACQUIRE_RESTRICT: u32 = 1 << 1;

/// `drvAcquire`.
pub fn acquire(
    mgr: &mut Manager,
    cfg: &Config,
    state: Option<String>,
    flags: u32,
    action: i32,
) -> Result<(), PluginError> {
    if flags & !(ACQUIRE_REGISTER_ONLY | ACQUIRE_RESTRICT) != 0 {
        return Err(PluginError::Unsupported(format!("acquire: unsupported flags {flags:#x}")));
    }
    mgr.owner.action = FailureAction::from_libvirt(action)
        .ok_or_else(|| PluginError::Unsupported(format!("unknown <on_lockfailure> action {action}")))?;
    let owner = mgr.owner.clone();
    let resources = mgr.resources.clone();
    // RESTRICT needs nothing from us: the process that asked is about to exec QEMU, and
    // virtdlmd refuses lock changes that come from the QEMU pid itself.
    if flags & ACQUIRE_REGISTER_ONLY != 0 {
        return expect_ok(client::call(cfg, Op::Register { owner, resources })?);
    }
    if resources.is_empty() {
        return Ok(());
    }
    expect_ok(client::call(cfg, Op::Acquire { owner, resources, state, wait_ms: 0 })?)
}

/// `drvRelease`: the owner's state after the release (`None` when it holds nothing).
pub fn release(mgr: &Manager, cfg: &Config) -> Result<Option<String>, PluginError> {
    if mgr.resources.is_empty() {
        return Ok(None);
    }
    let op = Op::Release { owner: mgr.owner.clone(), resources: mgr.resources.clone() };
    match client::call(cfg, op) {
        // Nothing held any more: the VM is gone or never registered. Release is idempotent.
        Err(PluginError::Refused { code: ErrorCode::UnknownOwner | ErrorCode::OwnerGone, .. }) => Ok(None),
        other => expect_state(other?),
    }
}

/// `drvInquire`.
pub fn inquire(mgr: &Manager, cfg: &Config) -> Result<Option<String>, PluginError> {
    match client::call(cfg, Op::Inquire { owner: mgr.owner.clone() }) {
        Err(PluginError::Refused { code: ErrorCode::UnknownOwner | ErrorCode::OwnerGone, .. }) => Ok(None),
        other => expect_state(other?),
    }
}

fn expect_ok(r: Response) -> Result<(), PluginError> {
    match r {
        Response::Ok { .. } => Ok(()),
        other => Err(PluginError::Protocol(format!("expected ok, got {other:?}"))),
    }
}

/// libvirt stores the state verbatim, unescaped, inside XML (status file, migration cookie).
fn expect_state(r: Response) -> Result<Option<String>, PluginError> {
    match r {
        Response::State { state: Some(s) } if !is_xml_safe(&s) => {
            Err(PluginError::Protocol(format!("state string {s:?} is not safe to embed in XML")))
        }
        Response::State { state } => Ok(state),
        other => Err(PluginError::Protocol(format!("expected a state, got {other:?}"))),
    }
}

/// Letters, digits and `-_.:,=+/` only: nothing XML would interpret, and no NUL.
pub fn is_xml_safe(s: &str) -> bool {
    s.bytes().all(|b| b.is_ascii_alphanumeric() || b"-_.:,=+/".contains(&b))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::manager::Manager;
    use proto::{self, ErrorReply, OwnerSpec, Request, Resource};
    use std::os::unix::net::UnixListener;
    use std::path::PathBuf;
    use std::time::Duration;

    /// A stand-in daemon answering each request with the next canned response.
    fn fake_daemon(answers: Vec<Response>) -> (Config, std::thread::JoinHandle<Vec<Request>>, tempdir::Dir) {
        let dir = tempdir::Dir::new();
        let path = dir.0.join("d.sock");
        let listener = UnixListener::bind(&path).unwrap();
        let handle = std::thread::spawn(move || {
            let mut seen = Vec::new();
            for answer in answers {
                let (mut s, _) = listener.accept().unwrap();
                seen.push(proto::decode_request(&proto::read_frame(&mut s).unwrap()).unwrap());
                proto::write_frame(&mut s, &answer).unwrap();
            }
            seen
        });
        let cfg = Config { socket: path, timeout: Duration::from_secs(5) };
        (cfg, handle, dir)
    }

    mod tempdir {
        pub struct Dir(pub std::path::PathBuf);
        impl Dir {
            pub fn new() -> Dir {
                use std::sync::atomic::{AtomicUsize, Ordering};
                static N: AtomicUsize = AtomicUsize::new(0);
                let p = std::env::temp_dir().join(format!(
                    "dlm-plugin-test-{}-{}",
                    std::process::id(),
                    N.fetch_add(1, Ordering::SeqCst)
                ));
                std::fs::create_dir_all(&p).unwrap();
                Dir(p)
            }
        }
        impl Drop for Dir {
            fn drop(&mut self) {
                let _ = std::fs::remove_dir_all(&self.0);
            }
        }
    }

    fn mgr(resources: Vec<Resource>) -> Manager {
        Manager {
            owner: OwnerSpec {
                uuid: "11111111-2222-3333-4444-555555555555".into(),
                name: "a".into(),
                pid: 99,
                id: 1,
                uri: None,
                action: Default::default(),
            },
            resources,
            new_started: false,
        }
    }

    fn disk() -> Resource {
        Resource::Disk { path: "/img/a".into(), readonly: false, shared: false }
    }

    #[test]
    fn child_registers_and_resume_acquires() {
        let (cfg, h, _d) = fake_daemon(vec![Response::Ok { locks: vec![] }, Response::Ok { locks: vec![] }]);
        let mut m = mgr(vec![disk()]);
        acquire(&mut m, &cfg, None, ACQUIRE_REGISTER_ONLY | ACQUIRE_RESTRICT, 3).unwrap();
        acquire(&mut m, &cfg, Some("s1".into()), 0, 3).unwrap();
        let seen = h.join().unwrap();
        assert!(
            matches!(&seen[0].op, Op::Register { resources, owner } if resources.len() == 1 && owner.action == FailureAction::Pause)
        );
        assert!(matches!(&seen[1].op, Op::Acquire { state: Some(s), wait_ms: 0, .. } if s == "s1"));
    }

    #[test]
    fn conflicts_carry_the_daemons_message() {
        let msg = "disk /img/a is held exclusively by VM b on node n1";
        let (cfg, h, _d) = fake_daemon(vec![Response::Error(ErrorReply {
            code: ErrorCode::Conflict,
            message: msg.into(),
            conflict: None,
        })]);
        let e = acquire(&mut mgr(vec![disk()]), &cfg, None, 0, 0).unwrap_err();
        assert_eq!(e.to_string(), msg);
        assert_eq!(e.virt_code(), crate::error::VIR_ERR_RESOURCE_BUSY);
        h.join().unwrap();
    }

    #[test]
    fn zero_resources_send_nothing() {
        let cfg = Config { socket: PathBuf::from("/nonexistent/sock"), ..Config::default() };
        acquire(&mut mgr(vec![]), &cfg, None, 0, 0).unwrap();
        assert_eq!(release(&mgr(vec![]), &cfg).unwrap(), None);
        // ... but a real request to a missing daemon fails with the socket named.
        let e = acquire(&mut mgr(vec![disk()]), &cfg, None, 0, 0).unwrap_err();
        assert!(e.to_string().contains("/nonexistent/sock"), "{e}");
    }

    #[test]
    fn release_returns_state_and_tolerates_a_gone_owner() {
        let (cfg, h, _d) = fake_daemon(vec![
            Response::State { state: Some("v1:abc".into()) },
            Response::error(ErrorCode::UnknownOwner, "no such VM"),
            Response::State { state: Some("<bad>".into()) },
        ]);
        let m = mgr(vec![disk()]);
        assert_eq!(release(&m, &cfg).unwrap().as_deref(), Some("v1:abc"));
        assert_eq!(release(&m, &cfg).unwrap(), None);
        assert!(release(&m, &cfg).is_err());
        h.join().unwrap();
    }

    #[test]
    fn a_silent_daemon_times_out() {
        let d = tempdir::Dir::new();
        let path = d.0.join("mute.sock");
        let _listener = UnixListener::bind(&path).unwrap();
        let cfg = Config { socket: path, timeout: Duration::from_millis(100) };
        let e = acquire(&mut mgr(vec![disk()]), &cfg, None, 0, 0).unwrap_err();
        assert!(matches!(e, PluginError::Timeout { .. }), "{e:?}");
    }

    #[test]
    fn unknown_failure_actions_are_refused() {
        let cfg = Config { socket: PathBuf::from("/nonexistent/sock"), ..Config::default() };
        assert!(acquire(&mut mgr(vec![]), &cfg, None, 0, 9).is_err());
    }
}
