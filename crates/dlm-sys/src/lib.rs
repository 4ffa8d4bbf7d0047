//! Raw FFI to libdlm (`libdlm_lt`, the flavour without an AST thread).
//!
//! Generated at build time; no safe wrappers live here (see the `dlm` crate).
#![allow(non_camel_case_types, non_upper_case_globals, non_snake_case, dead_code)]
#![allow(clippy::all, clippy::undocumented_unsafe_blocks)]

include!(concat!(env!("OUT_DIR"), "/bindings.rs"));
