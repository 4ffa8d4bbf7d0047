//! `cs_error_t` as a typed error, with corosync's own text (`cs_strerror`).

use cpg_sys as sys;
use std::ffi::CStr;

/// A corosync status code other than `CS_OK`.
///
/// Kept open (`Unknown`) because a newer corosync may return codes this build does not know.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum CsError {
    /// `CS_ERR_LIBRARY`: the library cannot reach corosync (not running, or it went away).
    Library,
    Version,
    Init,
    Timeout,
    /// `CS_ERR_TRY_AGAIN`: flow control or a membership change in progress; retry later.
    TryAgain,
    InvalidParam,
    NoMemory,
    /// `CS_ERR_BAD_HANDLE`: the handle was finalized (or never existed).
    BadHandle,
    Busy,
    Access,
    NotExist,
    NameTooLong,
    /// `CS_ERR_EXIST`: e.g. this process already joined this CPG group.
    Exist,
    NoSpace,
    Interrupt,
    NameNotFound,
    NoResources,
    NotSupported,
    BadOperation,
    FailedOperation,
    MessageError,
    QueueFull,
    QueueNotAvailable,
    BadFlags,
    TooBig,
    NoSections,
    ContextNotFound,
    TooManyGroups,
    Security,
    Unknown(u32),
}

impl CsError {
    /// Maps a raw status; `None` for `CS_OK`.
    pub fn from_raw(code: sys::cs_error_t) -> Option<Self> {
        use CsError::*;
        Some(match code {
            sys::CS_OK => return None,
            sys::CS_ERR_LIBRARY => Library,
            sys::CS_ERR_VERSION => Version,
            sys::CS_ERR_INIT => Init,
            sys::CS_ERR_TIMEOUT => Timeout,
            sys::CS_ERR_TRY_AGAIN => TryAgain,
            sys::CS_ERR_INVALID_PARAM => InvalidParam,
            sys::CS_ERR_NO_MEMORY => NoMemory,
            sys::CS_ERR_BAD_HANDLE => BadHandle,
            sys::CS_ERR_BUSY => Busy,
            sys::CS_ERR_ACCESS => Access,
            sys::CS_ERR_NOT_EXIST => NotExist,
            sys::CS_ERR_NAME_TOO_LONG => NameTooLong,
            sys::CS_ERR_EXIST => Exist,
            sys::CS_ERR_NO_SPACE => NoSpace,
            sys::CS_ERR_INTERRUPT => Interrupt,
            sys::CS_ERR_NAME_NOT_FOUND => NameNotFound,
            sys::CS_ERR_NO_RESOURCES => NoResources,
            sys::CS_ERR_NOT_SUPPORTED => NotSupported,
            sys::CS_ERR_BAD_OPERATION => BadOperation,
            sys::CS_ERR_FAILED_OPERATION => FailedOperation,
            sys::CS_ERR_MESSAGE_ERROR => MessageError,
            sys::CS_ERR_QUEUE_FULL => QueueFull,
            sys::CS_ERR_QUEUE_NOT_AVAILABLE => QueueNotAvailable,
            sys::CS_ERR_BAD_FLAGS => BadFlags,
            sys::CS_ERR_TOO_BIG => TooBig,
            sys::CS_ERR_NO_SECTIONS => NoSections,
            sys::CS_ERR_CONTEXT_NOT_FOUND => ContextNotFound,
            sys::CS_ERR_TOO_MANY_GROUPS => TooManyGroups,
            sys::CS_ERR_SECURITY => Security,
            other => Unknown(other),
        })
    }

    /// The raw `cs_error_t` value.
    pub fn raw(self) -> sys::cs_error_t {
        use CsError::*;
        match self {
            Library => sys::CS_ERR_LIBRARY,
            Version => sys::CS_ERR_VERSION,
            Init => sys::CS_ERR_INIT,
            Timeout => sys::CS_ERR_TIMEOUT,
            TryAgain => sys::CS_ERR_TRY_AGAIN,
            InvalidParam => sys::CS_ERR_INVALID_PARAM,
            NoMemory => sys::CS_ERR_NO_MEMORY,
            BadHandle => sys::CS_ERR_BAD_HANDLE,
            Busy => sys::CS_ERR_BUSY,
            Access => sys::CS_ERR_ACCESS,
            NotExist => sys::CS_ERR_NOT_EXIST,
            NameTooLong => sys::CS_ERR_NAME_TOO_LONG,
            Exist => sys::CS_ERR_EXIST,
            NoSpace => sys::CS_ERR_NO_SPACE,
            Interrupt => sys::CS_ERR_INTERRUPT,
            NameNotFound => sys::CS_ERR_NAME_NOT_FOUND,
            NoResources => sys::CS_ERR_NO_RESOURCES,
            NotSupported => sys::CS_ERR_NOT_SUPPORTED,
            BadOperation => sys::CS_ERR_BAD_OPERATION,
            FailedOperation => sys::CS_ERR_FAILED_OPERATION,
            MessageError => sys::CS_ERR_MESSAGE_ERROR,
            QueueFull => sys::CS_ERR_QUEUE_FULL,
            QueueNotAvailable => sys::CS_ERR_QUEUE_NOT_AVAILABLE,
            BadFlags => sys::CS_ERR_BAD_FLAGS,
            TooBig => sys::CS_ERR_TOO_BIG,
            NoSections => sys::CS_ERR_NO_SECTIONS,
            ContextNotFound => sys::CS_ERR_CONTEXT_NOT_FOUND,
            TooManyGroups => sys::CS_ERR_TOO_MANY_GROUPS,
            Security => sys::CS_ERR_SECURITY,
            Unknown(raw) => raw,
        }
    }

