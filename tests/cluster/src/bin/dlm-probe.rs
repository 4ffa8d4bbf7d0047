//! dlm-probe: runs inside a cluster guest and drives the DLM wrapper (the `dlm` crate) step by step,
//! printing one JSON object per line for each event, so host-side tests can assert on them.
//!
//! Usage: dlm-probe STEP...   (steps run in order; a failing step prints an error and the next
//! step runs anyway)
//!
//!   create:LS | open:LS            create (or join) / open a lockspace
//!   lock:SLOT:RES:MODE:FLAGS       request and wait for the answer (FLAGS: nq,pers,exp or -)
//!   request:SLOT:RES:MODE:FLAGS    request without waiting; `wait:SLOT` gives the answer
//!   wait:SLOT[:SECS]               wait for the operation in flight on SLOT (default 60 s)
//!   convert:SLOT:MODE:FLAGS        convert and wait
//!   unlock:SLOT                    unlock (refused above PR) and wait
//!   release:SLOT                   convert to NL, then unlock
//!   cancel:SLOT                    cancel the operation in flight
//!   basts:SLOT                     how many blocking ASTs SLOT's lock received ("count")
//!   adopt:SLOT:RES:MODE            adopt this node's orphan (PERSISTENT kept)
//!   purge                          free this node's orphans
//!   release-ls[:force] | close-ls  release / close the lockspace
//!   waitfile:PATH[:SECS]           wait until PATH exists (default 120 s)
//!   sleep:MS                       sleep
//!   hold                           sleep until killed
//!
//! The same through the daemon's `dlm` backend (lockmgr::backend::dlm):
//!   backend:LS                     join LS as a DlmBackend
//!   acquire:RES:MODE:nq|SECS       acquire (NOQUEUE, or wait up to SECS)
//!   drop:RES                       release the grant acquire/adopt-grant gave for RES
//!   adopt-grant:RES:MODE           adopt this node's orphan
//!   purge-orphans                  free this node's orphans
//!
//! Every line has "ev" (the step) and either "result" or "error" (a snake_case kind) plus
//! "message". The first line is {"ev":"start","pid":...}.

use dlm::{Completion, DlmError, Lock, LockFlags, LockMode, Lockspace, ResourceName};
use lockmgr::backend::dlm::DlmBackend;
use lockmgr::backend::{Backend, BackendError, Grant, ResName};
use proto::mode::Mode;
use serde_json::{json, Value};
use std::collections::HashMap;
use std::io::Write;
use std::path::Path;
use std::time::{Duration, Instant};

fn emit(v: Value) {
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{v}");
    let _ = out.flush();
}

fn error_kind(e: &DlmError) -> &'static str {
    match e {
        DlmError::InvalidLockspaceName { .. } => "invalid_lockspace_name",
        DlmError::InvalidResourceName { .. } => "invalid_resource_name",
        DlmError::Released(_) => "released",
        DlmError::WouldBlock(_) => "would_block",
        DlmError::Deadlock(_) => "deadlock",
        DlmError::TimedOut(_) => "timed_out",
        DlmError::NoOrphan(_) => "no_orphan",
        DlmError::OrphanModeMismatch { .. } => "orphan_mode_mismatch",
        DlmError::Busy(_) => "busy",
        DlmError::Ended(_) => "ended",
        DlmError::UnsafeUnlock { .. } => "unsafe_unlock",
        DlmError::Unexpected { .. } => "unexpected",
        DlmError::NoNodeId { .. } => "no_nodeid",
        DlmError::Abandoned { .. } => "abandoned",
        DlmError::Sys { .. } => "sys",
    }
}

fn parse_flags(s: &str) -> Result<LockFlags, String> {
    let mut f = LockFlags::NONE;
    for part in s.split(',').filter(|p| !p.is_empty() && *p != "-") {
        f = f | match part {
            "nq" => LockFlags::NOQUEUE,
            "pers" => LockFlags::PERSISTENT,
            "exp" => LockFlags::EXPEDITE,
            other => return Err(format!("unknown flag {other:?}")),
        };
    }
    Ok(f)
}

