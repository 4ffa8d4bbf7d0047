//! virtdlm: the admin CLI.
fn main() {}
