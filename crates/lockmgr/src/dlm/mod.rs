//! Safe wrapper over libdlm.