struct Probe {
    ls: Option<Lockspace>,
    slots: HashMap<String, Lock>,
    backend: Option<DlmBackend>,
    grants: HashMap<String, Grant>,
}

fn backend_err(e: BackendError) -> Value {
    let kind = match &e {
        BackendError::WouldBlock(_) => "would_block",
        BackendError::TimedOut(_) => "timed_out",
        BackendError::NoOrphan(_) => "no_orphan",
        BackendError::OrphanModeMismatch { .. } => "orphan_mode_mismatch",
        BackendError::Unavailable { .. } | BackendError::NotReady(_) => "unavailable",
        BackendError::Dlm(_) | BackendError::IncompatibleJournal(_) => "failed",
    };
    json!({"error": kind, "message": e.to_string()})
}

type StepResult = Result<Value, Value>;

fn dlm_err(e: DlmError) -> Value {
    json!({"error": error_kind(&e), "message": e.to_string()})
}

fn completion(c: Completion) -> Value {
    json!({"result": c.name()})
}

impl Probe {
    fn ls(&self) -> Result<&Lockspace, Value> {
        self.ls.as_ref().ok_or_else(|| json!({"error": "usage", "message": "no lockspace: create or open first"}))
    }

    fn slot(&self, s: &str) -> Result<&Lock, Value> {
        self.slots.get(s).ok_or_else(|| json!({"error": "usage", "message": format!("empty slot {s}")}))
    }

    fn backend(&self) -> Result<&DlmBackend, Value> {
        self.backend.as_ref().ok_or_else(|| json!({"error": "usage", "message": "no backend: backend:LS first"}))
    }

    fn backend_step(&mut self, args: &[&str]) -> StepResult {
        let usage = |m: &str| json!({"error": "usage", "message": m});
        let mode = |s: &str| s.parse::<Mode>().map_err(|m| usage(&m));
        match args {
            ["backend", name] => {
                let host = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_default();
                self.backend = Some(DlmBackend::new(name, host.trim()).map_err(backend_err)?);
                let (id, node) = self.backend()?.node();
                Ok(json!({"result": "ok", "nodeid": id, "node": node}))
            }
            ["acquire", r, m, w] => {
                let wait = match *w {
                    "nq" => None,
                    s => Some(Duration::from_secs(s.parse().map_err(|_| usage("acquire:RES:MODE:nq|SECS"))?)),
                };
                let g = self.backend()?.acquire(&ResName(r.to_string()), mode(m)?, wait).map_err(backend_err)?;
                self.grants.insert(r.to_string(), g);
                Ok(json!({"result": "granted"}))
            }
            ["adopt-grant", r, m] => {
                let g = self.backend()?.adopt(&ResName(r.to_string()), mode(m)?).map_err(backend_err)?;
                self.grants.insert(r.to_string(), g);
                Ok(json!({"result": "granted"}))
            }
            ["drop", r] => {
                let g = self.grants.remove(*r).ok_or_else(|| usage("no grant for that resource"))?;
                self.backend()?.release(&g).map_err(backend_err)?;
                Ok(json!({"result": "released"}))
            }
            ["purge-orphans"] => {
                self.backend()?.purge_orphans().map_err(backend_err)?;
                Ok(json!({"result": "ok"}))
            }
            _ => Err(usage("unknown step")),
        }
    }

