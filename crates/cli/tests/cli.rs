//! `virtdlm` against a real virtdlmd (local backend): tables, JSON, filters, exit codes,
//! and bad input answered with one line and a non-zero exit (never a panic or a debug dump).
// The daemon tests' harness (a real virtdlmd on private paths, real processes as owners).
#[path = "../../lockmgr/tests/support/mod.rs"]
mod support;

use serde_json::Value;
use std::process::{Command, Output};
use support::*;

struct Run {
    code: i32,
    stdout: String,
    stderr: String,
}

fn virtdlm(d: &Daemon, args: &[&str]) -> Run {
    virtdlm_at(&d.socket, &d.admin, args)
}

fn virtdlm_at(socket: &std::path::Path, admin: &std::path::Path, args: &[&str]) -> Run {
    let out: Output = Command::new(env!("CARGO_BIN_EXE_virtdlm"))
        .arg("--socket")
        .arg(socket)
        .arg("--admin-socket")
        .arg(admin)
        .args(args)
        .output()
        .expect("run virtdlm");
    let r = Run {
        code: out.status.code().expect("virtdlm exited by a signal"),
        stdout: String::from_utf8(out.stdout).unwrap(),
        stderr: String::from_utf8(out.stderr).unwrap(),
    };
    assert!(!r.stderr.contains("panicked") && !r.stderr.contains("RUST_BACKTRACE"), "virtdlm panicked: {}", r.stderr);
    r
}

fn json(r: &Run) -> Value {
    assert_eq!(r.code, 0, "virtdlm failed: {}", r.stderr);
    serde_json::from_str(&r.stdout).unwrap_or_else(|e| panic!("not JSON ({e}): {}", r.stdout))
}

/// A failure: the given exit code, exactly one line on stderr starting with `virtdlm: `.
fn one_line_failure(r: &Run, code: i32) -> String {
    assert_eq!(r.code, code, "stdout: {}\nstderr: {}", r.stdout, r.stderr);
    let lines: Vec<&str> = r.stderr.lines().collect();
    assert_eq!(lines.len(), 1, "one line expected: {}", r.stderr);
    assert!(lines[0].starts_with("virtdlm: "), "{}", r.stderr);
    assert!(!lines[0].contains(" { "), "looks like a debug dump: {}", r.stderr);
    lines[0].to_owned()
}

fn started(tag: &str) -> (Daemon, std::path::PathBuf) {
    let dir = tmpdir(tag);
    let mut d = Daemon::new(&dir, "");
    d.start(&[]);
    (d, dir)
}

#[test]
fn status_json_names_node_backend_cluster_and_lock_loss() {
    let (d, _dir) = started("cli-status");
    let s = json(&virtdlm(&d, &["status", "--json"]));
    assert_eq!(s["node_name"], "testnode");
    assert_eq!(s["backend"], "local");
    assert!(s["cluster"].is_null(), "the local backend runs without the cluster by default: {s}");
    assert!(s.as_object().unwrap().contains_key("last_lock_loss"), "{s}");
    let table = virtdlm(&d, &["status"]);
    assert_eq!(table.code, 0);
    assert!(table.stdout.contains("testnode") && table.stdout.contains("last lock loss"), "{}", table.stdout);
}

