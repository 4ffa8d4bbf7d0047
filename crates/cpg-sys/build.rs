//! Generates bindings over corosync's `cpg.h`, `quorum.h`, `cmap.h` and `cfg.h` and links the
//! four client libraries plus `corosync_common` (for `cs_strerror`).
//!
//! C enums stay integer constants: a Rust enum would be undefined behaviour the day corosync
//! returns a value this build did not know.
use std::{env, path::PathBuf};

fn main() {
    println!("cargo:rerun-if-changed=wrapper.h");
    for lib in ["cpg", "quorum", "cmap", "cfg", "corosync_common"] {
        println!("cargo:rustc-link-lib=dylib={lib}");
    }
    let bindings = bindgen::Builder::default()
        .header("wrapper.h")
        .allowlist_function("cpg_.*|quorum_.*|cmap_.*|corosync_cfg_.*|cs_strerror")
        .allowlist_type("cpg_.*|quorum_.*|cmap_.*|corosync_cfg_.*|cs_.*")
        .allowlist_var("CPG_.*|QUORUM_.*|CMAP_.*|CS_.*|COROSYNC_CFG_.*|CFG_.*")
        .blocklist_function("cs_timestamp_get|hdb_.*")
        .blocklist_type("iovec")
        .raw_line("pub use libc::iovec;")
        .prepend_enum_name(false)
        .default_enum_style(bindgen::EnumVariation::Consts)
        .layout_tests(true)
        .derive_default(true)
        .generate()
        .expect("bindgen over corosync headers failed: are libcpg-dev, libquorum-dev, libcmap-dev and libcfg-dev installed?");
    let out = PathBuf::from(env::var("OUT_DIR").unwrap()).join("bindings.rs");
    bindings.write_to_file(out).expect("writing bindings");
}
