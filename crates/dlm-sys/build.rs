//! Generates bindings over the installed `libdlm.h` and links `libdlm_lt`.
//!
//! Debian's `libdlm_lt.pc` names `-ldlm -lpthread` (the threaded flavour), so pkg-config is not
//! used: the link name is set here. The bindings are generated without `_REENTRANT`, so the
//! pthread-only calls of the threaded flavour do not exist and cannot be called by mistake.
use std::{env, path::PathBuf};

fn main() {
    println!("cargo:rerun-if-changed=wrapper.h");
    println!("cargo:rustc-link-lib=dylib=dlm_lt");
    let bindings = bindgen::Builder::default()
        .header("wrapper.h")
        .allowlist_function("dlm_.*")
        .allowlist_type("dlm_.*")
        .allowlist_var("LKM_.*|LKF_.*|DLM_.*|EUNLOCK|ECANCEL|EINPROG")
        .blocklist_function("lock_resource|unlock_resource|dlm_pthread_.*|dlm_ls_pthread_.*")
        .layout_tests(true)
        .derive_default(true)
        .generate()
        .expect("bindgen over libdlm.h failed: is libdlm-dev installed?");
    let out = PathBuf::from(env::var("OUT_DIR").unwrap()).join("bindings.rs");
    bindings.write_to_file(out).expect("writing bindings");
}
