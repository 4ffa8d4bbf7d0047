//! One lock manager object: the VM (owner) and the resources libvirt added to it.
//!
//! libvirt creates a fresh manager for every operation (New, AddResource×N, one of
//! Acquire/Release/Inquire, Free), so nothing here outlives a call sequence.

use crate::error::PluginError;
use proto::{OwnerSpec, Resource};
use std::ffi::CStr;

/// `VIR_LOCK_MANAGER_OBJECT_TYPE_DOMAIN`.
pub const OBJECT_TYPE_DOMAIN: u32 = 0;
/// `VIR_LOCK_MANAGER_RESOURCE_TYPE_DISK` / `_LEASE`.
pub const RESOURCE_TYPE_DISK: u32 = 0;
pub const RESOURCE_TYPE_LEASE: u32 = 1;
/// `VIR_LOCK_MANAGER_RESOURCE_READONLY` / `_SHARED`.
pub const RESOURCE_READONLY: u32 = 1 << 0;
pub const RESOURCE_SHARED: u32 = 1 << 1;
/// `VIR_LOCK_MANAGER_NEW_STARTED`.
pub const NEW_STARTED: u32 = 1 << 0;

/// A parameter value, decoded from libvirt's tagged union.
#[derive(Debug, Clone, PartialEq)]
pub enum Value<'a> {
    Str(Option<&'a CStr>),
    Int(i32),
    Long(i64),
    UInt(u32),
    ULong(u64),
    Double(f64),
    Uuid([u8; 16]),
}

/// One `virLockManagerParam`.
#[derive(Debug, Clone, PartialEq)]
pub struct Param<'a> {
    pub key: &'a CStr,
    pub value: Value<'a>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Manager {
    pub owner: OwnerSpec,
    pub resources: Vec<Resource>,
    /// Created for a freshly started domain (the forked child's sequence).
    pub new_started: bool,
}

fn text(v: &Value<'_>, key: &str) -> Result<Option<String>, PluginError> {
    match v {
        Value::Str(None) => Ok(None),
        Value::Str(Some(s)) => s
            .to_str()
            .map(|s| Some(s.to_string()))
            .map_err(|_| PluginError::BadCall(format!("parameter {key} is not valid UTF-8: {s:?}"))),
        other => Err(PluginError::BadCall(format!("parameter {key} should be a string, got {other:?}"))),
    }
}

fn number(v: &Value<'_>, key: &str) -> Result<u64, PluginError> {
    match *v {
        Value::UInt(n) => Ok(n.into()),
        Value::Int(n) if n >= 0 => Ok(n as u64),
        Value::ULong(n) => Ok(n),
        Value::Long(n) if n >= 0 => Ok(n as u64),
        ref other => Err(PluginError::BadCall(format!("parameter {key} should be a number, got {other:?}"))),
    }
}

/// Canonical lower-case hyphenated text of a 16-byte UUID.
pub fn uuid_text(b: &[u8; 16]) -> String {
    let hex: String = b.iter().map(|x| format!("{x:02x}")).collect();
    format!("{}-{}-{}-{}-{}", &hex[0..8], &hex[8..12], &hex[12..16], &hex[16..20], &hex[20..32])
}

fn check_flags(flags: u32, allowed: u32, call: &str) -> Result<(), PluginError> {
    if flags & !allowed != 0 {
        return Err(PluginError::Unsupported(format!(
            "{call}: unsupported flags {:#x} (this libvirt is newer than dlm.so supports)",
            flags & !allowed
        )));
    }
    Ok(())
}