#[test]
fn locks_inspect_and_filters() {
    let (d, dir) = started("cli-locks");
    let web = Vm::spawn("web-3");
    let db = Vm::spawn("db-1");
    let a = disk(&dir, "a.img", false, false);
    let b = disk(&dir, "b.img", true, false);
    expect_ok(web.acquire(&d, &[a]));
    expect_ok(db.acquire(&d, &[b]));

    let all = json(&virtdlm(&d, &["locks", "--json"]));
    let all = all.as_array().expect("an array of locks");
    assert_eq!(all.len(), 2, "{all:?}");
    for l in all {
        for field in
            ["resource", "identity", "mode", "vm_name", "vm_uuid", "pid", "node_name", "node_id", "since", "state"]
        {
            assert!(l.get(field).is_some(), "lock lacks {field}: {l}");
        }
        assert_eq!(l["state"], "held");
        assert_eq!(l["node_name"], "testnode");
    }
    let only_web = json(&virtdlm(&d, &["locks", "--json", "--vm", "web-3"]));
    assert_eq!(only_web.as_array().unwrap().len(), 1);
    assert_eq!(only_web[0]["mode"], "EX");
    let by_uuid = json(&virtdlm(&d, &["locks", "--json", "--vm", &db.spec.uuid]));
    assert_eq!(by_uuid[0]["vm_name"], "db-1");
    let pr = json(&virtdlm(&d, &["locks", "--json", "--mode", "PR"]));
    assert_eq!(pr.as_array().unwrap().len(), 1);
    assert_eq!(pr[0]["vm_name"], "db-1");
    let other_node = json(&virtdlm(&d, &["locks", "--json", "--node", "hv9"]));
    assert!(other_node.as_array().unwrap().is_empty());
    let table = virtdlm(&d, &["locks"]);
    assert!(table.stdout.contains("web-3") && table.stdout.contains("db-1"), "{}", table.stdout);

    let a_path = dir.join("a.img");
    let held = json(&virtdlm(&d, &["inspect", "--json", a_path.to_str().unwrap()]));
    assert_eq!(held["free"], false);
    assert_eq!(held["holders"][0]["vm_name"], "web-3");
    assert!(held["resource"].as_str().unwrap().starts_with("d1:"), "{held}");
    let name = json(&virtdlm(&d, &["resource-name", "--json", a_path.to_str().unwrap()]));
    assert_eq!(name["resource"], held["resource"]);

    std::fs::write(dir.join("c.img"), b"").unwrap();
    let free = virtdlm(&d, &["inspect", dir.join("c.img").to_str().unwrap()]);
    assert_eq!(free.code, 0);
    assert!(free.stdout.lines().any(|l| l == "free"), "{}", free.stdout);
    let lease = json(&virtdlm(&d, &["inspect", "--json", "lease:space/key"]));
    assert_eq!(lease["identity"], "lease space/key");
    assert_eq!(lease["free"], true);
}

#[test]
fn release_refuses_a_running_vm_unless_forced_and_needs_the_control_socket() {
    let (d, dir) = started("cli-release");
    let web = Vm::spawn("web-3");
    expect_ok(web.acquire(&d, &[disk(&dir, "a.img", false, false)]));

    let refused = one_line_failure(&virtdlm(&d, &["release", "--vm", "web-3"]), 1);
    assert!(refused.contains("still runs") && refused.contains("--force"), "{refused}");
    assert_eq!(web.held(&d).len(), 1, "a refused release releases nothing");

    // The admin socket is read-only: changes through it are refused as not allowed.
    let not_root = virtdlm_at(&d.admin, &d.admin, &["release", "--vm", "web-3", "--force"]);
    one_line_failure(&not_root, 4);

    let forced = json(&virtdlm(&d, &["release", "--vm", "web-3", "--force", "--json"]));
    assert_eq!(forced["uuid"], web.spec.uuid.as_str());
    assert_eq!(forced["locks"].as_array().unwrap().len(), 1);
    assert!(web.held(&d).is_empty());

    let unknown = one_line_failure(&virtdlm(&d, &["release", "--vm", "nosuchvm"]), 1);
    assert!(unknown.contains("nosuchvm"), "{unknown}");
}

#[test]
fn cleanup_dry_run_lists_nothing_while_owners_live() {
    let (d, dir) = started("cli-cleanup");
    let web = Vm::spawn("web-3");
    expect_ok(web.acquire(&d, &[disk(&dir, "a.img", false, false)]));
    let dry = json(&virtdlm(&d, &["cleanup", "--dry-run", "--json"]));
    assert_eq!(dry["dry_run"], true);
    assert!(dry["locks"].as_array().unwrap().is_empty(), "{dry}");
    assert_eq!(web.held(&d).len(), 1);
}

