//! daemon-client: runs inside a cluster guest and talks to that guest's virtdlmd over its
//! control socket with the `proto` crate, as the libvirt plugin does, printing one JSON object
//! per line for each step so host-side tests can assert on them.
//!
//! Usage: daemon-client SOCKET STEP...   (steps run in order, each on a new connection)
//!
//! A VM is `NAME:PID` (its uuid is derived from NAME); resources are `MODE=PATH` disks joined
//! with `,` (MODE: EX plain, CW `<shareable/>`, PR `<readonly/>`, CR both).
//!
//!   register:NAME:PID:RES          register the VM (libvirt's REGISTER_ONLY), lock nothing
//!   acquire:NAME:PID:RES           acquire, all or nothing, NOQUEUE
//!   release:NAME:PID:RES           release
//!   inquire:NAME:PID               the VM's state string
//!   locks                          this daemon's lock table
//!   until-granted:SECS:NAME:PID:RES   acquire every 200 ms until it is granted or SECS pass;
//!                                  prints the last answer and the number of attempts
//!   hammer:STOPFILE:SECS:NAME:PID:RES acquire every 100 ms until STOPFILE exists (at most
//!                                  SECS); prints how the attempts were answered
//!
//! Every line has "step" and "outcome": the response kind (`ok`, `state`, `locks`), the
//! error code of a refusal (`conflict`, `owner_gone`, ...), or `io` when the daemon could not
//! be reached; plus "response" (the daemon's answer as sent) where there is one.

use cluster_tests::uuid_of;
use proto::mode::Mode;
use proto::{self, Op, OwnerSpec, Resource, Response};
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::io::Write;
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::{Duration, Instant};

fn emit(v: Value) {
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{v}");
    let _ = out.flush();
}

fn owner(name: &str, pid: &str) -> Result<OwnerSpec, String> {
    let pid = pid.parse().map_err(|_| format!("bad pid {pid:?}"))?;
    Ok(OwnerSpec {
        uuid: uuid_of(name),
        name: name.to_string(),
        pid,
        id: 1,
        uri: Some("qemu:///system".into()),
        action: Default::default(),
    })
}

fn mode(s: &str) -> Result<Mode, String> {
    Mode::ALL.into_iter().find(|m| m.to_string() == s).ok_or_else(|| format!("bad mode {s:?}"))
}

fn resources(spec: &str) -> Result<Vec<Resource>, String> {
    spec.split(',')
        .map(|r| {
            let (m, path) = r.split_once('=').ok_or_else(|| format!("resource {r:?} is not MODE=PATH"))?;
            let (readonly, shared) = match mode(m)? {
                Mode::Ex => (false, false),
                Mode::Cw => (false, true),
                Mode::Pr => (true, false),
                Mode::Cr => (true, true),
            };
            Ok(Resource::Disk { path: path.to_string(), readonly, shared })
        })
        .collect()
}

/// One request on a fresh connection.
fn call(socket: &Path, op: Op) -> Result<Response, String> {
    let mut s = UnixStream::connect(socket).map_err(|e| format!("connect {}: {e}", socket.display()))?;
    s.set_read_timeout(Some(Duration::from_secs(120))).map_err(|e| e.to_string())?;
    proto::call(&mut s, op).map_err(|e| e.to_string())
}

fn outcome(r: &Result<Response, String>) -> String {
    match r {
        Ok(Response::Error(e)) => {
            serde_json::to_value(e.code).ok().and_then(|v| v.as_str().map(str::to_string)).unwrap_or_default()
        }
        Ok(resp) => {
            serde_json::to_value(resp).ok().and_then(|v| v["result"].as_str().map(str::to_string)).unwrap_or_default()
        }
        Err(_) => "io".into(),
    }
}

fn report(step: &str, r: &Result<Response, String>, extra: Value) {
    let mut v = json!({ "step": step, "outcome": outcome(r) });
    match r {
        Ok(resp) => v["response"] = serde_json::to_value(resp).unwrap_or(Value::Null),
        Err(e) => v["message"] = json!(e),
    }
    if let (Value::Object(m), Value::Object(x)) = (&mut v, extra) {
        m.extend(x);
    }
    emit(v);
}

fn acquire_op(name: &str, pid: &str, res: &str) -> Result<Op, String> {
    Ok(Op::Acquire { owner: owner(name, pid)?, resources: resources(res)?, state: None, wait_ms: 0 })
}

fn run(socket: &Path, step: &str) -> Result<(), String> {
    let parts: Vec<&str> = step.splitn(6, ':').collect();
    match parts.as_slice() {
        ["register", name, pid, res] => {
            let op = Op::Register { owner: owner(name, pid)?, resources: resources(res)? };
            report(step, &call(socket, op), json!({}));
        }
        ["acquire", name, pid, res] => report(step, &call(socket, acquire_op(name, pid, res)?), json!({})),
        ["release", name, pid, res] => {
            let op = Op::Release { owner: owner(name, pid)?, resources: resources(res)? };
            report(step, &call(socket, op), json!({}));
        }
        ["inquire", name, pid] => report(step, &call(socket, Op::Inquire { owner: owner(name, pid)? }), json!({})),
        ["locks"] => report(step, &call(socket, Op::Locks), json!({})),
        ["until-granted", secs, name, pid, res] => {
            let end = Instant::now() + Duration::from_secs(secs.parse().map_err(|_| format!("bad seconds {secs:?}"))?);
            let mut attempts = 0u32;
            loop {
                attempts += 1;
                let r = call(socket, acquire_op(name, pid, res)?);
                if matches!(r, Ok(Response::Ok { .. })) || Instant::now() >= end {
                    report(step, &r, json!({ "attempts": attempts }));
                    break;
                }
                std::thread::sleep(Duration::from_millis(200));
            }
        }
        ["hammer", stop, secs, name, pid, res] => {
            let end = Instant::now() + Duration::from_secs(secs.parse().map_err(|_| format!("bad seconds {secs:?}"))?);
            let mut counts: BTreeMap<String, u32> = BTreeMap::new();
            let mut last_conflict = None;
            emit(json!({ "step": step, "outcome": "started" }));
            while !Path::new(stop).exists() && Instant::now() < end {
                let r = call(socket, acquire_op(name, pid, res)?);
                if let Ok(Response::Error(e)) = &r {
                    last_conflict = Some(e.message.clone());
                }
                *counts.entry(outcome(&r)).or_default() += 1;
                std::thread::sleep(Duration::from_millis(100));
            }
            emit(
                json!({ "step": step, "outcome": "done", "counts": counts, "stopped": Path::new(stop).exists(), "last_message": last_conflict }),
            );
        }
        _ => return Err(format!("unknown step {step:?}")),
    }
    Ok(())
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let Some((socket, steps)) = args.split_first() else {
        eprintln!("usage: daemon-client SOCKET STEP...");
        std::process::exit(2);
    };
    let mut bad = false;
    for step in steps {
        if let Err(e) = run(Path::new(socket), step) {
            emit(json!({ "step": step, "outcome": "usage", "message": e }));
            bad = true;
        }
    }
    std::process::exit(if bad { 2 } else { 0 });
}
