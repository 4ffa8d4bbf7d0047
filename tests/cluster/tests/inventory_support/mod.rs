//! The inventory tests' guest side: a virtdlmd per node on the kernel DLM with the cluster
//! inventory on (its own lockspace and CPG group), `virtdlm` run against it, and real
//! processes as VM owners taking locks through the control socket.
#![allow(dead_code)]

use cluster_tests::{built_binary as built, Cluster, Output};
use serde_json::{json, Value};

pub const LOCKSPACE: &str = "invls";
pub const GROUP: &str = "virtdlm-inv";

/// A virtdlmd (with the inventory) in guest `node`.
pub struct Node<'c> {
    c: &'c Cluster,
    pub node: u32,
    dir: String,
    virtdlm: String,
    pid: u32,
    vms: Vec<u32>,
}

impl<'c> Node<'c> {
    /// Starts virtdlmd on `node` in a fresh `/run/virtdlmd-inv`; returns once it serves.
    pub fn start(c: &'c Cluster, node: u32) -> Node<'c> {
        Self::start_in(c, node, LOCKSPACE, GROUP)
    }

    /// [`Node::start`] with a lockspace and CPG group of the test's own (so locks a test
    /// leaves behind in the DLM cannot disturb another test file's).
    pub fn start_in(c: &'c Cluster, node: u32, lockspace: &str, group: &str) -> Node<'c> {
        let daemon = c.guest_binary(&built("virtdlmd", "VIRTDLMD"));
        let virtdlm = c.guest_binary(&built("virtdlm", "VIRTDLM"));
        let dir = "/run/virtdlmd-inv".to_string();
        let script = format!(
            r#"set -u
d={dir}; rm -rf $d; mkdir -p $d; truncate -s 1M $d/a.img $d/b.img
printf 'lockspace = {lockspace}\ncluster_group = {group}\n' > $d/virtdlmd.conf
RUST_LOG=info {daemon} --config $d/virtdlmd.conf --backend dlm --socket $d/ctl.sock --admin-socket $d/admin.sock \
  --journal $d/journal --node-name node{node} >$d/log 2>&1 </dev/null &
pid=$!
for i in $(seq 1 1200); do
  if grep -q 'serving on' $d/log; then echo "{{\"ev\":\"daemon\",\"pid\":$pid}}"; exit 0; fi
  if ! kill -0 $pid 2>/dev/null; then echo "virtdlmd exited:"; cat $d/log; exit 1; fi
  sleep 0.1
done
echo "virtdlmd not serving after 120 s:"; cat $d/log; exit 1"#
        );
        let out = c.exec(node, &script);
        assert_eq!(out.code, 0, "virtdlmd did not start on node{node}:\n{}", out.text);
        let ev = out.events().into_iter().find(|v| v["ev"] == "daemon").expect("daemon start event");
        Node { c, node, dir, virtdlm, pid: ev["pid"].as_u64().expect("pid") as u32, vms: Vec::new() }
    }

    /// A disk of this test (the same path on every node).
    pub fn disk(&self, name: &str) -> String {
        format!("{}/{name}", self.dir)
    }

    /// Runs `virtdlm ARGS` against this daemon.
    pub fn virtdlm(&self, args: &str) -> Output {
        self.c.exec(
            self.node,
            &format!("{} --socket {d}/ctl.sock --admin-socket {d}/admin.sock {args}", self.virtdlm, d = self.dir),
        )
    }

    /// `virtdlm watch --json` against this daemon, in the background (its first line names
    /// its pid, so that it is killed when dropped).
    pub fn watch(&self) -> cluster_tests::Running {
        self.c.spawn(
            self.node,
            &format!(
                "echo '{{\"ev\":\"start\",\"pid\":'$$'}}'; exec {} --admin-socket {}/admin.sock watch --json",
                self.virtdlm, self.dir
            ),
        )
    }

    /// `virtdlm ARGS --json`, which must succeed and print JSON.
    pub fn json(&self, args: &str) -> Value {
        let out = self.virtdlm(&format!("{args} --json"));
        assert_eq!(out.code, 0, "virtdlm {args} on node{} exited {}:\n{}", self.node, out.code, out.text);
        serde_json::from_str(&out.text)
            .unwrap_or_else(|e| panic!("virtdlm {args} --json on node{}: not JSON ({e}):\n{}", self.node, out.text))
    }

    /// The cluster-wide lock table as this node shows it, each entry checked for its fields.
    pub fn locks(&self) -> Vec<Value> {
        let v = self.json("locks");
        let locks = v.as_array().unwrap_or_else(|| panic!("locks --json is not an array: {v}")).clone();
        for l in &locks {
            for f in
                ["resource", "identity", "mode", "vm_name", "vm_uuid", "pid", "node_name", "node_id", "since", "state"]
            {
                assert!(l.get(f).is_some(), "lock entry without {f}: {l}");
            }
        }
        locks
    }

    /// Starts a VM stand-in (a `sleep`) and takes `disk` exclusively for it as libvirt would;
    /// returns the daemon's answer.
    pub fn acquire(&mut self, vm: &str, uuid: &str, disk: &str) -> Value {
        let out = self.c.exec(self.node, "sleep 100000 </dev/null >/dev/null 2>&1 & echo $!");
        let pid: u32 =
            out.text.trim().parse().unwrap_or_else(|_| panic!("VM pid on node{}: {:?}", self.node, out.text));
        self.vms.push(pid);
        let req = json!({
            "v": 1, "op": "acquire",
            "owner": { "uuid": uuid, "name": vm, "pid": pid },
            "resources": [ { "kind": "disk", "path": disk } ],
        });
        self.call(&req)
    }

    /// One request on the control socket (framed by perl, which every guest has).
    fn call(&self, req: &Value) -> Value {
        let body = req.to_string();
        assert!(!body.contains('\''));
        let script = format!(
            r#"/usr/bin/perl -MIO::Socket::UNIX -e '$s = IO::Socket::UNIX->new(Peer => $ARGV[0]) or die "connect: $!\n"; $b = $ARGV[1];
print $s pack("N", length $b) . $b; read($s, $h, 4) == 4 or die "no answer\n"; read($s, $r, unpack("N", $h)); print "$r\n"' {}/ctl.sock '{body}'"#,
            self.dir
        );
        let out = self.c.exec(self.node, &script);
        assert_eq!(out.code, 0, "request on node{}: {}", self.node, out.text);
        serde_json::from_str(out.text.trim())
            .unwrap_or_else(|e| panic!("answer on node{} not JSON ({e}): {}", self.node, out.text))
    }

    /// SIGKILLs the daemon (a crash); waits until it is gone.
    pub fn kill9(&mut self) {
        let pid = std::mem::take(&mut self.pid);
        let out = self.c.exec(self.node, &format!("kill -9 {pid} && while [ -e /proc/{pid} ] && ! grep -q '^State:.*Z' /proc/{pid}/status; do sleep 0.05; done"));
        assert_eq!(out.code, 0, "kill -9 virtdlmd ({pid}) on node{}: {}", self.node, out.text);
    }

    /// Stops the daemon (SIGSTOP) until [`Node::thaw`]: it reads and sends nothing meanwhile,
    /// as if it were slow; returns once the kernel shows it stopped.
    pub fn freeze(&self) {
        let pid = self.pid;
        let out = self.c.exec(
            self.node,
            &format!("kill -STOP {pid} && until grep -q '^State:.*T' /proc/{pid}/status; do sleep 0.05; done"),
        );
        assert_eq!(out.code, 0, "kill -STOP virtdlmd ({pid}) on node{}: {}", self.node, out.text);
    }

    /// Lets a daemon stopped by [`Node::freeze`] run on (SIGCONT).
    pub fn thaw(&self) {
        let out = self.c.exec(self.node, &format!("kill -CONT {}", self.pid));
        assert_eq!(out.code, 0, "kill -CONT virtdlmd ({}) on node{}: {}", self.pid, self.node, out.text);
    }

    pub fn log(&self) -> String {
        self.c.exec(self.node, &format!("cat {}/log", self.dir)).text
    }
}

impl Drop for Node<'_> {
    /// SIGTERM the daemon, SIGKILL the VM stand-ins.
    fn drop(&mut self) {
        let mut pids = vec![];
        pids.extend(self.vms.iter().map(|p| format!("kill -9 {p} 2>/dev/null;")));
        if self.pid != 0 {
            // SIGCONT first: a stopped daemon ([`Node::freeze`]) acts on SIGTERM only once it runs.
            pids.push(format!("kill -CONT {0} 2>/dev/null; kill -TERM {0} 2>/dev/null;", self.pid));
        }
        let _ = self.c.exec(self.node, &format!("{} true", pids.join(" ")));
    }
}

/// Stops and starts the whole test cluster again (`cluster.sh stop`, `start 3`): after a
/// partition heals, dlm_controld on the quorate side has the cut-off node's corosync killed
/// (a stateful merge), and the tests after this one need three live nodes.
pub fn restart_cluster() {
    let script = std::env::var_os("VIRTDLM_CLUSTER").expect("VIRTDLM_CLUSTER (set by run.sh)");
    for args in [&["stop"][..], &["start", "3"][..]] {
        let st = std::process::Command::new(&script).args(args).status().expect("running cluster.sh");
        assert!(st.success(), "cluster.sh {args:?} failed");
    }
}

/// The node ids in `status --json`'s member list.
pub fn member_ids(status: &Value) -> Vec<u64> {
    status["cluster"]["members"]
        .as_array()
        .map(|m| m.iter().filter_map(|m| m["node_id"].as_u64()).collect())
        .unwrap_or_default()
}
