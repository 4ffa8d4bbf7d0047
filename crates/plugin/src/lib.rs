//! dlm.so: the libvirt lock-manager plugin. A thin synchronous client of virtdlmd.
#![deny(unsafe_op_in_unsafe_fn)]
