//! virtdlmd in the guests: start one per node on the kernel DLM (`--backend dlm`), kill and
//! restart it, run real processes as its VMs' owners, and talk to it with `daemon-client`.
//!
//! Each daemon lives in its own directory under the guest's /run (socket, admin socket,
//! journal, configuration, one log per start) and joins a lockspace of its test's own.

use crate::{built_binary, Cluster, Output, Running};
use serde_json::Value;

/// A virtdlmd running (or killed) in a guest.
pub struct Daemon<'c> {
    c: &'c Cluster,
    pub node: u32,
    dir: String,
    lockspace: String,
    pid: Option<u32>,
}

impl<'c> Daemon<'c> {
    /// Starts `virtdlmd --backend dlm` on `node` in `/run/virtdlmd-<tag>`, joined to
    /// `lockspace`; returns once it serves (it has joined the lockspace and replayed its journal).
    pub fn start(c: &'c Cluster, node: u32, tag: &str, lockspace: &str) -> Daemon<'c> {
        let d = Daemon { c, node, dir: format!("/run/virtdlmd-{tag}"), lockspace: lockspace.into(), pid: None };
        // A fresh journal: what an earlier run in this guest left is not this test's.
        let out = c.exec(node, &format!("rm -rf {}", d.dir));
        assert_eq!(out.code, 0, "rm -rf {} on node{node}: {}", d.dir, out.text);
        let mut d = d;
        d.restart();
        d
    }

    /// Starts the daemon again on the same journal (after `kill9`).
    pub fn restart(&mut self) {
        let out = self.c.exec(self.node, &self.start_script());
        assert_eq!(out.code, 0, "virtdlmd did not start on node{}:\n{}", self.node, out.text);
        let ev = out.events().into_iter().find(|v| v["ev"] == "daemon").expect("daemon start event");
        self.pid = Some(ev["pid"].as_u64().expect("daemon pid") as u32);
    }

    /// Starts the daemon again in the background: the caller can act while it joins and replays.
    pub fn spawn_restart(&mut self) -> Running {
        self.c.spawn(self.node, &self.start_script())
    }

    /// Records the pid a `spawn_restart` reported once it serves.
    pub fn restarted(&mut self, r: Running) {
        let (code, events) = r.finish(std::time::Duration::from_secs(180));
        assert_eq!(code, 0, "virtdlmd did not start again on node{}: {events:?}\n{}", self.node, self.log());
        let ev = events.into_iter().find(|v| v["ev"] == "daemon").expect("daemon start event");
        self.pid = Some(ev["pid"].as_u64().expect("daemon pid") as u32);
    }

    fn start_script(&self) -> String {
        let bin = self.c.guest_binary(&built_binary("virtdlmd", "VIRTDLMD"));
        let d = &self.dir;
        format!(
            r#"set -u
d={d}; mkdir -p $d
log=$d/log.$(( $(ls $d | grep -c '^log\.') + 1 ))
printf 'lockspace = {ls}\n' > $d/virtdlmd.conf
RUST_LOG=info {bin} --config $d/virtdlmd.conf --backend dlm --socket $d/ctl.sock --admin-socket $d/admin.sock \
  --journal $d/journal --node-name node{node} >$log 2>&1 </dev/null &
pid=$!
for i in $(seq 1 1200); do
  if grep -q 'serving on' $log; then echo "{{\"ev\":\"daemon\",\"pid\":$pid,\"log\":\"$log\"}}"; exit 0; fi
  if ! kill -0 $pid 2>/dev/null; then echo "virtdlmd exited:"; cat $log; exit 1; fi
  sleep 0.1
done
echo "virtdlmd not serving after 120 s:"; cat $log; exit 1"#,
            ls = self.lockspace,
            node = self.node,
        )
    }

    /// The control socket inside the guest.
    pub fn socket(&self) -> String {
        format!("{}/ctl.sock", self.dir)
    }

    /// SIGKILLs the daemon (a crash); waits until it is gone.
    pub fn kill9(&mut self) {
        let pid = self.pid.take().expect("the daemon runs");
        let out = self.c.exec(self.node, &kill9_script(pid));
        assert_eq!(out.code, 0, "kill -9 virtdlmd ({pid}) on node{}: {}", self.node, out.text);
    }

    /// Every log line the daemon wrote, all starts.
    pub fn log(&self) -> String {
        self.c.exec(self.node, &format!("cat {}/log.*", self.dir)).text
    }

    /// Runs `daemon-client` with `steps` against this daemon and returns its events.
    pub fn client(&self, steps: &[&str]) -> Vec<Value> {
        let out = self.c.exec(self.node, &self.client_cmd(steps));
        assert_eq!(out.code, 0, "daemon-client on node{} exited {}:\n{}", self.node, out.code, out.text);
        out.events()
    }

    /// Starts `daemon-client` with `steps` in the background.
    pub fn spawn_client(&self, steps: &[&str]) -> Running {
        self.c.spawn(self.node, &self.client_cmd(steps))
    }

    fn client_cmd(&self, steps: &[&str]) -> String {
        let mut cmd = format!(
            "{} {}",
            self.c.guest_binary(&built_binary("daemon-client", "VIRTDLM_DAEMON_CLIENT")),
            self.socket()
        );
        for s in steps {
            assert!(!s.contains('\''), "step {s:?} must not contain a quote");
            cmd.push_str(&format!(" '{s}'"));
        }
        cmd
    }
}

impl Drop for Daemon<'_> {
    /// SIGTERM: the daemon stops without releasing anything, as in production; what it
    /// held stays in the test's own lockspace.
    fn drop(&mut self) {
        if let Some(pid) = self.pid {
            let _ = self.c.exec(self.node, &format!("kill -TERM {pid} 2>/dev/null"));
        }
    }
}

