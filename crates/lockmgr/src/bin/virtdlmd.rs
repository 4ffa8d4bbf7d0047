//! virtdlmd: the per-host lock daemon.
fn main() {}
