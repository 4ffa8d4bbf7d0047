//! virtdlm: the admin CLI of virt-dlm. Read-only requests go to the world-readable admin
//! socket, so any user may inspect; changes go to the control socket (root).
#![forbid(unsafe_code)]

use clap::{Parser, Subcommand};
use proto::mode::Mode;
use proto::{LockInfo, Op, Resource, Response, DEFAULT_ADMIN_SOCKET, DEFAULT_SOCKET};
use serde_json::json;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

/// `println!` that ends the process quietly when the reader has gone (`virtdlm locks | head`),
/// as Unix tools do, instead of panicking on EPIPE.
macro_rules! out {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        if let Err(e) = writeln!(std::io::stdout().lock(), $($arg)*) {
            if e.kind() == std::io::ErrorKind::BrokenPipe {
                std::process::exit(0);
            }
            eprintln!("virtdlm: cannot write to standard output: {e}");
            std::process::exit(1);
        }
    }};
}

mod client;
mod exit;
mod render;

use exit::Failure;

/// Longest path or lease key accepted (PATH_MAX).
const MAX_INPUT: usize = 4096;

#[derive(Parser, Debug)]
#[command(name = "virtdlm", version, about = "Inspect and manage virt-dlm's VM disk locks", after_help = exit::HELP)]
struct Args {
    /// The read-only admin socket (inspection).
    #[arg(long, global = true, value_name = "PATH", default_value = DEFAULT_ADMIN_SOCKET)]
    admin_socket: PathBuf,
    /// The control socket (changes; root).
    #[arg(long, global = true, value_name = "PATH", default_value = DEFAULT_SOCKET)]
    socket: PathBuf,
    /// JSON for scripts instead of a table (errors too: {"error": {...}} on stdout).
    #[arg(long, global = true)]
    json: bool,
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand, Debug)]
enum Cmd {
    /// This node, the cluster members and quorum, the lockspace, lock counts, the last lock loss.
    Status,
    /// Every lock in the cluster: disk, mode, VM, node, since, state (held / left).
    Locks {
        /// Only locks on this node (name or id).
        #[arg(long)]
        node: Option<String>,
        /// Only locks of this VM (name or uuid).
        #[arg(long)]
        vm: Option<String>,
        /// Only locks in this mode (EX, PR, CW, CR).
        #[arg(long)]
        mode: Option<Mode>,
    },
    /// Who holds a disk or lease ("free" if nobody), and its DLM resource name.
    /// A lease is written `lease:KEY` or `lease:LOCKSPACE/KEY`.
    Inspect { target: String },
    /// The DLM resource name virt-dlm uses for a disk (or `lease:[LOCKSPACE/]KEY`).
    ResourceName { target: String },
    /// Release the locks of VMs whose QEMU process is gone (root). Normally virtdlmd does this
    /// by itself when QEMU exits.
    Cleanup {
        /// Only list what would be released (no root needed).
        #[arg(long)]
        dry_run: bool,
    },
    /// Release every lock of one VM (root). Refused while its QEMU runs. When its locks are on
    /// another node, that node's virtdlmd is asked (through this one, over the cluster group).
    Release {
        /// The VM, by uuid or name.
        #[arg(long)]
        vm: String,
        /// Release even though its QEMU still runs. The VM keeps running WITHOUT disk locks and
        /// QEMU keeps the disks open and writing:
        /// another host may then start the VM or open its disks, and both write to them
        /// (corruption). Only for a QEMU known to have closed its disks.
        #[arg(long)]
        force: bool,
    },
    /// Tell this node's virtdlmd that cluster node NODE (name or node id) is down (root), as
    /// `stonith_admin --confirm` does for Pacemaker. In a cluster that cannot fence (e.g.
    /// two_node with enable_fencing=0), no lock is granted while a node is unaccounted for;
    /// this lifts that for NODE until it is seen again. Confirm only a node you have powered
    /// off or whose VMs you know are stopped: a wrong confirmation lets two hosts write one disk.
    ConfirmDown { node: String },
    /// Follow lock changes across the cluster as they happen: the table as it stands, then
    /// one line per grant, release or node departure, on any node, until interrupted.
    /// With --json: the table as one line ({"locks": [...]}), then one event per line.
    Watch,
}

fn main() -> ExitCode {
    let args = Args::parse();
    match run(&args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(f) => f.exit(args.json),
    }
}

fn print_json<T: serde::Serialize + ?Sized>(v: &T) {
    out!("{}", serde_json::to_string_pretty(v).unwrap_or_default());
}

