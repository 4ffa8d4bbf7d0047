//! corosync-probe: drives the `corosync` crate against a real corosync and prints what it sees,
//! one event per line, for the corosync test tier (tests/corosync). Runs on a cluster node
//! (a network namespace or a guest) and talks to that node's corosync.
//!
//! Lines:
//!   me <nodeid>:<pid>
//!   confchg members=<n:p,..> left=<n:p:reason,..> joined=<n:p:reason,..>
//!   totem ring=<ringid> members=<n,..>
//!   deliver from=<n:p> own=<0|1> msg=<text>
//!   quorum quorate=<0|1> ring=<ringid> members=<n,..>
//!   nodelist ring=<ringid> members=<..> joined=<..> left=<..>
//!   verdict <safe|inquorate|settling(..)|lost|..>
//! `order` prints `seq <payload>` per delivered message and `order ok ...` at the end.
use clap::{Parser, Subcommand};
use corosync::{reactor, Cfg, Cmap, Cpg, CpgEvent, Error, MembershipView, Quorum, QuorumEvent};
use std::collections::BTreeMap;
use std::fmt::Display;
use std::os::fd::AsRawFd;
use std::process::ExitCode;
use std::time::Duration;
use tokio::io::unix::AsyncFd;
use tokio::time::{sleep, sleep_until, Instant};

#[derive(Parser)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Print our node id (cfg and CPG) and the node names (cmap), then exit.
    Info,
    /// Join GROUP, print every CPG (and with --quorum, quorum) event until killed.
    Watch {
        group: String,
        #[arg(long)]
        quorum: bool,
        /// Once the group has this many members, leave it (cpg_leave) and exit.
        #[arg(long)]
        leave_at: Option<usize>,
    },
    /// Join GROUP; once it has MEMBERS members, multicast COUNT messages while receiving;
    /// print the delivered order; exit 0 when all MEMBERS*COUNT were delivered in a valid order.
    Order {
        group: String,
        members: usize,
        count: usize,
        #[arg(long, default_value_t = 120)]
        timeout_secs: u64,
    },
}

fn list<T: Display>(items: impl IntoIterator<Item = T>) -> String {
    items.into_iter().map(|i| i.to_string()).collect::<Vec<_>>().join(",")
}

fn show_cpg(ev: &CpgEvent) -> String {
    match ev {
        CpgEvent::Deliver { sender, own, msg } => {
            format!("deliver from={sender} own={} msg={}", u8::from(*own), String::from_utf8_lossy(msg))
        }
        CpgEvent::ConfChg { members, left, joined } => {
            format!("confchg members={} left={} joined={}", list(members), list(left), list(joined))
        }
        CpgEvent::TotemConfChg { ring_id, members } => {
            format!("totem ring={ring_id} members={}", list(members))
        }
    }
}

fn show_quorum(ev: &QuorumEvent) -> String {
    match ev {
        QuorumEvent::Quorum { quorate, ring_id, members } => {
            format!("quorum quorate={} ring={ring_id} members={}", u8::from(*quorate), list(members))
        }
        QuorumEvent::NodeList { ring_id, members, joined, left } => {
            format!("nodelist ring={ring_id} members={} joined={} left={}", list(members), list(joined), list(left))
        }
    }
}

type Res<T> = Result<T, Box<dyn std::error::Error>>;

/// Waits until `afd` is readable and dispatches it. Readiness is kept while events keep
/// coming, so nothing is left behind in the library's buffers between two edge-triggered
/// wakeups. The outer error is the reactor's, the inner one corosync's.
async fn ready<T: AsRawFd, E>(
    afd: &mut AsyncFd<T>,
    dispatch: impl FnOnce(&mut T) -> Result<Vec<E>, Error>,
) -> std::io::Result<Result<Vec<E>, Error>> {
    let mut guard = afd.readable_mut().await?;
    let r = dispatch(guard.get_inner_mut());
    if matches!(&r, Ok(events) if events.is_empty()) {
        guard.clear_ready();
    }
    Ok(r)
}

enum Ready {
    Cpg(Result<Vec<CpgEvent>, Error>),
    Quorum(Result<Vec<QuorumEvent>, Error>),
}

fn info() -> Res<()> {
    let cfg = Cfg::new()?;
    println!("cfg-nodeid {}", cfg.local_nodeid()?);
    let cpg = Cpg::new("corosync-probe-info")?;
    println!("cpg-nodeid {}", cpg.me().nodeid);
    match cpg.mcast(b"before join") {
        Err(Error::NotJoined { .. }) => println!("mcast-before-join refused"),
        other => println!("mcast-before-join {other:?}"),
    }
    let names: BTreeMap<u32, String> = Cmap::new()?.node_names()?;
    println!("names {}", names.iter().map(|(id, n)| format!("{id}={n}")).collect::<Vec<_>>().join(" "));
    Ok(())
}

