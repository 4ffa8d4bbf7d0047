//! libvirt's lock-driver ABI (`src/locking/lock_driver.h`, `VIR_LOCK_MANAGER_VERSION` 1000000):
//! the exported `virLockDriverImpl` table and its eight callbacks. All of the plugin's
//! `unsafe` is here: decoding libvirt's pointers into safe values, the manager's private data,
//! strings handed back to libvirt, and the error-report hook. Every callback catches panics
//! and answers -1 with a reported message; none unwinds into libvirt.

use crate::config::Config;
use crate::error::{PluginError, VIR_FROM_LOCKING};
use crate::manager::{Manager, Param, Value};
use crate::ops;
use std::ffi::{c_char, c_int, c_uint, c_void, CStr, CString};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::Path;
use std::ptr;
use std::sync::atomic::{AtomicPtr, Ordering};

/// `VIR_LOCK_MANAGER_VERSION` (major 1): the only ABI this plugin speaks.
pub const LOCK_MANAGER_VERSION: c_uint = 1_000_000;

/// `struct _virLockManager`: owned by libvirt; `private_data` is ours.
#[repr(C)]
pub struct VirLockManager {
    driver: *const VirLockDriver,
    private_data: *mut c_void,
}

/// The value union of `struct _virLockManagerParam`.
#[repr(C)]
#[derive(Clone, Copy)]
union ParamValue {
    iv: c_int,
    l: i64,
    ui: c_uint,
    ul: u64,
    d: f64,
    str_: *const c_char,
    uuid: [u8; 16],
}

/// `struct _virLockManagerParam`.
#[repr(C)]
pub struct VirLockManagerParam {
    type_: c_int,
    key: *const c_char,
    value: ParamValue,
}

type InitFn = unsafe extern "C" fn(c_uint, *const c_char, c_uint) -> c_int;
type DeinitFn = unsafe extern "C" fn() -> c_int;
type NewFn = unsafe extern "C" fn(*mut VirLockManager, c_uint, usize, *mut VirLockManagerParam, c_uint) -> c_int;
type FreeFn = unsafe extern "C" fn(*mut VirLockManager);
type AddResourceFn =
    unsafe extern "C" fn(*mut VirLockManager, c_uint, *const c_char, usize, *mut VirLockManagerParam, c_uint) -> c_int;
type AcquireFn = unsafe extern "C" fn(*mut VirLockManager, *const c_char, c_uint, c_int, *mut c_int) -> c_int;
type ReleaseFn = unsafe extern "C" fn(*mut VirLockManager, *mut *mut c_char, c_uint) -> c_int;

/// `struct _virLockDriver`.
#[repr(C)]
pub struct VirLockDriver {
    pub version: c_uint,
    pub flags: c_uint,
    drv_init: InitFn,
    drv_deinit: DeinitFn,
    drv_new: NewFn,
    drv_free: FreeFn,
    drv_add_resource: AddResourceFn,
    drv_acquire: AcquireFn,
    drv_release: ReleaseFn,
    drv_inquire: ReleaseFn,
}

const _: () = assert!(std::mem::size_of::<VirLockDriver>() == 72);
const _: () = assert!(std::mem::size_of::<VirLockManagerParam>() == 32);
const _: () = assert!(std::mem::offset_of!(VirLockManagerParam, value) == 16);
const _: () = assert!(std::mem::size_of::<VirLockManager>() == 16);

/// The table libvirt looks up with `dlsym(handle, "virLockDriverImpl")`.
///
/// `flags` is 0, not `VIR_LOCK_MANAGER_USES_STATE`: locks move with the running CPUs (the
/// source releases at switch-over, the destination acquires at resume), and virtdlmd keeps
/// whatever it needs itself, so migration is correct without a state in the cookie.
/// Declaring USES_STATE would only make migration protocol v3 mandatory and make a
/// destination reject cookies that lack a state.
#[no_mangle]
#[allow(non_upper_case_globals)]
pub static virLockDriverImpl: VirLockDriver = VirLockDriver {
    version: LOCK_MANAGER_VERSION,
    flags: 0,
    drv_init,
    drv_deinit,
    drv_new,
    drv_free,
    drv_add_resource,
    drv_acquire,
    drv_release,
    drv_inquire,
};