#[test]
fn bad_input_is_one_line_and_a_documented_exit_code() {
    let (d, dir) = started("cli-bad");
    let missing = one_line_failure(&virtdlm(&d, &["inspect", "/nonexistent/disk.img"]), 2);
    assert!(missing.contains("/nonexistent/disk.img"), "{missing}");
    let long = "a".repeat(5000);
    let too_long = one_line_failure(&virtdlm(&d, &["resource-name", &long]), 2);
    assert!(too_long.contains("too long"), "{too_long}");
    one_line_failure(&virtdlm(&d, &["release", "--vm", &"x".repeat(2000)]), 2);
    one_line_failure(&virtdlm(&d, &["inspect", "lease:space/"]), 2);

    // With --json the failure is also a JSON object on stdout.
    let r = virtdlm(&d, &["inspect", "--json", "/nonexistent/disk.img"]);
    assert_eq!(r.code, 2);
    let v: Value = serde_json::from_str(&r.stdout).expect("JSON error object");
    assert_eq!(v["error"]["kind"], "bad_input");

    // Usage errors are clap's: exit 2, no panic.
    assert_eq!(virtdlm(&d, &["frobnicate"]).code, 2);
    assert_eq!(virtdlm(&d, &["locks", "--mode", "XX"]).code, 2);

    // Daemon not running: exit 3 and a hint.
    let gone = dir.join("no-such.sock");
    let line = one_line_failure(&virtdlm_at(&gone, &gone, &["status"]), 3);
    assert!(line.contains("is virtdlmd running?"), "{line}");
}

#[test]
fn help_documents_the_exit_codes() {
    let out = Command::new(env!("CARGO_BIN_EXE_virtdlm")).arg("--help").output().unwrap();
    assert_eq!(out.status.code(), Some(0));
    let help = String::from_utf8(out.stdout).unwrap();
    for code in ["0  done", "1  virtdlmd refused", "2  bad usage", "3  virtdlmd cannot be reached", "4  not allowed"] {
        assert!(help.contains(code), "--help lacks {code:?}:\n{help}");
    }
}

#[test]
fn a_reader_that_goes_away_ends_the_output_quietly() {
    let (d, _dir) = started("cli-pipe");
    // stdout is a pipe whose reader is already gone: the write fails with EPIPE.
    let (reader, writer) = std::io::pipe().expect("pipe");
    drop(reader);
    let out = Command::new(env!("CARGO_BIN_EXE_virtdlm"))
        .arg("--socket")
        .arg(&d.socket)
        .arg("--admin-socket")
        .arg(&d.admin)
        .arg("status")
        .stdout(writer)
        .output()
        .expect("run virtdlm");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!stderr.contains("panicked"), "virtdlm panicked: {stderr}");
    assert_eq!(out.status.code(), Some(0), "stderr: {stderr}");
}

#[test]
fn status_shows_no_lock_loss_as_none() {
    let (d, _dir) = started("cli-loss-none");
    let r = virtdlm(&d, &["status"]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    let line = r.stdout.lines().find(|l| l.contains("last lock loss")).expect("a lock-loss row");
    assert!(line.trim_end().ends_with("none"), "{line}");
}

#[test]
fn the_cli_reads_the_admin_socket() {
    let dir = tmpdir("cli");
    let mut d = Daemon::new(&dir, "");
    d.start(&[]);
    let a = Vm::spawn("web-7");
    expect_ok(a.acquire(&d, &[disk(&dir, "a.img", false, true)]));
    let run = |args: &[&str]| {
        let out = Command::new(env!("CARGO_BIN_EXE_virtdlm"))
            .arg("--admin-socket")
            .arg(&d.admin)
            .args(args)
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8(out.stdout).unwrap()
    };
    let locks = run(&["locks"]);
    assert!(locks.contains("a.img") && locks.contains("web-7") && locks.contains("CW"), "{locks}");
    let name = run(&["resource-name", dir.join("a.img").to_str().unwrap()]);
    assert!(name.starts_with("d1:"), "{name}");
    let status: serde_json::Value = serde_json::from_str(&run(&["status", "--json"])).unwrap();
    assert_eq!(status["locks"], 1);
}
