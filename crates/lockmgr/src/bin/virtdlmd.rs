//! virtdlmd: the per-host lock daemon. Runs in the foreground (systemd `Type=notify`).
#![forbid(unsafe_code)]

use clap::Parser;
use lockmgr::config::{BackendKind, Config, DEFAULT_CONFIG};
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Parser, Debug)]
#[command(name = "virtdlmd", version, about = "virt-dlm's per-host lock daemon")]
struct Args {
    /// Configuration file (a missing file at the default path means all defaults).
    #[arg(long, short = 'c')]
    config: Option<PathBuf>,
    /// Lock backend: `local` (one host, no cluster) or `dlm` (kernel DLM); overrides the config.
    #[arg(long, value_parser = ["local", "dlm"])]
    backend: Option<String>,
    /// Control socket; overrides the config.
    #[arg(long)]
    socket: Option<PathBuf>,
    /// Read-only admin socket; overrides the config.
    #[arg(long)]
    admin_socket: Option<PathBuf>,
    /// Journal file; overrides the config.
    #[arg(long)]
    journal: Option<PathBuf>,
    /// Node name shown in lock tables; overrides the config.
    #[arg(long)]
    node_name: Option<String>,
    /// Start even if the journal is damaged: keep its valid prefix, move the file aside.
    #[arg(long)]
    recover_journal: bool,
    /// Check the configuration, print it, and exit.
    #[arg(long)]
    check_config: bool,
}

fn main() -> ExitCode {
    let args = Args::parse();
    let log = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()));
    // Under systemd, stderr goes to journald, which stamps every line itself.
    if std::env::var_os("JOURNAL_STREAM").is_some() {
        log.without_time().init();
    } else {
        log.init();
    }
    let explicit = args.config.is_some();
    let path = args.config.clone().unwrap_or_else(|| DEFAULT_CONFIG.into());
    let mut config = match Config::load(&path, explicit) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("virtdlmd: bad configuration: {e}");
            return ExitCode::from(2);
        }
    };
    if let Some(b) = args.backend {
        config.backend = if b == "dlm" { BackendKind::Dlm } else { BackendKind::Local };
        config.backend_explicit = true;
    }
    if let Some(p) = args.socket {
        config.socket = p;
    }
    if let Some(p) = args.admin_socket {
        config.admin_socket = p;
    }
    if let Some(p) = args.journal {
        config.journal = p;
    }
    if let Some(n) = args.node_name {
        config.node_name = n;
    }
    config.recover_journal |= args.recover_journal;
    if args.check_config {
        println!("{config:#?}");
        let seen = lockmgr::backend_guard::probe(std::path::Path::new("/etc/corosync/corosync.conf"));
        return match lockmgr::backend_guard::check(&config, seen.as_ref()) {
            Ok(warnings) => {
                warnings.iter().for_each(|w| eprintln!("virtdlmd: warning: {w}"));
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("virtdlmd: {e}");
                ExitCode::from(2)
            }
        };
    }
    match lockmgr::daemon::run(config) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("virtdlmd cannot run: {e}");
            eprintln!("virtdlmd: {e}");
            if matches!(e, lockmgr::daemon::DaemonError::Journal(lockmgr::journal::JournalError::Damaged { .. })) {
                eprintln!(
                    "virtdlmd: refusing to start on a damaged journal: locks it recorded could be handed to another VM. \
                     Inspect it; to keep its valid prefix, start once with --recover-journal."
                );
            }
            ExitCode::from(1)
        }
    }
}