/// The configuration read by the last `drvInit`. A leaked `Box<Config>`, never freed: the
/// forked child and other threads read it with one atomic load, no lock.
static CONFIG: AtomicPtr<Config> = AtomicPtr::new(ptr::null_mut());
/// libvirt's `virReportErrorHelper`, looked up once in `drvInit` (dlsym is not safe after fork).
static REPORT: AtomicPtr<c_void> = AtomicPtr::new(ptr::null_mut());

type ReportFn = unsafe extern "C" fn(c_int, c_int, *const c_char, *const c_char, usize, *const c_char, ...);

fn config() -> Result<&'static Config, PluginError> {
    let p = CONFIG.load(Ordering::Acquire);
    // SAFETY: CONFIG only ever holds null or a pointer from Box::leak, which is never freed.
    unsafe { p.as_ref() }.ok_or_else(|| PluginError::Internal("the plugin was used before drvInit".into()))
}

/// Shows `err` to the user through libvirt (virsh prints it), or on stderr outside libvirt.
fn report(err: &PluginError) {
    let msg = CString::new(err.to_string().replace('\0', " ")).unwrap_or_default();
    let f = REPORT.load(Ordering::Acquire);
    if f.is_null() {
        eprintln!("dlm.so: {}", msg.to_string_lossy());
        return;
    }
    // SAFETY: `f` came from dlsym("virReportErrorHelper"), whose C signature is
    // (int domcode, int errcode, const char *file, const char *func, size_t line, const char *fmt, ...).
    let report: ReportFn = unsafe { std::mem::transmute::<*mut c_void, ReportFn>(f) };
    // SAFETY: every pointer is a valid NUL-terminated string for the duration of the call;
    // the format "%s" consumes exactly the one string argument given.
    unsafe {
        report(VIR_FROM_LOCKING, err.virt_code(), c"dlm.so".as_ptr(), c"dlm".as_ptr(), 0, c"%s".as_ptr(), msg.as_ptr())
    };
}

/// Runs a callback body: Ok -> 0; an error or a panic is reported and gives -1.
fn guard(what: &str, body: impl FnOnce() -> Result<(), PluginError>) -> c_int {
    match catch_unwind(AssertUnwindSafe(body)) {
        Ok(Ok(())) => 0,
        Ok(Err(e)) => {
            report(&e);
            -1
        }
        Err(_) => {
            report(&PluginError::Internal(format!("{what} panicked")));
            -1
        }
    }
}

/// Borrows a C string libvirt passed; `None` for NULL.
///
/// # Safety
/// `p` is NULL or points to a NUL-terminated string valid for `'a`.
unsafe fn c_str<'a>(p: *const c_char) -> Option<&'a CStr> {
    // SAFETY: per the contract above.
    (!p.is_null()).then(|| unsafe { CStr::from_ptr(p) })
}

