//! Carries out libvirt's `<on_lockfailure>` actions on QEMU processes. Knows nothing of DLM or
//! Corosync: it is given owners (pidfds) and what to do with them.
#![deny(unsafe_op_in_unsafe_fn)]
