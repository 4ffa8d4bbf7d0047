//! dlm.so runs inside libvirtd: it must export libvirt's driver table and must not drag
//! tokio, libdlm or corosync's libraries into libvirtd's address space.

use std::path::PathBuf;
use std::process::Command;

fn cdylib() -> PathBuf {
    // target/<profile>/deps/linkage-<hash> -> target/<profile>/libvirtdlm_plugin.so
    let exe = std::env::current_exe().unwrap();
    let so = exe.parent().unwrap().parent().unwrap().join("libvirtdlm_plugin.so");
    assert!(so.exists(), "{} not built (cargo builds the cdylib before integration tests)", so.display());
    so
}

fn run(cmd: &str, args: &[&str]) -> String {
    let out = Command::new(cmd).args(args).output().unwrap_or_else(|e| panic!("cannot run {cmd}: {e}"));
    assert!(out.status.success(), "{cmd} {args:?} failed: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).unwrap()
}

#[test]
fn needs_only_the_c_runtime() {
    let so = cdylib();
    let dynamic = run("readelf", &["-d", so.to_str().unwrap()]);
    let needed: Vec<&str> = dynamic.lines().filter(|l| l.contains("(NEEDED)")).collect();
    assert!(!needed.is_empty(), "no NEEDED entries parsed from:\n{dynamic}");
    for line in &needed {
        for banned in ["dlm", "cpg", "corosync", "quorum", "cmap", "virt"] {
            assert!(!line.contains(banned), "dlm.so must not link {banned}: {line}");
        }
    }
}

#[test]
fn contains_no_tokio_and_exports_the_driver_table() {
    let so = cdylib();
    let symbols = run("nm", &["-C", so.to_str().unwrap()]);
    assert!(!symbols.contains("tokio::"), "tokio code found in dlm.so");
    let dynamic = run("nm", &["-D", "--defined-only", "-S", so.to_str().unwrap()]);
    let table = dynamic
        .lines()
        .find(|l| l.ends_with(" virLockDriverImpl"))
        .unwrap_or_else(|| panic!("virLockDriverImpl not exported:\n{dynamic}"));
    // "<addr> <size> <type> virLockDriverImpl": 72 bytes of read-only data.
    let fields: Vec<&str> = table.split_whitespace().collect();
    assert_eq!(u64::from_str_radix(fields[1], 16).unwrap(), 72, "{table}");
    assert!(matches!(fields[2], "R" | "D"), "{table}");
}