impl Manager {
    /// `drvNew`: the owner from libvirt's `uuid`, `name`, `id`, `pid`, `uri` parameters.
    pub fn new(object_type: u32, params: &[Param<'_>], flags: u32) -> Result<Manager, PluginError> {
        check_flags(flags, NEW_STARTED, "new")?;
        if object_type != OBJECT_TYPE_DOMAIN {
            return Err(PluginError::Unsupported(format!(
                "lock object type {object_type} is not supported by dlm.so (only domains are)"
            )));
        }
        let (mut uuid, mut name, mut pid, mut id, mut uri) = (None, None, None, 0u32, None);
        for p in params {
            let key = p.key.to_str().unwrap_or("?");
            match (key, &p.value) {
                ("uuid", Value::Uuid(b)) => uuid = Some(uuid_text(b)),
                ("uuid", other) => return Err(PluginError::BadCall(format!("uuid has the wrong type: {other:?}"))),
                ("name", v) => name = text(v, key)?,
                ("id", v) => id = u32::try_from(number(v, key)?).unwrap_or(0),
                ("pid", v) => pid = Some(number(v, key)?),
                ("uri", v) => uri = text(v, key)?,
                // Newer libvirt may add keys; they carry nothing the lock needs.
                _ => {}
            }
        }
        let uuid = uuid.ok_or_else(|| PluginError::BadCall("libvirt passed no domain uuid".into()))?;
        let name = name.ok_or_else(|| PluginError::BadCall(format!("libvirt passed no name for domain {uuid}")))?;
        let pid = pid
            .filter(|p| *p > 0 && *p <= u64::from(u32::MAX))
            .ok_or_else(|| PluginError::BadCall(format!("libvirt passed no QEMU pid for domain {name}")))?
            as u32;
        Ok(Manager {
            owner: OwnerSpec { uuid, name, pid, id, uri, action: Default::default() },
            resources: Vec::new(),
            new_started: flags & NEW_STARTED != 0,
        })
    }

    /// `drvAddResource`: a disk (by path, with its read-only / shareable flags) or a `<lease>`.
    pub fn add_resource(
        &mut self,
        rtype: u32,
        name: &CStr,
        params: &[Param<'_>],
        flags: u32,
    ) -> Result<(), PluginError> {
        check_flags(flags, RESOURCE_READONLY | RESOURCE_SHARED, "add resource")?;
        // libvirt hands over C strings, so a NUL cannot arrive here (virtdlmd refuses one that
        // arrives over the socket). Bytes that are not UTF-8 cannot travel in the protocol's
        // JSON: refused by name, with the way out (a UTF-8 symlink to the file locks it, the
        // daemon resolving the link to the file's own bytes).
        let name = match name.to_str() {
            Ok(s) => s.to_string(),
            Err(_) if rtype == RESOURCE_TYPE_DISK => {
                return Err(PluginError::BadCall(format!(
                    "disk path {name:?} is not valid UTF-8, which dlm.so cannot lock: give the disk a UTF-8 path \
                     (a symlink with a UTF-8 name to the file will do)"
                )))
            }
            Err(_) => {
                return Err(PluginError::BadCall(format!(
                    "lease key {name:?} is not valid UTF-8: dlm.so cannot lock it"
                )))
            }
        };
        let readonly = flags & RESOURCE_READONLY != 0;
        let shared = flags & RESOURCE_SHARED != 0;
        let resource = match rtype {
            // Whether read-only disks are locked at all is virtdlmd's `lock_readonly` setting.
            RESOURCE_TYPE_DISK => Resource::Disk { path: name, readonly, shared },
            RESOURCE_TYPE_LEASE => {
                let (mut lockspace, mut path, mut offset) = (None, None, None);
                for p in params {
                    let key = p.key.to_str().unwrap_or("?");
                    match key {
                        "lockspace" => lockspace = text(&p.value, key)?,
                        "path" => path = text(&p.value, key)?,
                        "offset" => offset = Some(number(&p.value, key)?),
                        _ => {}
                    }
                }
                Resource::Lease { lockspace, key: name, path, offset }
            }
            other => {
                return Err(PluginError::Unsupported(format!(
                    "resource type {other} ({name}) is not supported by dlm.so (only disks and leases are)"
                )))
            }
        };
        if !self.resources.contains(&resource) {
            self.resources.push(resource);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn c(s: &str) -> std::ffi::CString {
        std::ffi::CString::new(s).unwrap()
    }

    #[test]
    fn owner_comes_from_libvirts_five_params() {
        let (k_uuid, k_name, k_id, k_pid, k_uri, vm) = (c("uuid"), c("name"), c("id"), c("pid"), c("uri"), c("web-1"));
        let mut raw = [0u8; 16];
        raw[0] = 0x11;
        raw[15] = 0xff;
        let params = [
            Param { key: &k_uuid, value: Value::Uuid(raw) },
            Param { key: &k_name, value: Value::Str(Some(&vm)) },
            Param { key: &k_id, value: Value::UInt(3) },
            Param { key: &k_pid, value: Value::UInt(4242) },
            Param { key: &k_uri, value: Value::Str(None) },
        ];
        let m = Manager::new(OBJECT_TYPE_DOMAIN, &params, NEW_STARTED).unwrap();
        assert_eq!(m.owner.uuid, "11000000-0000-0000-0000-0000000000ff");
        assert_eq!((m.owner.name.as_str(), m.owner.id, m.owner.pid), ("web-1", 3, 4242));
        assert_eq!(m.owner.uri, None);
        assert!(m.new_started);
        // Without a pid there is no owner to hold locks for.
        let e = Manager::new(OBJECT_TYPE_DOMAIN, &params[..3], 0).unwrap_err();
        assert!(e.to_string().contains("pid"), "{e}");
        assert!(Manager::new(1, &params, 0).is_err());
        assert!(Manager::new(OBJECT_TYPE_DOMAIN, &params, 0x10).is_err());
    }

    fn manager() -> Manager {
        Manager {
            owner: OwnerSpec {
                uuid: "u".into(),
                name: "n".into(),
                pid: 1,
                id: 1,
                uri: None,
                action: Default::default(),
            },
            resources: vec![],
            new_started: false,
        }
    }

    #[test]
    fn disks_and_leases_become_resources() {
        let mut m = manager();
        m.add_resource(RESOURCE_TYPE_DISK, &c("/img/a"), &[], RESOURCE_SHARED).unwrap();
        m.add_resource(RESOURCE_TYPE_DISK, &c("/img/a"), &[], RESOURCE_SHARED).unwrap();
        let (kp, ko, kl, p, l) = (c("path"), c("offset"), c("lockspace"), c("/l.bin"), c("space"));
        let params = [
            Param { key: &kp, value: Value::Str(Some(&p)) },
            Param { key: &ko, value: Value::ULong(1024) },
            Param { key: &kl, value: Value::Str(Some(&l)) },
        ];
        m.add_resource(RESOURCE_TYPE_LEASE, &c("key-1"), &params, 0).unwrap();
        assert_eq!(
            m.resources,
            vec![
                Resource::Disk { path: "/img/a".into(), readonly: false, shared: true },
                Resource::Lease {
                    lockspace: Some("space".into()),
                    key: "key-1".into(),
                    path: Some("/l.bin".into()),
                    offset: Some(1024)
                },
            ]
        );
        let e = m.add_resource(2, &c("/x"), &[], 0).unwrap_err();
        assert!(e.to_string().contains("resource type 2"), "{e}");
    }

    #[test]
    fn a_path_that_is_not_utf8_is_refused_by_name() {
        let mut m = manager();
        let latin1 = std::ffi::CString::new(&b"/img/caf\xe9.img"[..]).unwrap();
        let e = m.add_resource(RESOURCE_TYPE_DISK, &latin1, &[], 0).unwrap_err();
        assert_eq!(
            e.to_string(),
            r#"disk path "/img/caf\xe9.img" is not valid UTF-8, which dlm.so cannot lock: give the disk a UTF-8 path (a symlink with a UTF-8 name to the file will do)"#
        );
        assert!(matches!(e, PluginError::BadCall(_)));
        let e = m.add_resource(RESOURCE_TYPE_LEASE, &latin1, &[], 0).unwrap_err();
        assert!(e.to_string().starts_with(r#"lease key "/img/caf\xe9.img" is not valid UTF-8"#), "{e}");
        assert!(m.resources.is_empty());
    }
}
