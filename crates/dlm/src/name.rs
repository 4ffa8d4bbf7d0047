//! Validated lockspace and resource names: bad names are refused here, before libdlm sees them.

use super::error::DlmError;
use std::fmt;

/// The DLM's limit for both names (`DLM_LOCKSPACE_LEN`, `DLM_RESNAME_MAXLEN`).
pub const MAX_NAME_LEN: usize = 64;

/// A lockspace name: 1..=64 bytes, no NUL (it becomes a C string) and no '/' (it becomes the
/// device name `/dev/misc/dlm_<name>`).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct LockspaceName(String);

impl LockspaceName {
    pub fn new(name: &str) -> Result<Self, DlmError> {
        let bad = |why| Err(DlmError::InvalidLockspaceName { name: name.to_string(), why });
        if name.is_empty() {
            return bad("empty");
        }
        if name.len() > MAX_NAME_LEN {
            return bad("longer than 64 bytes");
        }
        if name.contains('\0') {
            return bad("contains a NUL byte");
        }
        if name.contains('/') {
            return bad("contains '/'");
        }
        Ok(LockspaceName(name.to_string()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for LockspaceName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A resource name: 1..=64 arbitrary bytes.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ResourceName(Vec<u8>);

impl ResourceName {
    pub fn new(name: impl AsRef<[u8]>) -> Result<Self, DlmError> {
        let name = name.as_ref();
        let bad = |why| Err(DlmError::InvalidResourceName { name: String::from_utf8_lossy(name).into_owned(), why });
        if name.is_empty() {
            return bad("empty");
        }
        if name.len() > MAX_NAME_LEN {
            return bad("longer than 64 bytes");
        }
        Ok(ResourceName(name.to_vec()))
    }

    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }
}

impl fmt::Display for ResourceName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&String::from_utf8_lossy(&self.0))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lockspace_names_within_the_limits_pass() {
        assert_eq!(LockspaceName::new("virtdlm").unwrap().as_str(), "virtdlm");
        assert!(LockspaceName::new(&"a".repeat(64)).is_ok());
    }

    #[test]
    fn bad_lockspace_names_are_refused() {
        for (name, why) in [
            (String::new(), "empty"),
            ("a".repeat(65), "longer than 64 bytes"),
            ("ab\0c".to_string(), "contains a NUL byte"),
            ("a/b".to_string(), "contains '/'"),
        ] {
            match LockspaceName::new(&name) {
                Err(DlmError::InvalidLockspaceName { why: w, .. }) => assert_eq!(w, why, "{name:?}"),
                other => panic!("{name:?}: {other:?}"),
            }
        }
    }

    #[test]
    fn resource_names_are_1_to_64_bytes() {
        assert!(ResourceName::new("d1:0123").is_ok());
        assert!(ResourceName::new([0xffu8; 64]).is_ok());
        assert!(matches!(ResourceName::new(""), Err(DlmError::InvalidResourceName { why: "empty", .. })));
        let e = ResourceName::new("x".repeat(65)).unwrap_err();
        assert!(e.to_string().contains("longer than 64 bytes"), "{e}");
    }
}