fn run(args: &Args) -> Result<(), Failure> {
    let admin = args.admin_socket.as_path();
    let control = args.socket.as_path();
    match &args.cmd {
        Cmd::Status => {
            let Response::Status { status } = ask(admin, Op::Status)? else { return unexpected() };
            if args.json {
                print_json(&status);
            } else {
                out!("{}", render::status(&status));
            }
        }
        Cmd::Locks { node, vm, mode } => {
            let locks: Vec<LockInfo> = all_locks(admin)?
                .into_iter()
                .filter(|l| node.as_ref().is_none_or(|n| l.node_name == *n || l.node_id.to_string() == *n))
                .filter(|l| vm.as_ref().is_none_or(|v| l.vm_name == *v || l.vm_uuid.eq_ignore_ascii_case(v)))
                .filter(|l| mode.is_none_or(|m| l.mode == m))
                .collect();
            if args.json {
                print_json(&json!(locks));
            } else {
                // A table that looks cluster-wide but protects nothing across hosts says so.
                if let Ok(Response::Status { status }) = ask(admin, Op::Status) {
                    for w in &status.warnings {
                        out!("WARNING: {w}");
                    }
                }
                out!("{}", render::locks(&locks));
            }
        }
        Cmd::Inspect { target } => {
            let Response::Inspect { identity, resource, holders } =
                ask(admin, Op::Inspect { resource: parse_target(target)? })?
            else {
                return unexpected();
            };
            if args.json {
                print_json(
                    &json!({ "identity": identity, "resource": resource, "free": holders.is_empty(), "holders": holders }),
                );
            } else {
                out!("{}", render::inspect(&identity, &resource, &holders));
            }
        }
        Cmd::ResourceName { target } => {
            let Response::ResourceName { identity, resource } =
                ask(admin, Op::ResourceName { resource: parse_target(target)? })?
            else {
                return unexpected();
            };
            if args.json {
                print_json(&json!({ "identity": identity, "resource": resource }));
            } else {
                out!("{resource}\t{identity}");
            }
        }
        Cmd::Cleanup { dry_run } => {
            let socket = if *dry_run { admin } else { control };
            let Response::Ok { locks } = ask(socket, Op::Cleanup { dry_run: *dry_run })? else { return unexpected() };
            if args.json {
                print_json(&json!({ "dry_run": dry_run, "locks": locks }));
            } else if locks.is_empty() {
                out!("nothing to clean up: every VM holding locks here still runs");
            } else {
                let verb = if *dry_run { "would release" } else { "released" };
                out!("{verb} {} lock(s) of VMs whose QEMU is gone:\n{}", locks.len(), render::locks(&locks));
            }
        }
        Cmd::Release { vm, force } => release(args, admin, control, vm, *force)?,
        Cmd::Watch => watch(args, admin)?,
        Cmd::ConfirmDown { node } => {
            if node.is_empty() || node.len() > 1024 {
                return Err(Failure::bad_input(format!("node name or id of {} bytes (must be 1..=1024)", node.len())));
            }
            let Response::ConfirmedDown { confirmation } = ask(control, Op::ConfirmDown { node: node.clone() })? else {
                return unexpected();
            };
            if args.json {
                print_json(&confirmation);
            } else {
                out!(
                    "node {} (id {}) confirmed down by {}: locks may be granted on this node until it is seen again",
                    confirmation.node_name,
                    confirmation.node_id,
                    confirmation.by_user
                );
            }
        }
    }
    Ok(())
}

fn ask(socket: &Path, op: Op) -> Result<Response, Failure> {
    client::ask(socket, op)
}

fn unexpected() -> Result<(), Failure> {
    Err(client::unexpected(&Response::Ok { locks: vec![] }))
}

fn all_locks(admin: &Path) -> Result<Vec<LockInfo>, Failure> {
    match ask(admin, Op::Locks)? {
        Response::Locks { locks } => Ok(locks),
        other => Err(client::unexpected(&other)),
    }
}

/// A disk path (made absolute: the daemon does not share our working directory) or
/// `lease:[LOCKSPACE/]KEY`.
fn parse_target(t: &str) -> Result<Resource, Failure> {
    if t.is_empty() {
        return Err(Failure::bad_input("empty disk path or lease"));
    }
    if t.len() > MAX_INPUT {
        return Err(Failure::bad_input(format!(
            "{} bytes is too long for a disk path or lease (at most {MAX_INPUT})",
            t.len()
        )));
    }
    if let Some(lease) = t.strip_prefix("lease:") {
        let (lockspace, key) = match lease.split_once('/') {
            Some((s, k)) => (Some(s.to_owned()), k.to_owned()),
            None => (None, lease.to_owned()),
        };
        if key.is_empty() {
            return Err(Failure::bad_input(format!("{t:?}: a lease is lease:KEY or lease:LOCKSPACE/KEY")));
        }
        return Ok(Resource::Lease { lockspace, key, path: None, offset: None });
    }
    let path = std::path::absolute(t).map_err(|e| Failure::bad_input(format!("{t}: {e}")))?;
    if let Err(e) = std::fs::metadata(&path) {
        return Err(Failure::bad_input(format!("{}: {e} (give the disk path as this host sees it)", path.display())));
    }
    Ok(Resource::Disk { path: path.to_string_lossy().into_owned(), readonly: false, shared: false })
}

