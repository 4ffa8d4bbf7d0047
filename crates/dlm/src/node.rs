//! This node's DLM node id, as dlm_controld configured it in configfs.

use super::error::DlmError;
use std::fs;
use std::path::Path;

const COMMS: &str = "/sys/kernel/config/dlm/cluster/comms";

/// The node id whose `comms/<id>/local` is 1 (what lvmlockd reads for `dlm_ls_purge`).
pub fn local_nodeid() -> Result<u32, DlmError> {
    local_nodeid_in(Path::new(COMMS))
}

fn local_nodeid_in(comms: &Path) -> Result<u32, DlmError> {
    let err = |why: String| DlmError::NoNodeId { path: comms.display().to_string(), why };
    let entries = fs::read_dir(comms).map_err(|e| err(format!("{e} (is dlm_controld running?)")))?;
    for entry in entries.flatten() {
        let dir = entry.path();
        let local = fs::read_to_string(dir.join("local")).unwrap_or_default();
        if local.trim() != "1" {
            continue;
        }
        let id = fs::read_to_string(dir.join("nodeid")).map_err(|e| err(format!("{}: {e}", dir.display())))?;
        return id.trim().parse().map_err(|e| err(format!("nodeid {:?}: {e}", id.trim())));
    }
    Err(err("no entry has local = 1".into()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_the_entry_marked_local() {
        let dir = std::env::temp_dir().join(format!("dlm-comms-{}", std::process::id()));
        for (id, local) in [(1, 0), (2, 1), (3, 0)] {
            let d = dir.join(id.to_string());
            fs::create_dir_all(&d).unwrap();
            fs::write(d.join("nodeid"), format!("{id}\n")).unwrap();
            fs::write(d.join("local"), format!("{local}\n")).unwrap();
        }
        assert_eq!(local_nodeid_in(&dir).unwrap(), 2);
        fs::write(dir.join("2/local"), "0\n").unwrap();
        assert!(matches!(local_nodeid_in(&dir), Err(DlmError::NoNodeId { .. })));
        fs::remove_dir_all(&dir).unwrap();
        assert!(matches!(local_nodeid_in(&dir), Err(DlmError::NoNodeId { .. })));
    }
}