/// Returns false when corosync went away (after printing `verdict lost`).
async fn watch(group: &str, with_quorum: bool, leave_at: Option<usize>) -> Res<bool> {
    let mut cpg = Cpg::new(group)?;
    println!("me {}", cpg.me());
    let mut view = MembershipView::new(cpg.me());
    cpg.join()?;
    let mut cpg = reactor::register(cpg)?;
    let mut quorum = match with_quorum {
        true => Some(reactor::register(Quorum::new()?)?),
        false => None,
    };
    let mut leaving = false;
    loop {
        let r = tokio::select! {
            r = ready(&mut cpg, Cpg::dispatch) => Ready::Cpg(r?),
            r = async { ready(quorum.as_mut().expect("enabled with quorum"), Quorum::dispatch).await },
                if quorum.is_some() => Ready::Quorum(r?),
        };
        let lost = match r {
            Ready::Cpg(Ok(events)) => {
                for ev in events {
                    println!("{}", show_cpg(&ev));
                    if let Some(v) = view.on_cpg(&ev) {
                        println!("verdict {v}");
                    }
                    if let CpgEvent::ConfChg { members, .. } = &ev {
                        leaving |= leave_at.is_some_and(|n| members.len() >= n);
                    }
                }
                None
            }
            Ready::Quorum(Ok(events)) => {
                for ev in events {
                    println!("{}", show_quorum(&ev));
                    if let Some(v) = view.on_quorum(&ev) {
                        println!("verdict {v}");
                    }
                }
                None
            }
            Ready::Cpg(Err(e)) | Ready::Quorum(Err(e)) => Some(e),
        };
        if let Some(e) = lost {
            println!("dispatch-error {e}");
            if !e.is_not_running() {
                return Err(e.into());
            }
            if let Some(v) = view.on_corosync_lost() {
                println!("verdict {v}");
            }
            return Ok(false);
        }
        if leaving {
            sleep(Duration::from_millis(300)).await;
            leave(cpg.into_inner(), &mut view).await?;
            return Ok(true);
        }
    }
}

/// Leaves with cpg_leave and shows, for a moment, what corosync still tells us.
async fn leave(mut cpg: Cpg, view: &mut MembershipView) -> Res<()> {
    cpg.leave()?;
    println!("left-group");
    let mut cpg = reactor::register(cpg)?;
    let deadline = Instant::now() + Duration::from_secs(2);
    loop {
        tokio::select! {
            r = ready(&mut cpg, Cpg::dispatch) => {
                for ev in r?? {
                    println!("{}", show_cpg(&ev));
                    if let Some(v) = view.on_cpg(&ev) {
                        println!("verdict {v}");
                    }
                }
            }
            _ = sleep_until(deadline) => return Ok(()),
        }
    }
}

async fn order(group: &str, members: usize, count: usize, timeout: Duration) -> Res<bool> {
    let mut cpg = Cpg::new(group)?;
    let me = cpg.me();
    println!("me {me}");
    cpg.join()?;
    let mut cpg = reactor::register(cpg)?;
    let deadline = Instant::now() + timeout;
    let (mut sending, mut sent) = (false, 0usize);
    let mut seq: Vec<String> = Vec::new();
    let mut next_from: BTreeMap<u32, usize> = BTreeMap::new();
    let (mut own_seen, mut ok) = (0usize, true);
    while seq.len() < members * count {
        tokio::select! {
            biased;
            r = ready(&mut cpg, Cpg::dispatch) => {
                for ev in r?? {
                    match &ev {
                        CpgEvent::ConfChg { members: m, .. } => {
                            println!("{}", show_cpg(&ev));
                            if m.len() >= members { sending = true; }
                        }
                        CpgEvent::Deliver { sender, own, msg } => {
                            let text = String::from_utf8_lossy(msg).into_owned();
                            println!("seq {text}");
                            // Payload "<nodeid>:<k>": per-sender FIFO, own flag honest.
                            let (from, k) = text.split_once(':').ok_or("bad payload")?;
                            let (from, k): (u32, usize) = (from.parse()?, k.parse()?);
                            if from != sender.nodeid || *own != (*sender == me) {
                                println!("error: sender {sender} own={own} for payload {text}");
                                ok = false;
                            }
                            let want = next_from.entry(from).or_insert(0);
                            if k != *want {
                                println!("error: from {from} expected #{want}, got #{k}");
                                ok = false;
                            }
                            *want = k + 1;
                            if *own { own_seen += 1; }
                            seq.push(text);
                        }
                        CpgEvent::TotemConfChg { .. } => println!("{}", show_cpg(&ev)),
                    }
                }
            }
            _ = sleep(Duration::from_millis(1)), if sending && sent < count => {
                cpg.get_ref().mcast(format!("{}:{sent}", me.nodeid).as_bytes())?;
                sent += 1;
            }
            _ = sleep_until(deadline) => {
                println!("error: timeout with {} of {} messages delivered", seq.len(), members * count);
                return Ok(false);
            }
        }
    }
    if own_seen != count {
        println!("error: {own_seen} of our {count} messages came back to us");
        ok = false;
    }
    println!("order {} own={own_seen} total={}", if ok { "ok" } else { "bad" }, seq.len());
    Ok(ok)
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("tokio runtime");
    let r = match cli.cmd {
        Cmd::Info => info().map(|()| true),
        Cmd::Watch { group, quorum, leave_at } => rt.block_on(watch(&group, quorum, leave_at)),
        Cmd::Order { group, members, count, timeout_secs } => {
            rt.block_on(order(&group, members, count, Duration::from_secs(timeout_secs)))
        }
    };
    match r {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::from(1),
        Err(e) => {
            eprintln!("corosync-probe: {e}");
            ExitCode::from(2)
        }
    }
}