    /// A short human meaning for the codes a caller of this module can meet.
    pub fn meaning(self) -> &'static str {
        use CsError::*;
        match self {
            Library => "cannot reach corosync",
            TryAgain => "corosync is busy (flow control or membership change), try again",
            InvalidParam => "invalid parameter",
            NoMemory => "out of memory",
            BadHandle => "the handle is no longer valid",
            Access => "permission denied",
            NotExist => "does not exist",
            Exist => "already exists (this process already joined the group?)",
            TooBig => "message too big",
            Timeout => "timed out",
            NotSupported => "not supported by this corosync",
            _ => "corosync refused the call",
        }
    }

    /// corosync's name for this code (`cs_strerror`, e.g. "CS_ERR_EXIST").
    pub fn text(self) -> &'static str {
        // SAFETY: cs_strerror accepts any value and returns a pointer to a static,
        // NUL-terminated string literal (its `default:` arm covers unknown codes).
        let ptr = unsafe { sys::cs_strerror(self.raw()) };
        if ptr.is_null() {
            return "unknown corosync error";
        }
        // SAFETY: non-null, NUL-terminated, and static for the life of the process (see above).
        unsafe { CStr::from_ptr(ptr) }.to_str().unwrap_or("unknown corosync error")
    }
}

/// A failed corosync call. `call` names the C function that failed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The library could not reach corosync on this node (`CS_ERR_LIBRARY`).
    #[error("{call}: corosync is not reachable on this node ({}); is corosync running?", CsError::Library.text())]
    NotRunning { call: &'static str },
    /// corosync refused the call.
    #[error("{call}: {} ({})", .code.meaning(), .code.text())]
    Corosync { call: &'static str, code: CsError },
    /// `CS_ERR_TRY_AGAIN` persisted beyond the retry budget.
    #[error("{call}: corosync kept answering \"try again\" for {waited_ms} ms (flow control or a membership change that does not settle)")]
    StillBusy { call: &'static str, waited_ms: u64 },
    /// A C callback failed to copy an event out (allocation failure); the event is lost and
    /// this handle's view can no longer be trusted.
    #[error("{call}: an event could not be copied out of corosync's callback and was lost")]
    EventLost { call: &'static str },
    /// A multicast to a group this handle has not joined: corosync would drop it silently.
    #[error("cannot multicast to CPG group {group:?}: this process has not joined it")]
    NotJoined { group: String },
    /// A name we were asked to pass to corosync is not representable.
    #[error("{what} {name:?} is not usable: {why}")]
    BadName { what: &'static str, name: String, why: &'static str },
}

impl Error {
    /// The corosync code behind this error, if it came from corosync.
    pub fn code(&self) -> Option<CsError> {
        match self {
            Error::NotRunning { .. } => Some(CsError::Library),
            Error::Corosync { code, .. } => Some(*code),
            Error::StillBusy { .. } => Some(CsError::TryAgain),
            Error::EventLost { .. } | Error::NotJoined { .. } | Error::BadName { .. } => None,
        }
    }

    /// True when corosync is gone or was never there: the handle is useless, start over.
    pub fn is_not_running(&self) -> bool {
        matches!(self, Error::NotRunning { .. })
    }
}

pub type Result<T> = std::result::Result<T, Error>;

/// Turns the status of C call `call` into a `Result`.
pub(crate) fn check(call: &'static str, code: sys::cs_error_t) -> Result<()> {
    match CsError::from_raw(code) {
        None => Ok(()),
        Some(CsError::Library) => Err(Error::NotRunning { call }),
        Some(code) => Err(Error::Corosync { call, code }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ok_is_not_an_error() {
        assert!(check("cpg_join", sys::CS_OK).is_ok());
        assert_eq!(CsError::from_raw(sys::CS_OK), None);
    }

    #[test]
    fn every_known_code_round_trips() {
        for raw in 2..=30u32 {
            if raw == 29 {
                continue; // not assigned in corotypes.h
            }
            let code = CsError::from_raw(raw).unwrap();
            assert!(!matches!(code, CsError::Unknown(_)), "code {raw} should be known");
            assert_eq!(code.raw(), raw);
        }
        assert_eq!(CsError::from_raw(100), Some(CsError::Security));
        assert_eq!(CsError::from_raw(29), Some(CsError::Unknown(29)));
        assert_eq!(CsError::Unknown(4242).raw(), 4242);
    }

    #[test]
    fn library_error_means_not_running() {
        let err = check("cpg_model_initialize", sys::CS_ERR_LIBRARY).unwrap_err();
        assert!(err.is_not_running());
        assert_eq!(err.code(), Some(CsError::Library));
        let msg = err.to_string();
        assert!(msg.starts_with("cpg_model_initialize: corosync is not reachable"), "{msg}");
        assert!(msg.contains("is corosync running?"), "{msg}");
    }

    #[test]
    fn other_codes_carry_corosyncs_text() {
        let err = check("cpg_join", sys::CS_ERR_EXIST).unwrap_err();
        assert!(!err.is_not_running());
        assert_eq!(err.code(), Some(CsError::Exist));
        // cs_strerror names the code; we add what it means.
        assert_eq!(CsError::Exist.text(), "CS_ERR_EXIST");
        assert_eq!(CsError::TryAgain.text(), "CS_ERR_TRY_AGAIN");
        assert_eq!(err.to_string(), "cpg_join: already exists (this process already joined the group?) (CS_ERR_EXIST)");
    }

    #[test]
    fn unknown_codes_still_have_text() {
        assert_eq!(CsError::Unknown(4242).text(), "unknown error");
        assert_eq!(CsError::Security.text(), "CS_ERR_SECURITY");
    }
}