    fn step(&mut self, args: &[&str]) -> StepResult {
        if matches!(args.first(), Some(&("backend" | "acquire" | "adopt-grant" | "drop" | "purge-orphans"))) {
            return self.backend_step(args);
        }
        let usage = |m: &str| json!({"error": "usage", "message": m});
        let mode = |s: &str| s.parse::<LockMode>().map_err(|m| usage(&m));
        let flags = |s: &str| parse_flags(s).map_err(|m| usage(&m));
        let res = |s: &str| ResourceName::new(s).map_err(dlm_err);
        match args {
            ["create", name] => {
                self.ls = Some(Lockspace::create(name).map_err(dlm_err)?);
                Ok(json!({"result": "ok"}))
            }
            ["open", name] => {
                self.ls = Some(Lockspace::open(name).map_err(dlm_err)?);
                Ok(json!({"result": "ok"}))
            }
            ["lock", slot, r, m, f] => {
                let lock = self.ls()?.request(&res(r)?, mode(m)?, flags(f)?).map_err(dlm_err)?;
                let c = lock.wait_or_cancel(Duration::from_secs(60)).map_err(dlm_err)?;
                let v = json!({"result": c.name(), "lkid": lock.lkid()});
                self.slots.insert(slot.to_string(), lock);
                Ok(v)
            }
            ["request", slot, r, m, f] => {
                let lock = self.ls()?.request(&res(r)?, mode(m)?, flags(f)?).map_err(dlm_err)?;
                self.slots.insert(slot.to_string(), lock);
                Ok(json!({"result": "issued"}))
            }
            ["wait", slot] | ["wait", slot, _] => {
                let secs = args.get(2).and_then(|s| s.parse().ok()).unwrap_or(60);
                let c = self.slot(slot)?.wait(Some(Duration::from_secs(secs))).map_err(dlm_err)?;
                Ok(completion(c))
            }
            ["convert", slot, m, f] => {
                let lock = self.slot(slot)?;
                lock.convert(mode(m)?, flags(f)?).map_err(dlm_err)?;
                Ok(completion(lock.wait_or_cancel(Duration::from_secs(60)).map_err(dlm_err)?))
            }
            ["unlock", slot] => {
                let lock = self.slot(slot)?;
                lock.unlock().map_err(dlm_err)?;
                Ok(completion(lock.wait(Some(Duration::from_secs(60))).map_err(dlm_err)?))
            }
            ["release", slot] => {
                self.slot(slot)?.release().map_err(dlm_err)?;
                Ok(json!({"result": "released"}))
            }
            ["basts", slot] => Ok(json!({"result": "ok", "count": self.slot(slot)?.blocking_asts()})),
            ["cancel", slot] => {
                self.slot(slot)?.cancel().map_err(dlm_err)?;
                Ok(json!({"result": "ok"}))
            }
            ["adopt", slot, r, m] => {
                let lock = self.ls()?.adopt(&res(r)?, mode(m)?, LockFlags::PERSISTENT).map_err(dlm_err)?;
                let v = json!({"result": "granted", "lkid": lock.lkid()});
                self.slots.insert(slot.to_string(), lock);
                Ok(v)
            }
            ["purge"] => {
                let nodeid = self.ls()?.purge_own_orphans().map_err(dlm_err)?;
                Ok(json!({"result": "ok", "nodeid": nodeid}))
            }
            ["release-ls"] | ["release-ls", "force"] => {
                let out = self.ls()?.release(args.len() == 2).map_err(dlm_err)?;
                Ok(json!({"result": format!("{out:?}").to_lowercase()}))
            }
            ["close-ls"] => {
                self.ls()?.close().map_err(dlm_err)?;
                Ok(json!({"result": "ok"}))
            }
            ["waitfile", path] | ["waitfile", path, _] => {
                let secs = args.get(2).and_then(|s| s.parse().ok()).unwrap_or(120);
                let end = Instant::now() + Duration::from_secs(secs);
                while !Path::new(path).exists() {
                    if Instant::now() > end {
                        return Err(json!({"error": "timed_out", "message": format!("{path} did not appear")}));
                    }
                    std::thread::sleep(Duration::from_millis(20));
                }
                Ok(json!({"result": "ok"}))
            }
            ["sleep", ms] => {
                std::thread::sleep(Duration::from_millis(ms.parse().map_err(|_| usage("sleep:MS"))?));
                Ok(json!({"result": "ok"}))
            }
            ["hold"] => loop {
                std::thread::sleep(Duration::from_secs(3600));
            },
            _ => Err(usage("unknown step")),
        }
    }
}

fn main() {
    emit(json!({"ev": "start", "pid": std::process::id()}));
    let mut probe = Probe { ls: None, slots: HashMap::new(), backend: None, grants: HashMap::new() };
    for step in std::env::args().skip(1) {
        let args: Vec<&str> = step.split(':').collect();
        let mut v = match probe.step(&args) {
            Ok(v) | Err(v) => v,
        };
        v["ev"] = json!(args[0]);
        v["step"] = json!(step);
        emit(v);
    }
    emit(json!({"ev": "end"}));
}
