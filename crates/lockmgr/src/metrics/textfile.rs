//! `metrics_textfile`: the metrics written to a file for node_exporter's textfile collector,
//! every [`PERIOD`] and soon after a change (a lock granted or released, a refusal, a
//! lock-loss event, a new membership verdict). The file is replaced atomically (a temporary
//! file in the same directory, renamed over it), so node_exporter never reads half of it.

use super::render::Source;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// The file is rewritten at least this often.
pub const PERIOD: Duration = Duration::from_secs(15);
/// Changes within this much time of each other are written once.
const COALESCE: Duration = Duration::from_millis(250);

/// Writes `text` to `path` atomically: `.NAME.tmp` beside it, then renamed (node_exporter
/// reads only `*.prom`, so it never sees the temporary file). The file is made readable by
/// all (node_exporter runs as another user) whatever the umask (the unit's is 0077).
pub fn write_atomically(path: &Path, text: &str) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
    let name = path.file_name().map(|n| n.to_string_lossy()).unwrap_or_default();
    let tmp = path.with_file_name(format!(".{name}.tmp"));
    let written =
        std::fs::OpenOptions::new().write(true).create(true).truncate(true).mode(0o644).open(&tmp).and_then(|mut f| {
            f.set_permissions(std::fs::Permissions::from_mode(0o644))?;
            f.write_all(text.as_bytes())
        });
    if let Err(e) = written.and_then(|()| std::fs::rename(&tmp, path)) {
        let _ = std::fs::remove_file(&tmp);
        return Err(e);
    }
    Ok(())
}

/// Keeps `path` up to date for ever.
pub async fn run(path: PathBuf, source: Source) {
    let mut verdict = source.verdict.clone();
    let mut failing = false;
    loop {
        let (s, p) = (source.clone(), path.clone());
        let r = tokio::task::spawn_blocking(move || write_atomically(&p, &s.render())).await;
        match r {
            Ok(Ok(())) if failing => {
                tracing::info!("metrics textfile {} written again", path.display());
                failing = false;
            }
            Ok(Ok(())) => {}
            Ok(Err(e)) if !failing => {
                tracing::warn!("cannot write the metrics textfile {}: {e} (trying again)", path.display());
                failing = true;
            }
            Ok(Err(_)) => {}
            Err(e) => tracing::error!("writing the metrics textfile failed: {e}"),
        }
        let verdict_changed = async {
            let changed = match verdict.as_mut() {
                Some(v) => v.changed().await.is_ok(),
                None => false,
            };
            if !changed {
                std::future::pending::<()>().await;
            }
        };
        tokio::select! {
            _ = tokio::time::sleep(PERIOD) => {}
            _ = source.registry.events().metrics().changed() => tokio::time::sleep(COALESCE).await,
            _ = verdict_changed => tokio::time::sleep(COALESCE).await,
        }
    }
}