/// `kill -9 PID`, then wait until the process is gone (or a zombie nobody reaped yet).
fn kill9_script(pid: u32) -> String {
    format!("kill -9 {pid} && while [ -e /proc/{pid} ] && ! grep -q '^State:.*Z' /proc/{pid}/status 2>/dev/null; do sleep 0.05; done")
}

/// A VM's QEMU stand-in: a real process (`sleep`) in a guest, the owner of a VM's locks.
pub struct Vm<'c> {
    c: &'c Cluster,
    pub node: u32,
    pub name: String,
    pub pid: u32,
    alive: bool,
}

impl<'c> Vm<'c> {
    pub fn start(c: &'c Cluster, node: u32, name: &str) -> Vm<'c> {
        let out: Output = c.exec(node, "sleep 100000 </dev/null >/dev/null 2>&1 & echo $!");
        assert_eq!(out.code, 0, "starting the owner process on node{node}: {}", out.text);
        let pid = out.text.trim().parse().unwrap_or_else(|_| panic!("owner pid on node{node}: {:?}", out.text));
        Vm { c, node, name: name.into(), pid, alive: true }
    }

    /// `NAME:PID`, as `daemon-client` steps name a VM.
    pub fn id(&self) -> String {
        format!("{}:{}", self.name, self.pid)
    }

    /// `kill -9` of the VM's process (a crash or `virsh destroy`); waits until it is gone.
    pub fn kill9(&mut self) {
        let pid = self.pid;
        let out = self.c.exec(self.node, &kill9_script(pid));
        assert_eq!(out.code, 0, "kill -9 {pid} on node{}: {}", self.node, out.text);
        self.alive = false;
    }
}

impl Drop for Vm<'_> {
    fn drop(&mut self) {
        if self.alive {
            let _ = self.c.exec(self.node, &format!("kill -9 {} 2>/dev/null", self.pid));
        }
    }
}

/// The step's event in a finished client's output.
pub fn event<'a>(events: &'a [Value], step: &str) -> &'a Value {
    events.iter().find(|v| v["step"] == step).unwrap_or_else(|| panic!("no event for step {step}; events: {events:#?}"))
}

/// The step's outcome (`ok`, `state`, `conflict`, ...).
pub fn outcome_of(events: &[Value], step: &str) -> String {
    event(events, step)["outcome"].as_str().unwrap_or("?").to_string()
}
