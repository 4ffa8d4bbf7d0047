//! loss-client: runs inside a cluster guest and talks to that guest's virtdlmd, stamping every
//! request with the guest's wall clock (CLOCK_REALTIME, which in the test guests follows the
//! host's), so that events of several nodes can be put in one order.
//!
//! Usage: loss-client SOCKET STEP...
//!
//!   acquire:NAME:PID:MODE=PATH          one NOQUEUE acquisition
//!   until-granted:SECS:NAME:PID:MODE=PATH   acquire every 100 ms until granted or SECS pass
//!   release:NAME:PID:MODE=PATH          release
//!   status                              the daemon's status (use the admin socket)
//!   clock                               this guest's CLOCK_REALTIME
//!
//! One JSON line per step: "step", "outcome" (`ok`, `state`, `status`, an error code, `io`),
//! "sent" and "answered" (seconds since the epoch) of the request that decided the outcome,
//! "response" where there is one. MODE is EX, CW, PR or CR (the libvirt disk flags it stands for).

use cluster_tests::uuid_of;
use proto::mode::Mode;
use proto::{self, Op, OwnerSpec, Resource, Response};
use serde_json::{json, Value};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

fn now() -> f64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs_f64()).unwrap_or(0.0)
}

fn owner(name: &str, pid: &str) -> Result<OwnerSpec, String> {
    let pid = pid.parse().map_err(|_| format!("bad pid {pid:?}"))?;
    Ok(OwnerSpec { uuid: uuid_of(name), name: name.into(), pid, id: 1, uri: None, action: Default::default() })
}

fn resource(spec: &str) -> Result<Resource, String> {
    let (m, path) = spec.split_once('=').ok_or_else(|| format!("resource {spec:?} is not MODE=PATH"))?;
    let mode = Mode::ALL.into_iter().find(|x| x.to_string() == m).ok_or_else(|| format!("bad mode {m:?}"))?;
    let (readonly, shared) = match mode {
        Mode::Ex => (false, false),
        Mode::Cw => (false, true),
        Mode::Pr => (true, false),
        Mode::Cr => (true, true),
    };
    Ok(Resource::Disk { path: path.into(), readonly, shared })
}

fn call(socket: &Path, op: Op) -> (f64, Result<Response, String>, f64) {
    let sent = now();
    let r = (|| {
        let mut s = UnixStream::connect(socket).map_err(|e| format!("connect {}: {e}", socket.display()))?;
        s.set_read_timeout(Some(Duration::from_secs(120))).map_err(|e| e.to_string())?;
        proto::call(&mut s, op).map_err(|e| e.to_string())
    })();
    (sent, r, now())
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

fn report(step: &str, (sent, r, answered): &(f64, Result<Response, String>, f64), extra: Value) {
    let mut v = json!({ "step": step, "outcome": outcome(r), "sent": sent, "answered": answered });
    match r {
        Ok(resp) => v["response"] = serde_json::to_value(resp).unwrap_or(Value::Null),
        Err(e) => v["message"] = json!(e),
    }
    if let (Value::Object(m), Value::Object(x)) = (&mut v, extra) {
        m.extend(x);
    }
    println!("{v}");
}

fn acquire(name: &str, pid: &str, res: &str) -> Result<Op, String> {
    Ok(Op::Acquire { owner: owner(name, pid)?, resources: vec![resource(res)?], state: None, wait_ms: 0 })
}

fn run(socket: &Path, step: &str) -> Result<(), String> {
    let parts: Vec<&str> = step.splitn(5, ':').collect();
    match parts.as_slice() {
        ["acquire", name, pid, res] => report(step, &call(socket, acquire(name, pid, res)?), json!({})),
        ["until-granted", secs, name, pid, res] => {
            let end = Instant::now() + Duration::from_secs(secs.parse().map_err(|_| format!("bad seconds {secs:?}"))?);
            let mut attempts = 0u32;
            loop {
                attempts += 1;
                let r = call(socket, acquire(name, pid, res)?);
                if matches!(r.1, Ok(Response::Ok { .. })) || Instant::now() >= end {
                    report(step, &r, json!({ "attempts": attempts }));
                    break;
                }
                std::thread::sleep(Duration::from_millis(100));
            }
        }
        ["release", name, pid, res] => {
            let op = Op::Release { owner: owner(name, pid)?, resources: vec![resource(res)?] };
            report(step, &call(socket, op), json!({}));
        }
        ["status"] => report(step, &call(socket, Op::Status), json!({})),
        ["clock"] => println!("{}", json!({ "step": step, "outcome": "ok", "realtime": now() })),
        _ => return Err(format!("unknown step {step:?}")),
    }
    Ok(())
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let Some((socket, steps)) = args.split_first() else {
        eprintln!("usage: loss-client SOCKET STEP...");
        std::process::exit(2);
    };
    let mut bad = false;
    for step in steps {
        if let Err(e) = run(Path::new(socket), step) {
            println!("{}", json!({ "step": step, "outcome": "usage", "message": e }));
            bad = true;
        }
    }
    std::process::exit(if bad { 2 } else { 0 });
}
