//! Safe wrappers over corosync CPG, quorum, cmap and cfg.
