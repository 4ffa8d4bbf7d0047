//! docs/GUIDE.md section 2.3 shows what `virtdlmd --check-config` prints for a good and for a
//! bad configuration. These tests run the real binary on the guide's own input and compare its
//! output with the guide's blocks, so the guide cannot drift from the daemon.
//!
//! Break it: the guide text before `metrics_listen` and `backend_explicit` were added to the
//! configuration (no such lines in the block), or the error without the `:` after the key
//! (`lockspace "virt dlm" must be ...`), makes these tests fail, naming the first line that
//! differs.

use std::path::{Path, PathBuf};
use std::process::Command;

fn guide() -> String {
    let p = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../docs/GUIDE.md");
    std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

/// The lines of the fenced block that starts with the line `first` (the shown command).
fn block_after(guide: &str, first: &str) -> Vec<String> {
    let mut lines = guide.lines().skip_while(|l| *l != first);
    assert_eq!(lines.next(), Some(first), "docs/GUIDE.md has no line {first:?}");
    lines.take_while(|l| !l.starts_with("```")).map(str::to_owned).collect()
}

/// A scratch directory of this test process, removed when dropped.
struct Scratch(PathBuf);
impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn scratch(name: &str, text: &str) -> (Scratch, PathBuf) {
    let dir = std::env::temp_dir().join(format!("vdlm-guide-{name}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("scratch dir");
    let p = dir.join(name);
    std::fs::write(&p, text).expect("write config");
    (Scratch(dir), p)
}

fn check_config(conf: &Path) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_virtdlmd"))
        .arg("--config")
        .arg(conf)
        .arg("--check-config")
        .output()
        .expect("run virtdlmd")
}

fn assert_same(shown: &[String], printed: &[String]) {
    for (i, (s, p)) in shown.iter().zip(printed).enumerate() {
        assert_eq!(s, p, "docs/GUIDE.md 2.3, line {} of the block differs", i + 1);
    }
    assert_eq!(
        shown.len(),
        printed.len(),
        "docs/GUIDE.md 2.3 shows {} lines, virtdlmd prints {}:\n{}",
        shown.len(),
        printed.len(),
        printed.join("\n")
    );
}

#[test]
fn guide_shows_what_check_config_prints() {
    let g = guide();
    // The configuration the guide gives, in the guide's own words: the first fenced block
    // after the line that introduces it.
    let intro = "`/etc/virt-dlm/virtdlmd.conf` on every node: the DLM backend; everything else keeps its";
    let conf: Vec<&str> = g
        .lines()
        .skip_while(|l| *l != intro)
        .skip_while(|l| !l.starts_with("```"))
        .skip(1)
        .take_while(|l| !l.starts_with("```"))
        .collect();
    assert_eq!(conf, ["backend = dlm", "lockspace = virtdlm"], "the guide's configuration");
    let (_dir, p) = scratch("vd.conf", &(conf.join("\n") + "\n"));
    let out = check_config(&p);
    assert!(out.status.success(), "--check-config failed: {}", String::from_utf8_lossy(&out.stderr));
    // The node name is the host's: the guide's host is called "vm".
    let printed: Vec<String> =
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .map(|l| {
                if l.trim_start().starts_with("node_name: ") {
                    "    node_name: \"vm\",".to_owned()
                } else {
                    l.to_owned()
                }
            })
            .collect();
    let shown = block_after(&g, "# virtdlmd --config /tmp/vd.conf --check-config");
    assert_same(&shown, &printed);
}

#[test]
fn guide_shows_what_a_bad_line_prints() {
    let g = guide();
    let (dir, p) = scratch("vd2.conf", "backend = dlm\nlockspace = \"virt dlm\"\n");
    let out = check_config(&p);
    let shown = block_after(&g, "# virtdlmd --config /tmp/vd2.conf --check-config; echo \"exit $?\"");
    // The guide's file is /tmp/vd2.conf; this one lives in a scratch directory.
    let stderr = String::from_utf8_lossy(&out.stderr).replace(&*p.to_string_lossy(), "/tmp/vd2.conf");
    let mut printed: Vec<String> =
        String::from_utf8_lossy(&out.stdout).lines().chain(stderr.lines()).map(str::to_owned).collect();
    printed.push(format!("exit {}", out.status.code().unwrap_or(-1)));
    drop(dir);
    assert_same(&shown, &printed);
}
