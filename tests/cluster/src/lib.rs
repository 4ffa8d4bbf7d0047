//! Host side of the cluster tier: drives the running test cluster through `cluster.sh`.
//!
//! `tests/cluster/run.sh` starts one cluster for the whole run and exports
//! `VIRTDLM_CLUSTER` (the path of `cluster.sh`) plus its `CL_*` settings; every test here
//! talks to that cluster. Run outside `run.sh`, the tests fail and say so.

pub mod checker;
pub mod cpu;
pub mod daemon;

use serde_json::Value;
use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

/// The running test cluster.
pub struct Cluster {
    script: PathBuf,
}

/// Output of a command run in a guest.
#[derive(Debug)]
pub struct Output {
    pub code: i32,
    pub text: String,
}

impl Output {
    /// The JSON lines of the output (other lines are ignored).
    pub fn events(&self) -> Vec<Value> {
        parse_events(&self.text)
    }
}

fn parse_events(text: &str) -> Vec<Value> {
    text.lines().filter(|l| l.starts_with('{')).filter_map(|l| serde_json::from_str(l).ok()).collect()
}

impl Cluster {
    /// The cluster `run.sh` started; panics with the way to start one when there is none.
    pub fn get() -> Cluster {
        let script = std::env::var_os("VIRTDLM_CLUSTER").unwrap_or_else(|| {
            panic!("no test cluster: these are the cluster tier's tests, run tests/cluster/run.sh (VIRTDLM_CLUSTER is not set)")
        });
        Cluster { script: PathBuf::from(script) }
    }

    fn command(&self) -> Command {
        Command::new(&self.script)
    }

    /// Runs `cmd` (shell) in guest `node` and returns its exit code and output.
    pub fn exec(&self, node: u32, cmd: &str) -> Output {
        let out = self
            .command()
            .args(["exec", &node.to_string(), cmd])
            .stderr(Stdio::inherit())
            .output()
            .expect("running cluster.sh exec");
        Output { code: out.status.code().unwrap_or(-1), text: String::from_utf8_lossy(&out.stdout).into_owned() }
    }