/// Decodes libvirt's parameter array.
///
/// # Safety
/// `params` is NULL (then `n` is ignored) or points to `n` initialised params whose keys and
/// strings live for `'a`, as libvirt guarantees for the duration of a callback.
unsafe fn decode_params<'a>(params: *const VirLockManagerParam, n: usize) -> Result<Vec<Param<'a>>, PluginError> {
    if params.is_null() || n == 0 {
        return Ok(Vec::new());
    }
    // SAFETY: per the contract above.
    let raw = unsafe { std::slice::from_raw_parts(params, n) };
    raw.iter()
        .map(|p| {
            // SAFETY: libvirt's keys are static NUL-terminated strings.
            let key = unsafe { c_str(p.key) }.ok_or_else(|| PluginError::BadCall("parameter without a key".into()))?;
            // SAFETY: `type_` says which union member libvirt wrote (lock_driver.h's param types);
            // `id` and `pid` are declared UINT but written through `.iv`: the same four bytes.
            let value = unsafe {
                match p.type_ {
                    0 | 1 => Value::Str(c_str(p.value.str_)),
                    2 => Value::Int(p.value.iv),
                    3 => Value::Long(p.value.l),
                    4 => Value::UInt(p.value.ui),
                    5 => Value::ULong(p.value.ul),
                    6 => Value::Double(p.value.d),
                    7 => Value::Uuid(p.value.uuid),
                    t => return Err(PluginError::Unsupported(format!("parameter {key:?} has unknown type {t}"))),
                }
            };
            Ok(Param { key, value })
        })
        .collect()
}

/// The manager's private data.
///
/// # Safety
/// `man` is NULL or a manager libvirt passes between drvNew and drvFree.
unsafe fn manager<'a>(man: *mut VirLockManager) -> Result<&'a mut Manager, PluginError> {
    // SAFETY: per the contract; private_data is NULL or the Box<Manager> set by drv_new.
    unsafe { man.as_mut().and_then(|m| (m.private_data as *mut Manager).as_mut()) }
        .ok_or_else(|| PluginError::BadCall("lock manager used without drvNew".into()))
}

/// Copies `s` into memory libvirt frees with `g_free` (which is `free`).
fn c_alloc(s: &str) -> Result<*mut c_char, PluginError> {
    let c = CString::new(s).map_err(|_| PluginError::Internal("state string contains NUL".into()))?;
    // SAFETY: `c` is a valid NUL-terminated string; strdup returns malloc'd memory or NULL.
    let p = unsafe { libc::strdup(c.as_ptr()) };
    if p.is_null() {
        return Err(PluginError::Internal("out of memory".into()));
    }
    Ok(p)
}

unsafe extern "C" fn drv_init(version: c_uint, config_file: *const c_char, flags: c_uint) -> c_int {
    guard("drvInit", || {
        if REPORT.load(Ordering::Acquire).is_null() {
            // SAFETY: dlsym with RTLD_DEFAULT and a static symbol name; NULL when absent.
            let f = unsafe { libc::dlsym(libc::RTLD_DEFAULT, c"virReportErrorHelper".as_ptr()) };
            REPORT.store(f, Ordering::Release);
        }
        if version / 1_000_000 != LOCK_MANAGER_VERSION / 1_000_000 || flags != 0 {
            return Err(PluginError::Unsupported(format!(
                "lock driver ABI {version} (flags {flags:#x}) is not supported; dlm.so implements {LOCK_MANAGER_VERSION}"
            )));
        }
        // SAFETY: libvirt passes NULL or a NUL-terminated path.
        let cfg = match unsafe { c_str(config_file) } {
            None => Config::default(),
            Some(p) => Config::load(Path::new(&*p.to_string_lossy()))?,
        };
        // The previous config is leaked on purpose: another thread may still be reading it.
        CONFIG.store(Box::into_raw(Box::new(cfg)), Ordering::Release);
        Ok(())
    })
}

unsafe extern "C" fn drv_deinit() -> c_int {
    0
}

unsafe extern "C" fn drv_new(
    man: *mut VirLockManager,
    type_: c_uint,
    nparams: usize,
    params: *mut VirLockManagerParam,
    flags: c_uint,
) -> c_int {
    guard("drvNew", || {
        // SAFETY: libvirt passes `nparams` valid params for the duration of the call.
        let params = unsafe { decode_params(params, nparams) }?;
        let mgr = Manager::new(type_, &params, flags)?;
        // SAFETY: `man` is libvirt's freshly allocated manager (or NULL, refused here).
        let m = unsafe { man.as_mut() }.ok_or_else(|| PluginError::BadCall("drvNew without a manager".into()))?;
        m.private_data = Box::into_raw(Box::new(mgr)) as *mut c_void;
        Ok(())
    })
}

