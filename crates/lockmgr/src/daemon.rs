//! virtdlmd's life: start-up in the one safe order, serving, shutdown.
//!
//! Start-up order (why it matters): take the journal's file lock (one daemon per journal) →
//! replay the journal → open the backend → register the live owners with their journaled
//! locks and drop the dead ones → bind the sockets, join the cluster, start lock-loss handling
//! → take back the live owners' locks in the DLM → purge leftovers → only then serve and tell
//! systemd READY. No request is served before every surviving lock is held again, so there is
//! no moment in which another VM could take a disk whose owner still runs; and lock-loss
//! handling runs before anything that can block on the DLM (taking back and purging block
//! while the lockspace is stopped, e.g. this node cut off), so the VMs whose locks it is
//! taking back are stopped if the membership says the locks are lost.
//!
//! Stopping virtdlmd (SIGTERM) releases nothing: the journal keeps the locks for the next
//! start, exactly as after a crash.

use crate::backend::local::LocalBackend;
use crate::backend::Backend;
use crate::config::{BackendKind, Config};
use crate::journal::{Journal, JournalError, OwnerKey};
use crate::naming::Naming;
use crate::owner;
use crate::registry::Registry;
use crate::server::{self, Access, SocketKind};
use std::path::Path;
use std::sync::Arc;

/// Read when corosync is not running (yet) to tell whether this host is in a cluster.

