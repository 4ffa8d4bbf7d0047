//! The registry -> metrics wiring: what a scrape shows after real registry operations.

use super::*;
use crate::backend::local::LocalBackend;
use crate::journal::Journal;
use crate::naming::Naming;
use crate::registry::Registry;
use proto::{OwnerSpec, Resource};
use std::sync::Arc;

fn tmp(name: &str) -> std::path::PathBuf {
    let d = std::env::temp_dir().join(format!("virtdlm-metrics-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn registry(name: &str) -> Arc<Registry> {
    let (j, _) = Journal::open(&tmp(name).join("journal"), 4096, false).unwrap();
    let (tx, _rx) = tokio::sync::mpsc::unbounded_channel();
    Arc::new(Registry::new(Arc::new(LocalBackend::new("n1")), Naming::default(), j, tx))
}

/// VM `n`; this test process stands in for its QEMU (it runs, so it can own locks).
fn me(n: u8) -> OwnerSpec {
    crate::lockloss::tests::spec(std::process::id(), n)
}

fn disk(dir: &std::path::Path, name: &str, readonly: bool, shared: bool) -> Resource {
    let path = dir.join(name);
    std::fs::write(&path, b"").unwrap();
    Resource::Disk { path: path.display().to_string(), readonly, shared }
}

/// The value of the sample `name` (with its labels as printed) in a scrape.
fn value(text: &str, sample: &str) -> Option<f64> {
    text.lines().find_map(|l| l.strip_prefix(sample)?.strip_prefix(' ')?.parse().ok())
}

#[test]
fn grants_releases_and_refusals_show_in_a_scrape() {
    let reg = registry("wiring");
    let d = tmp("wiring-disks");
    let (a, b) = (disk(&d, "a.img", false, false), disk(&d, "b.img", true, false));
    let spec = me(1);
    let acquire = |spec: &OwnerSpec, rs: &[Resource]| {
        let t0 = std::time::Instant::now();
        let r = reg.acquire(None, spec, rs, 0);
        reg.events().metrics().acquire_answered(t0.elapsed(), r.as_ref().err());
        r
    };
    acquire(&spec, &[a.clone(), b.clone()]).unwrap();
    let text = render(&reg, None);
    assert_eq!(value(&text, "virtdlm_locks{mode=\"EX\"}"), Some(1.0), "{text}");
    assert_eq!(value(&text, "virtdlm_locks{mode=\"PR\"}"), Some(1.0));
    assert_eq!(value(&text, "virtdlm_locks{mode=\"CW\"}"), Some(0.0), "every mode is shown");
    assert_eq!(value(&text, "virtdlm_acquires_total{mode=\"EX\"}"), Some(1.0));
    assert_eq!(value(&text, "virtdlm_acquire_duration_seconds_count{result=\"granted\"}"), Some(1.0));
    assert!(value(&text, "virtdlm_last_lock_change_timestamp_seconds").is_some_and(|t| t > 1.0e9));
    assert_eq!(value(&text, "virtdlm_owners"), Some(1.0));

    // Another VM (same process, other uuid: refused by the registry) and a conflict.
    let other = OwnerSpec { pid: 1, ..me(2) };
    let e = acquire(&other, std::slice::from_ref(&a)).unwrap_err();
    let text = render(&reg, None);
    let reason = refusal_reason(&e);
    assert_eq!(value(&text, &format!("virtdlm_acquire_refusals_total{{reason=\"{reason}\"}}")), Some(1.0), "{text}");
    assert_eq!(value(&text, "virtdlm_acquire_duration_seconds_count{result=\"refused\"}"), Some(1.0));

    reg.release(None, &spec, std::slice::from_ref(&a)).unwrap();
    let text = render(&reg, None);
    assert_eq!(value(&text, "virtdlm_releases_total{mode=\"EX\"}"), Some(1.0));
    assert_eq!(value(&text, "virtdlm_locks{mode=\"EX\"}"), Some(0.0));
    assert_eq!(value(&text, "virtdlm_locks{mode=\"PR\"}"), Some(1.0));
    // The owner's exit releases the rest, with its own reason (`why`): still a release.
    reg.release_vm(&spec.uuid, true).unwrap();
    let text = render(&reg, None);
    assert_eq!(value(&text, "virtdlm_releases_total{mode=\"PR\"}"), Some(1.0));
    assert!(value(&text, "virtdlm_journal_size_bytes").is_some_and(|b| b > 0.0));
    assert!(value(&text, "virtdlm_journal_compactions_total").is_some_and(|n| n >= 1.0), "{text}");
}

#[test]
fn every_reason_label_is_known_in_advance() {
    use crate::lockloss::LossReason;
    for r in [
        LossReason::QuorumLost,
        LossReason::LeftMembership,
        LossReason::CorosyncLost,
        LossReason::LockspaceFailed(String::new()),
        LossReason::Unconfirmed(String::new()),
        LossReason::ControldLost(String::new()),
    ] {
        assert!(labels::LOSS_REASONS.contains(&r.wire().kind.as_str()), "{r}");
    }
    use crate::registry::RegistryError as E;
    for e in [
        E::BadRequest(String::new()),
        E::UnknownOwner(String::new()),
        E::OwnerGone(String::new()),
        E::OutOfOrder(String::new()),
        E::Journal(String::new()),
        E::Backend(String::new()),
        E::Busy(String::new()),
        E::Quarantined(String::new()),
        E::NodeUnreachable(String::new()),
    ] {
        assert!(labels::REFUSAL_REASONS.contains(&refusal_reason(&e)), "{e:?}");
    }
    let text = render(&registry("zeros"), None);
    assert_eq!(value(&text, "virtdlm_lock_loss_events_total{reason=\"quorum_lost\"}"), Some(0.0), "{text}");
    assert_eq!(value(&text, "virtdlm_acquire_refusals_total{reason=\"conflict\"}"), Some(0.0));
    assert_eq!(value(&text, "virtdlm_acquires_total{mode=\"EX\"}"), Some(0.0));
}

#[test]
fn a_conflict_is_refused_with_reason_conflict() {
    let e = crate::registry::RegistryError::Conflict {
        message: "held".into(),
        conflict: proto::Conflict {
            identity: "/a.img".into(),
            resource: "r".into(),
            wanted: Mode::Ex,
            holders: vec![],
        },
    };
    assert_eq!(refusal_reason(&e), "conflict");
    assert_eq!(refusal_reason(&crate::registry::RegistryError::Quarantined("q".into())), "quarantined");
}

#[test]
fn the_verdict_is_one_gauge_per_value_with_the_current_one_set() {
    let reg = registry("verdict");
    let text = render(&reg, Some(corosync::Verdict::Inquorate));
    for v in labels::VERDICTS {
        let want = if v == "inquorate" { 1.0 } else { 0.0 };
        assert_eq!(value(&text, &format!("virtdlm_membership_verdict{{verdict=\"{v}\"}}")), Some(want), "{text}");
    }
    assert_eq!(value(&text, "virtdlm_membership_safe"), Some(0.0));
    assert_eq!(value(&render(&reg, Some(corosync::Verdict::Safe)), "virtdlm_membership_safe"), Some(1.0));
    assert!(!render(&reg, None).contains("membership_verdict"), "no membership driver: no verdict");
}

fn loss_event(outcome: &str, pid: u32) -> LossEvent {
    LossEvent {
        reason: crate::lockloss::LossReason::QuorumLost,
        message: "quorum lost".into(),
        at: 1.0e9,
        vms: vec![crate::lockloss::VmOutcome {
            vm_name: "vm1".into(),
            vm_uuid: "u1".into(),
            pid,
            action: "poweroff".into(),
            outcome: outcome.into(),
            note: None,
        }],
        elapsed_ms: 5,
        watchdog_fired: false,
        recovered_at: None,
    }
}

#[test]
fn lock_loss_events_are_counted_by_reason_and_outcome() {
    let reg = registry("loss");
    let m = reg.events().metrics();
    m.lock_loss(&loss_event("terminated", 7));
    m.lock_loss(&loss_event("survived", 7));
    let text = render(&reg, None);
    assert_eq!(value(&text, "virtdlm_lock_loss_events_total{reason=\"quorum_lost\"}"), Some(2.0), "{text}");
    assert_eq!(value(&text, "virtdlm_lock_loss_vms_total{outcome=\"terminated\"}"), Some(1.0));
    assert_eq!(value(&text, "virtdlm_lock_loss_vms_total{outcome=\"survived\"}"), Some(1.0));
    assert_eq!(value(&text, "virtdlm_locks_lost"), Some(0.0));
}

#[test]
fn a_vm_left_running_without_locks_is_counted_until_it_stops_or_locks_again() {
    let reg = registry("unstopped");
    let mut status = reg.status();
    status.lock_loss.recent =
        vec![loss_event("survived", 41).wire(), loss_event("terminated", 42).wire(), loss_event("ignored", 43).wire()];
    // Two events name the same VM (uuid u1): counted once.
    assert_eq!(render::unstopped_vms(&status, &[], |_| true), 1);
    status.lock_loss.recent.remove(0);
    assert_eq!(render::unstopped_vms(&status, &[], |_| true), 1, "ignored");
    assert_eq!(render::unstopped_vms(&status, &[], |_| false), 0, "it stopped");
    let held = proto::LockInfo { pid: 43, ..lock_info() };
    assert_eq!(render::unstopped_vms(&status, &[held], |_| true), 0, "it holds its locks again");
}

fn lock_info() -> proto::LockInfo {
    proto::LockInfo {
        resource: "r".into(),
        identity: "/a.img".into(),
        mode: Mode::Ex,
        vm_name: "vm1".into(),
        vm_uuid: "u1".into(),
        pid: 1,
        node_name: "n1".into(),
        node_id: 1,
        since: 0,
        state: "held".into(),
    }
}

#[test]
fn the_scrape_is_prometheus_text_with_help_and_type_for_every_family() {
    let reg = registry("format");
    let text = render(&reg, Some(corosync::Verdict::Safe));
    for family in
        ["virtdlm_locks", "virtdlm_acquires_total", "virtdlm_membership_verdict", "virtdlm_journal_size_bytes"]
    {
        assert!(text.contains(&format!("# TYPE {family} ")), "{family}: {text}");
        assert!(text.contains(&format!("# HELP {family} ")), "{family}");
    }
    assert!(!text.contains("# EOF"), "Prometheus text, not OpenMetrics");
}

#[test]
fn http_routes() {
    use serve::{route, Route};
    assert_eq!(route(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n"), Route::Metrics { head: false });
    assert_eq!(route(b"GET /metrics?x=1 HTTP/1.0\r\n\r\n"), Route::Metrics { head: false });
    assert_eq!(route(b"HEAD /metrics HTTP/1.1\r\n\r\n"), Route::Metrics { head: true });
    assert_eq!(route(b"GET / HTTP/1.1\r\n\r\n"), Route::Index { head: false });
    assert_eq!(route(b"GET /other HTTP/1.1\r\n\r\n"), Route::NotFound);
    assert_eq!(route(b"POST /metrics HTTP/1.1\r\n\r\n"), Route::BadMethod);
    assert_eq!(route(b"garbage\r\n\r\n"), Route::BadRequest);
}

#[tokio::test]
async fn a_scrape_over_http_answers_the_exposition() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let reg = registry("http");
    let listener = serve::bind("127.0.0.1:0".parse().unwrap()).await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(serve::serve(listener, Source { registry: reg, verdict: None }));
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    s.write_all(b"GET /metrics HTTP/1.1\r\nHost: localhost\r\n\r\n").await.unwrap();
    let mut resp = String::new();
    s.read_to_string(&mut resp).await.unwrap();
    assert!(resp.starts_with("HTTP/1.1 200 OK\r\n"), "{resp}");
    assert!(resp.contains(&format!("Content-Type: {CONTENT_TYPE}\r\n")), "{resp}");
    assert!(resp.contains("\r\n\r\n# HELP virtdlm_"), "{resp}");
}

#[test]
fn the_textfile_is_replaced_whole() {
    let d = tmp("textfile");
    let p = d.join("virtdlm.prom");
    textfile::write_atomically(&p, "a 1\n").unwrap();
    textfile::write_atomically(&p, "a 2\n").unwrap();
    assert_eq!(std::fs::read_to_string(&p).unwrap(), "a 2\n");
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(&p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o644, "readable by node_exporter whatever the umask");
    let names: Vec<_> = std::fs::read_dir(&d).unwrap().map(|e| e.unwrap().file_name()).collect();
    assert_eq!(names, vec![std::ffi::OsString::from("virtdlm.prom")], "no temporary file left");
    assert!(textfile::write_atomically(&d.join("missing/virtdlm.prom"), "a 1\n").is_err());
}