unsafe extern "C" fn drv_free(man: *mut VirLockManager) {
    let _ = catch_unwind(|| {
        // SAFETY: `man` is NULL or libvirt's manager; private_data is NULL or our Box<Manager>,
        // taken back exactly once and cleared.
        unsafe {
            if let Some(m) = man.as_mut() {
                if !m.private_data.is_null() {
                    drop(Box::from_raw(m.private_data as *mut Manager));
                    m.private_data = ptr::null_mut();
                }
            }
        }
    });
}

unsafe extern "C" fn drv_add_resource(
    man: *mut VirLockManager,
    type_: c_uint,
    name: *const c_char,
    nparams: usize,
    params: *mut VirLockManagerParam,
    flags: c_uint,
) -> c_int {
    guard("drvAddResource", || {
        // SAFETY: libvirt's manager, name and params are valid for the duration of the call.
        let (mgr, name, params) = unsafe { (manager(man)?, c_str(name), decode_params(params, nparams)?) };
        let name = name.ok_or_else(|| PluginError::BadCall("resource without a name".into()))?;
        mgr.add_resource(type_, name, &params, flags)
    })
}

unsafe extern "C" fn drv_acquire(
    man: *mut VirLockManager,
    state: *const c_char,
    flags: c_uint,
    action: c_int,
    _fd: *mut c_int,
) -> c_int {
    // `*fd` stays -1: virtdlmd follows QEMU through a pidfd, no descriptor is leaked into it.
    guard("drvAcquire", || {
        // SAFETY: libvirt's manager and state string are valid for the duration of the call.
        let (mgr, state) = unsafe { (manager(man)?, c_str(state)) };
        let state = state.map(|s| s.to_string_lossy().into_owned()).filter(|s| !s.is_empty());
        ops::acquire(mgr, config()?, state, flags, action)
    })
}

/// Stores the answer of Release/Inquire in libvirt's `*state` (NULL allowed: hotplug passes none).
///
/// # Safety
/// `state` is NULL or a valid `char **` from libvirt.
unsafe fn hand_back(state: *mut *mut c_char, value: Option<String>) -> Result<(), PluginError> {
    if state.is_null() {
        return Ok(());
    }
    let p = match value {
        Some(s) => c_alloc(&s)?,
        None => ptr::null_mut(),
    };
    // SAFETY: per the contract; libvirt takes ownership of `p` (freed with g_free = free).
    unsafe { *state = p };
    Ok(())
}

/// Release and Inquire: run `op` and hand its state back to libvirt.
///
/// # Safety
/// `man` and `state` are what libvirt passed to the callback (valid for its duration).
unsafe fn state_call(
    what: &str,
    man: *mut VirLockManager,
    state: *mut *mut c_char,
    flags: c_uint,
    op: fn(&Manager, &Config) -> Result<Option<String>, PluginError>,
) -> c_int {
    guard(what, || {
        if flags != 0 {
            return Err(PluginError::Unsupported(format!("{what}: unsupported flags {flags:#x}")));
        }
        // SAFETY: per this function's contract.
        let mgr = unsafe { manager(man)? };
        let value = op(mgr, config()?)?;
        // SAFETY: per this function's contract.
        unsafe { hand_back(state, value) }
    })
}

unsafe extern "C" fn drv_release(man: *mut VirLockManager, state: *mut *mut c_char, flags: c_uint) -> c_int {
    // SAFETY: the arguments are libvirt's, as drvRelease received them.
    unsafe { state_call("drvRelease", man, state, flags, ops::release) }
}

unsafe extern "C" fn drv_inquire(man: *mut VirLockManager, state: *mut *mut c_char, flags: c_uint) -> c_int {
    // SAFETY: the arguments are libvirt's, as drvInquire received them.
    unsafe { state_call("drvInquire", man, state, flags, ops::inquire) }
}
