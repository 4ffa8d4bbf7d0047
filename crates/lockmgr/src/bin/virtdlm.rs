//! virtdlm: the admin CLI (read-only requests go to the admin socket, so any user may run them).
use clap::{Parser, Subcommand};
use lockmgr::proto::{self, LockInfo, Op, Resource, Response, DEFAULT_ADMIN_SOCKET, DEFAULT_SOCKET};
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Parser, Debug)]
#[command(name = "virtdlm", version, about = "Inspect virt-dlm's VM disk locks")]
struct Args {
    /// Socket to ask (default: the admin socket; the control socket for changes).
    #[arg(long, global = true)]
    socket: Option<PathBuf>,
    /// Print the daemon's JSON answer instead of a table.
    #[arg(long, global = true)]
    json: bool,
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand, Debug)]
enum Cmd {
    /// Daemon status: node, backend, owners, locks, journal.
    Status,
    /// Every lock held on this node.
    Locks,
    /// Who holds a disk.
    Inspect { path: String },
    /// The DLM resource name of a disk.
    ResourceName { path: String },
    /// Release the locks of VMs whose QEMU is gone (control socket, root).
    Cleanup {
        #[arg(long)]
        dry_run: bool,
    },
}

fn table(locks: &[LockInfo]) -> String {
    let mut t = comfy_table::Table::new();
    t.load_preset(comfy_table::presets::NOTHING);
    t.set_header(["DISK", "MODE", "VM", "UUID", "PID", "NODE", "SINCE"]);
    for l in locks {
        t.add_row([
            l.identity.clone(),
            l.mode.to_string(),
            l.vm_name.clone(),
            l.vm_uuid.clone(),
            l.pid.to_string(),
            l.node_name.clone(),
            lockmgr::conflict::clock(l.since),
        ]);
    }
    t.to_string()
}

fn main() -> ExitCode {
    let args = Args::parse();
    let disk = |path: &String| Resource::Disk { path: path.clone(), readonly: false, shared: false };
    let op = match &args.cmd {
        Cmd::Status => Op::Status,
        Cmd::Locks => Op::Locks,
        Cmd::Inspect { path } => Op::Inspect { resource: disk(path) },
        Cmd::ResourceName { path } => Op::ResourceName { resource: disk(path) },
        Cmd::Cleanup { dry_run } => Op::Cleanup { dry_run: *dry_run },
    };
    let default = if op.is_read_only() { DEFAULT_ADMIN_SOCKET } else { DEFAULT_SOCKET };
    let sock = args.socket.clone().unwrap_or_else(|| default.into());
    let resp = match UnixStream::connect(&sock).map_err(proto::FrameError::from).and_then(|mut s| proto::call(&mut s, op)) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("virtdlm: cannot ask virtdlmd at {}: {e} (is virtdlmd running?)", sock.display());
            return ExitCode::from(2);
        }
    };
    if args.json {
        println!("{}", serde_json::to_string_pretty(&resp).unwrap_or_default());
        return if matches!(resp, Response::Error(_)) { ExitCode::FAILURE } else { ExitCode::SUCCESS };
    }
    match resp {
        Response::Status { status } => println!("{}", serde_json::to_string_pretty(&status).unwrap_or_default()),
        Response::Locks { locks } | Response::Ok { locks } => println!("{}", table(&locks)),
        Response::Inspect { identity, resource, holders } => {
            println!("{identity}\n{resource}");
            if holders.is_empty() {
                println!("not held on this node");
            } else {
                println!("{}", table(&holders));
            }
        }
        Response::ResourceName { identity, resource } => println!("{resource}  {identity}"),
        Response::State { state } => println!("{}", state.unwrap_or_default()),
        Response::Error(e) => {
            eprintln!("virtdlm: {}", e.message);
            return ExitCode::FAILURE;
        }
    }
    ExitCode::SUCCESS
}