    /// Starts `cmd` in guest `node` in the background; its output is collected as it comes.
    pub fn spawn(&self, node: u32, cmd: &str) -> Running {
        let mut child = self
            .command()
            .args(["exec", &node.to_string(), cmd])
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("running cluster.sh exec");
        let shared = Arc::new((Mutex::new(Collected::default()), Condvar::new()));
        let out = child.stdout.take().expect("piped stdout");
        let s = shared.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(out).lines() {
                let Ok(line) = line else { break };
                let (m, cv) = &*s;
                m.lock().unwrap().lines.push(line);
                cv.notify_all();
            }
            let (m, cv) = &*s;
            m.lock().unwrap().eof = true;
            cv.notify_all();
        });
        Running { node, child, shared, cluster: Cluster { script: self.script.clone() } }
    }

    /// A copy of the host binary `path` under a content-addressed name (target/cluster-bin):
    /// a running guest may keep serving a stale copy of a file rebuilt on the host.
    pub fn guest_binary(&self, path: &str) -> String {
        let out = self.command().args(["bin", path]).output().expect("running cluster.sh bin");
        assert!(out.status.success(), "cluster.sh bin {path}: {}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    }

    /// Runs the DLM probe with `steps` on `node` to the end and returns its events.
    pub fn probe(&self, node: u32, steps: &[&str]) -> Vec<Value> {
        let out = self.exec(node, &self.probe_cmd(steps));
        assert_eq!(out.code, 0, "probe on node{node} exited {}:\n{}", out.code, out.text);
        out.events()
    }

    /// Starts the DLM probe with `steps` on `node` in the background.
    pub fn spawn_probe(&self, node: u32, steps: &[&str]) -> Running {
        self.spawn(node, &self.probe_cmd(steps))
    }

    fn probe_cmd(&self, steps: &[&str]) -> String {
        let probe = self.guest_binary(&probe_binary());
        let mut cmd = probe;
        for s in steps {
            assert!(!s.contains('\''), "step {s:?} must not contain a quote");
            cmd.push_str(&format!(" '{s}'"));
        }
        cmd
    }

    /// `cluster.sh SUBCOMMAND NODE` (kill, partition, heal).
    pub fn node_action(&self, action: &str, node: u32) {
        let st = self.command().args([action, &node.to_string()]).status().expect("running cluster.sh");
        assert!(st.success(), "cluster.sh {action} {node} failed");
    }
}

/// The built `dlm-probe`: `VIRTDLM_PROBE`, else beside the test executable's `deps/` directory.
fn probe_binary() -> String {
    if let Some(p) = std::env::var_os("VIRTDLM_PROBE") {
        return p.to_string_lossy().into_owned();
    }
    let exe = std::env::current_exe().expect("test executable path");
    let dir = exe.parent().and_then(|d| d.parent()).expect("target/<profile>/deps");
    dir.join("dlm-probe").to_string_lossy().into_owned()
}

/// FNV-1a of `bytes`: a stable hash (the test clients name VMs and slots by it).
pub fn fnv(bytes: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in bytes {
        h = (h ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3);
    }
    h
}

/// A stable, valid UUID for a VM name (tests name VMs, the daemon wants UUIDs).
pub fn uuid_of(name: &str) -> String {
    let h = fnv(name.as_bytes());
    format!(
        "{:08x}-{:04x}-4{:03x}-8{:03x}-{:012x}",
        h >> 32,
        (h >> 16) & 0xffff,
        h & 0xfff,
        (h >> 20) & 0xfff,
        h & 0xffff_ffff_ffff
    )
}

/// A binary of this workspace's build: `$env` if set, else beside the test executable's
/// `deps/` directory (`run.sh` builds virtdlmd there too).
pub fn built_binary(name: &str, env: &str) -> String {
    if let Some(p) = std::env::var_os(env) {
        return p.to_string_lossy().into_owned();
    }
    let exe = std::env::current_exe().expect("test executable path");
    let dir = exe.parent().and_then(|d| d.parent()).expect("target/<profile>/deps");
    let path = dir.join(name);
    assert!(
        path.exists(),
        "{} is not built: run tests/cluster/run.sh (or cargo build -p lockmgr -p cli -p plugin)",
        path.display()
    );
    path.to_string_lossy().into_owned()
}

#[derive(Default)]
struct Collected {
    lines: Vec<String>,
    eof: bool,
}

/// A command running in a guest in the background.
pub struct Running {
    node: u32,
    child: Child,
    shared: Arc<(Mutex<Collected>, Condvar)>,
    cluster: Cluster,
}

impl Running {
    /// Waits until an event matching `pred` arrives; panics (with the output so far) after `timeout`.
    pub fn wait_for(&self, what: &str, timeout: Duration, pred: impl Fn(&Value) -> bool) -> Value {
        let end = Instant::now() + timeout;
        let (m, cv) = &*self.shared;
        let mut c = m.lock().unwrap();
        loop {
            if let Some(v) = parse_events(&c.lines.join("\n")).into_iter().find(|v| pred(v)) {
                return v;
            }
            let now = Instant::now();
            if c.eof || now >= end {
                panic!(
                    "node{}: no {what} within {timeout:?}{}; output:\n{}",
                    self.node,
                    if c.eof { " (command ended)" } else { "" },
                    c.lines.join("\n")
                );
            }
            c = cv.wait_timeout(c, end - now).unwrap().0;
        }
    }

    /// Waits for the event of step `step` (the probe's "step" field).
    pub fn wait_step(&self, step: &str, timeout: Duration) -> Value {
        self.wait_for(&format!("event for step {step}"), timeout, |v| v["step"] == step)
    }

    /// The guest pid the probe reported first.
    pub fn pid(&self) -> u64 {
        self.wait_for("start event", Duration::from_secs(30), |v| v["ev"] == "start")["pid"].as_u64().expect("pid")
    }

    /// Waits for the command to end and returns its exit code and every event.
    pub fn finish(mut self, timeout: Duration) -> (i32, Vec<Value>) {
        let end = Instant::now() + timeout;
        loop {
            if let Some(st) = self.child.try_wait().expect("waiting for cluster.sh exec") {
                // The reader thread may still be draining the pipe.
                let (m, cv) = &*self.shared;
                let mut c = m.lock().unwrap();
                while !c.eof {
                    c = cv.wait_timeout(c, Duration::from_secs(5)).unwrap().0;
                }
                return (st.code().unwrap_or(-1), parse_events(&c.lines.join("\n")));
            }
            assert!(Instant::now() < end, "node{}: command did not end within {timeout:?}", self.node);
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// SIGKILLs the probe inside the guest (a crash of the lock holder).
    pub fn kill9(&self) {
        let pid = self.pid();
        let out = self.cluster.exec(self.node, &format!("kill -9 {pid}"));
        assert_eq!(out.code, 0, "kill -9 {pid} on node{}: {}", self.node, out.text);
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        // A test that failed half-way must not leave its probe holding locks for the next one.
        if self.child.try_wait().ok().flatten().is_none() {
            if let Some(pid) = parse_events(&self.shared.0.lock().map(|c| c.lines.join("\n")).unwrap_or_default())
                .iter()
                .find(|v| v["ev"] == "start")
                .and_then(|v| v["pid"].as_u64())
            {
                let _ = self.cluster.exec(self.node, &format!("kill -9 {pid} 2>/dev/null"));
            }
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// The "result" of an event, or its "error" kind.
pub fn outcome(v: &Value) -> String {
    v["result"].as_str().or_else(|| v["error"].as_str()).unwrap_or("?").to_string()
}