#[derive(Debug, thiserror::Error)]
pub enum DaemonError {
    #[error(transparent)]
    Journal(#[from] JournalError),
    #[error("another virtdlmd uses the journal {0} (its lock file is taken)")]
    JournalInUse(String),
    #[error(transparent)]
    UnsafeDefault(#[from] crate::backend_guard::UnsafeDefault),
    #[error("cannot start the {backend} backend: {reason}")]
    Backend { backend: &'static str, reason: String },
    #[error(transparent)]
    Bind(#[from] server::BindError),
    #[error("cannot open the watchdog {path}: {source} (set `watchdog = none` to run without one)")]
    Watchdog { path: String, source: std::io::Error },
    #[error(
        "the watchdog {0} does not report its timeout: set `watchdog_timeout_ms` (or `grant_hold_ms`) in virtdlmd.conf"
    )]
    WatchdogTimeout(String),
    #[error("cannot start the runtime: {0}")]
    Runtime(std::io::Error),
    #[error(transparent)]
    Cluster(#[from] crate::cluster::ClusterError),
    #[error(transparent)]
    Metrics(#[from] crate::metrics::serve::BindError),
}

/// Raises the soft limit on open files to the hard one: every client connection is a file,
/// and the usual soft limit (1024) would let a few hundred idle clients stop new ones.
fn raise_fd_limit() {
    use rustix::process::{getrlimit, setrlimit, Resource};
    let mut lim = getrlimit(Resource::Nofile);
    if lim.current != lim.maximum {
        lim.current = lim.maximum;
        if let Err(e) = setrlimit(Resource::Nofile, lim) {
            tracing::warn!("could not raise the open-file limit to {:?}: {e}", lim.maximum);
        }
    }
}

/// Runs the daemon until SIGTERM/SIGINT.
pub fn run(config: Config) -> Result<(), DaemonError> {
    raise_fd_limit();
    // Before anything is opened: never serve a silent `local` on a cluster host.
    let cluster_seen = match (config.backend, config.backend_explicit) {
        (BackendKind::Local, false) => crate::backend_guard::probe(Path::new(crate::corosync_conf::PATH)),
        _ => None,
    };
    for w in crate::backend_guard::check(&config, cluster_seen.as_ref())? {
        tracing::warn!("{w}");
    }
    let journal_lock = crate::journal_lock::lock(&config.journal).map_err(|e| match e {
        crate::journal_lock::LockError::InUse(j) => DaemonError::JournalInUse(j),
        crate::journal_lock::LockError::Io { path, source } => DaemonError::Journal(JournalError::Io { path, source }),
    })?;
    let (journal, salvaged) = Journal::open(&config.journal, config.journal_compact_bytes, config.recover_journal)?;
    if let Some(s) = salvaged {
        tracing::error!(
            "journal {} was damaged at byte {} ({}); kept the valid prefix, moved the damaged file to {}. \
             Locks recorded after that point are NOT held: check `virtdlm locks` against the running VMs",
            config.journal.display(),
            s.offset,
            s.reason,
            s.moved_to.display()
        );
    }
    // The kernel DLM backend, holding releases back while locks are lost (lockloss).
    let dlm = match config.backend {
        BackendKind::Dlm => Some(Arc::new(crate::backend::deferring::Deferring::new(
            crate::backend::dlm::DlmBackend::new(&config.lockspace, config.node_name.clone())
                .map_err(|e| DaemonError::Backend { backend: "dlm", reason: e.to_string() })?,
        ))),
        BackendKind::Local => None,
    };
    let backend = match &dlm {
        Some(r) => r.clone() as Arc<dyn Backend>,
        None => Arc::new(LocalBackend::new(config.node_name.clone())),
    };
    let naming = Naming {
        path_map: config.path_map.clone(),
        lock_readonly: config.lock_readonly,
        backing_chains: config.backing_chains,
        ..Naming::default()
    };
    let (watch_tx, watch_rx) = tokio::sync::mpsc::unbounded_channel();
    let registry = Arc::new(Registry::new(backend, naming, journal, watch_tx));
    // Lock loss, the grant hold and the quarantine: consulted before every grant from now on.
    let gate = crate::lockloss::Gate::attach(&registry);
    let watchdog = match &config.watchdog {
        Some(p) => fencing::Watchdog::open(p)
            .map_err(|source| DaemonError::Watchdog { path: p.display().to_string(), source })?,
        None => fencing::Watchdog::none(),
    };
    // A VM that survives SIGKILL writes until the watchdog resets the host: the other nodes'
    // default hold must cover that too, so its timeout must be known.
    if config.watchdog.is_some()
        && config.watchdog_timeout.is_none()
        && watchdog.timeout().is_none()
        && config.grant_hold.is_none()
    {
        return Err(DaemonError::WatchdogTimeout(
            config.watchdog.as_ref().map(|p| p.display().to_string()).unwrap_or_default(),
        ));
    }
    let grant_hold = config.grant_hold.unwrap_or_else(|| config.default_grant_hold(watchdog.timeout()));
    // Owners only: taking their locks back in the DLM can block (a lockspace stopped while
    // this node is cut off), so it waits until lock-loss handling runs (below).
    let mut restored = registry.restore_owners()?;

    // How the cluster is fenced decides whether grants wait for a lost node (quarantine):
    // read before serving, so that no grant is answered under a shape not yet known.
    if config.backend == BackendKind::Dlm {
        let (shape, nodes) = crate::lockloss::quarantine::detect();
        gate.quarantine.set_shape(shape, nodes);
    }

    // Held until run() returns, past the runtime's shutdown.
    let taken_from = journal_lock.taken_from;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(DaemonError::Runtime)?;
    rt.block_on(async move {
        let ctl_mode = if config.allowed_uids.iter().any(|u| *u != 0) {
            0o666 // non-root uids are allowed: SO_PEERCRED decides
        } else if config.allowed_gid.is_some() {
            0o660
        } else {
            0o600
        };
        if let Some(pid) = taken_from {
            // The dying daemon's sockets still accept (into a queue no one reads): replaced.
            tracing::warn!("replacing the sockets of virtdlmd pid {pid}, which is stuck exiting");
            let _ = std::fs::remove_file(&config.socket);
            let _ = std::fs::remove_file(&config.admin_socket);
        }
        let ctl = server::bind(&config.socket, ctl_mode, config.allowed_gid)?;
        let admin = server::bind(&config.admin_socket, 0o666, None)?;
        // Joined before serving, so our restored table is re-sent on our join. The handle's
        // verdict is what lock-loss handling watches.
        let cluster = match config.cluster_enabled() {
            true => Some(crate::cluster::start(&config.cluster_group, &config.lockspace, registry.clone())?),
            false => None,
        };
        let access = Arc::new(Access { allowed_uids: config.allowed_uids.clone(), allowed_gid: config.allowed_gid });
        tokio::spawn(watch_owners(watch_rx, registry.clone()));
        tokio::spawn(retry_releases(registry.clone()));
        // The one membership driver, wherever corosync matters: every ring change holds grants
        // back and re-reads the fencing shape, quorum feeds the quarantine, and the verdict
        // decides (with the lockspace) when VMs must stop.
        let verdicts = (dlm.is_some() || cluster.is_some()).then(|| {
            let loss = gate.loss.clone();
            let q = gate.quarantine.clone();
            let q2 = q.clone();
            let shown = cluster.clone();
            crate::membership::spawn(
                crate::membership::GROUP,
                crate::membership::Hooks {
                    on_ring_change: Box::new(move || {
                        loss.membership_changed();
                        q.membership_changed();
                    }),
                    on_quorum: Box::new(move |quorate, members| {
                        q2.set_members(members);
                        if let Some(c) = &shown {
                            c.set_quorate(quorate);
                        }
                    }),
                },
            )
        });
        if let (Some(c), Some(v)) = (&cluster, &verdicts) {
            c.follow_membership(v.clone());
        }
        // Metrics: bound before serving, so that a taken port stops the start.
        let metrics = crate::metrics::Source { registry: registry.clone(), verdict: verdicts.clone() };
        if let Some(addr) = config.metrics_listen {
            let listener = crate::metrics::serve::bind(addr).await?;
            tracing::info!("metrics on http://{addr}/metrics");
            if !addr.ip().is_loopback() {
                tracing::warn!("metrics_listen {addr} is not on localhost: whoever reaches it reads the metrics (no TLS, no authentication)");
            }
            tokio::spawn(crate::metrics::serve::serve(listener, metrics.clone()));
        }
        if let Some(path) = &config.metrics_textfile {
            tokio::spawn(crate::metrics::textfile::run(path.clone(), metrics.clone()));
        }
        let mut loss = None;
        if let (Some(ls), Some(verdicts)) = (dlm, verdicts) {
            loss = Some(crate::lockloss::start(
                config.fencing.clone(),
                watchdog,
                registry.clone(),
                gate.loss.clone(),
                verdicts,
                Some((ls, config.lockspace.as_str())),
                Some(grant_hold),
            ));
        }
        // Only now what can block on the DLM: the restored owners' VMs are already covered by
        // lock-loss handling (a node cut off stops them, however long this blocks).
        let r = registry.clone();
        let restored = tokio::task::spawn_blocking(move || {
            r.adopt_restored(&mut restored);
            restored
        })
        .await
        .expect("taking the locks back panicked");
        if let Some(e) = &restored.journal_unwritable {
            tracing::error!("{e}. Serving with the {} locks taken back; no new lock is granted until the journal can be written", restored.locks_adopted);
        }
        tracing::info!(
            "journal replayed: {} owners with {} locks taken back, {} owners died meanwhile ({} locks released), {} locks lost; leftover locks purged",
            restored.owners_adopted,
            restored.locks_adopted,
            restored.owners_dead,
            restored.locks_released,
            restored.locks_lost,
        );
        if let Some(loss) = loss.filter(|_| !restored.unconfirmed.is_empty()) {
            let why = crate::lockloss::LossReason::Unconfirmed("a lock could not be taken back after the daemon restart".into());
            tokio::spawn(async move { loss.fence_owners(why, &restored.unconfirmed).await });
        }
        tokio::spawn(server::serve(ctl, SocketKind::Control, registry.clone(), access.clone(), config.read_timeout));
        tokio::spawn(server::serve(admin, SocketKind::Admin, registry.clone(), access, config.read_timeout));
        tracing::info!(
            backend = registry.backend().kind(),
            node = %config.node_name,
            "serving on {} (admin {})",
            config.socket.display(),
            config.admin_socket.display()
        );
        let _ = sd_notify::notify(false, &[sd_notify::NotifyState::Ready]);
        wait_for_stop().await;
        let _ = sd_notify::notify(false, &[sd_notify::NotifyState::Stopping]);
        let _ = std::fs::remove_file(&config.socket);
        let _ = std::fs::remove_file(&config.admin_socket);
        tracing::info!("stopping; held locks stay in the journal for the next start");
        Ok::<(), DaemonError>(())
    })?;
    rt.shutdown_timeout(std::time::Duration::from_secs(1));
    Ok(())
}

async fn wait_for_stop() {
    use tokio::signal::unix::{signal, SignalKind};
    match (signal(SignalKind::terminate()), signal(SignalKind::interrupt())) {
        (Ok(mut term), Ok(mut int)) => {
            tokio::select! {
                _ = term.recv() => {}
                _ = int.recv() => {}
            }
        }
        _ => std::future::pending::<()>().await,
    }
}

/// Releases the backend refused are retried (each on its own backoff, crate::unreleased).
async fn retry_releases(registry: Arc<Registry>) {
    let mut tick = tokio::time::interval(crate::unreleased::FIRST_DELAY);
    loop {
        tick.tick().await;
        let r = registry.clone();
        let _ = tokio::task::spawn_blocking(move || r.retry_releases()).await;
    }
}

/// One task per owner: when its QEMU exits, its locks go.
async fn watch_owners(mut rx: tokio::sync::mpsc::UnboundedReceiver<OwnerKey>, registry: Arc<Registry>) {
    while let Some(key) = rx.recv().await {
        let registry = registry.clone();
        tokio::spawn(async move {
            // The registry's own pidfd when it holds one (opened as the owner registered).
            match registry.pidfd(key) {
                Some(fd) => owner::exited(fd, key).await,
                None => {
                    if let Some(fd) = owner::open_pidfd(key) {
                        owner::exited(fd, key).await;
                    }
                }
            }
            let _ = tokio::task::spawn_blocking(move || registry.owner_exited(key)).await;
        });
    }
}