/// `release --vm`: find the VM in the cluster table, then ask this node's daemon (which asks
/// the owning node's when the locks are elsewhere).
fn release(args: &Args, admin: &Path, control: &Path, vm: &str, force: bool) -> Result<(), Failure> {
    if vm.is_empty() || vm.len() > 1024 {
        return Err(Failure::bad_input(format!("VM name or uuid of {} bytes (must be 1..=1024)", vm.len())));
    }
    let locks = all_locks(admin)?;
    let status = match ask(admin, Op::Status)? {
        Response::Status { status } => status,
        other => return Err(client::unexpected(&other)),
    };
    let here = status.node_id;
    let mine: Vec<&LockInfo> = locks.iter().filter(|l| l.vm_uuid.eq_ignore_ascii_case(vm) || l.vm_name == vm).collect();
    let mut uuids: Vec<&str> = mine.iter().map(|l| l.vm_uuid.as_str()).collect();
    uuids.sort();
    uuids.dedup();
    if uuids.len() > 1 {
        return Err(Failure::bad_input(format!("several VMs are named {vm} ({}); give the uuid", uuids.join(", "))));
    }
    let uuid = match uuids.first() {
        Some(u) => u.to_string(),
        None if uuid_like(vm) => vm.to_ascii_lowercase(),
        None => return Err(Failure::refused(format!("no VM named {vm} holds locks in the cluster"))),
    };
    // Locks here: this daemon releases them. Only on one other node: that node's daemon is
    // asked, through this one, over the cluster group.
    let mut nodes: Vec<(u32, &str)> = mine.iter().map(|l| (l.node_id, l.node_name.as_str())).collect();
    nodes.sort();
    nodes.dedup();
    let remote = match nodes.as_slice() {
        [] => None,
        n if n.iter().any(|(id, _)| *id == here) => None,
        [(id, name)] => Some((*id, name.to_string())),
        several => {
            let names: Vec<&str> = several.iter().map(|(_, n)| *n).collect();
            return Err(Failure::refused(format!(
                "VM {} ({uuid}) holds locks on several other nodes ({}), as during a migration; run `virtdlm release --vm {uuid}` on the node that should let go",
                mine[0].vm_name,
                names.join(", ")
            )));
        }
    };
    let op = match &remote {
        Some((node, _)) => Op::ReleaseVmOn { node: *node, uuid: uuid.clone(), force },
        None => Op::ReleaseVm { uuid: uuid.clone(), force },
    };
    let on = remote.as_ref().map_or_else(|| "this node".to_owned(), |(_, n)| format!("node {n}"));
    let released = match ask(control, op) {
        Ok(Response::Ok { locks }) => locks,
        Ok(other) => return Err(client::unexpected(&other)),
        Err(mut f) if f.kind == "busy" => {
            f.message.push_str(
                " (--force releases while QEMU keeps running WITHOUT disk locks: other hosts could then open its disks and both would write)",
            );
            return Err(f);
        }
        Err(f) => return Err(f),
    };
    if args.json {
        let node = remote.as_ref().map_or(here, |(id, _)| *id);
        print_json(&json!({ "uuid": uuid, "node_id": node, "forced": force, "locks": released }));
    } else {
        out!("released {} lock(s) of VM {uuid} on {on}:\n{}", released.len(), render::locks(&released));
        if force {
            out!(
                "forced: if the VM's QEMU still runs on {on}, it now runs WITHOUT disk locks; other hosts can open its disks. Stop it, or restart it so it takes its locks again."
            );
        }
    }
    Ok(())
}

/// `watch`: the table, then each change as the daemon streams it.
fn watch(args: &Args, admin: &Path) -> Result<(), Failure> {
    let (locks, mut stream) = client::watch(admin)?;
    if args.json {
        out!("{}", json!({ "locks": locks }));
    } else {
        out!("{}\n", render::locks(&locks));
        out!("{}", render::event_header());
    }
    while let Some(event) = client::next_event(admin, &mut stream)? {
        if args.json {
            out!("{}", serde_json::to_string(&event).unwrap_or_default());
        } else {
            out!("{}", render::event(&event));
        }
    }
    Err(Failure::new(exit::Code::Unreachable, "unreachable", "virtdlmd closed the watch (it stopped)"))
}

fn uuid_like(s: &str) -> bool {
    s.len() == 36 && s.chars().all(|c| c.is_ascii_hexdigit() || c == '-')
}
