//! `metrics_listen`: a minimal HTTP/1.x server answering `GET /metrics` (and `HEAD`), one
//! request per connection, as Prometheus scrapes exporters. Nothing else is served: `/` says
//! where the metrics are, any other path is 404, any other method 405.

use super::render::{Source, CONTENT_TYPE};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// A request head larger than this is refused (a scrape's is a few hundred bytes).
const MAX_HEAD: usize = 8192;
/// Time a client has to send its request head.
const READ_TIMEOUT: Duration = Duration::from_secs(5);
/// Connections served at once; more are closed at once.
const MAX_CONNECTIONS: usize = 16;

#[derive(Debug, thiserror::Error)]
#[error("cannot listen for metrics on {addr}: {source}{}", hint(source))]
pub struct BindError {
    pub addr: SocketAddr,
    pub source: std::io::Error,
}

/// What to do when the cause is the shipped unit's sandbox (no IP sockets).
fn hint(e: &std::io::Error) -> &'static str {
    match e.raw_os_error() {
        Some(libc::EAFNOSUPPORT) => {
            " (the virtdlmd.service unit allows no IP sockets: add the drop-in /usr/share/doc/virt-dlm/examples/prometheus/virtdlmd-metrics.conf as /etc/systemd/system/virtdlmd.service.d/metrics.conf, docs/GUIDE.md section 9)"
        }
        _ => "",
    }
}

/// Binds `addr` (before the daemon serves, so that a taken port stops the start).
pub async fn bind(addr: SocketAddr) -> Result<TcpListener, BindError> {
    TcpListener::bind(addr).await.map_err(|source| BindError { addr, source })
}

/// Accepts scrapes for ever.
pub async fn serve(listener: TcpListener, source: Source) {
    let slots = Arc::new(tokio::sync::Semaphore::new(MAX_CONNECTIONS));
    loop {
        match listener.accept().await {
            Ok((stream, _)) => {
                let Ok(slot) = slots.clone().try_acquire_owned() else { continue };
                let source = source.clone();
                tokio::spawn(async move {
                    connection(stream, source).await;
                    drop(slot);
                });
            }
            Err(e) => {
                tracing::warn!("accept on the metrics listener failed: {e}");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}

/// What one request asks for.
#[derive(Debug, PartialEq, Eq)]
pub enum Route {
    Metrics { head: bool },
    Index { head: bool },
    NotFound,
    BadMethod,
    BadRequest,
}

/// Routes a request head (its first line decides).
pub fn route(head: &[u8]) -> Route {
    let Some(line) = head.split(|b| *b == b'\n').next().and_then(|l| std::str::from_utf8(l).ok()) else {
        return Route::BadRequest;
    };
    let mut parts = line.trim_end_matches('\r').split(' ');
    let (Some(method), Some(target), Some(version)) = (parts.next(), parts.next(), parts.next()) else {
        return Route::BadRequest;
    };
    if !version.starts_with("HTTP/1.") {
        return Route::BadRequest;
    }
    let head = match method {
        "GET" => false,
        "HEAD" => true,
        _ => return Route::BadMethod,
    };
    match target.split('?').next().unwrap_or_default() {
        "/metrics" => Route::Metrics { head },
        "/" => Route::Index { head },
        _ => Route::NotFound,
    }
}

/// Reads up to the end of the request head (`None`: closed, too large or too slow).
async fn read_head(stream: &mut TcpStream) -> Option<Vec<u8>> {
    let mut buf = Vec::with_capacity(512);
    let read = async {
        let mut chunk = [0u8; 1024];
        loop {
            let n = stream.read(&mut chunk).await.ok()?;
            if n == 0 {
                return None;
            }
            buf.extend_from_slice(&chunk[..n]);
            if buf.windows(4).any(|w| w == b"\r\n\r\n") || buf.windows(2).any(|w| w == b"\n\n") {
                return Some(());
            }
            if buf.len() > MAX_HEAD {
                return None;
            }
        }
    };
    tokio::time::timeout(READ_TIMEOUT, read).await.ok()??;
    Some(buf)
}

async fn connection(mut stream: TcpStream, source: Source) {
    let Some(head) = read_head(&mut stream).await else { return };
    let (status, content_type, body, head_only) = match route(&head) {
        Route::Metrics { head } => match tokio::task::spawn_blocking(move || source.render()).await {
            Ok(text) => ("200 OK", CONTENT_TYPE, text, head),
            Err(e) => {
                tracing::error!("rendering the metrics failed: {e}");
                ("500 Internal Server Error", "text/plain; charset=utf-8", "internal error\n".into(), head)
            }
        },
        Route::Index { head } => (
            "200 OK",
            "text/html; charset=utf-8",
            "<html><head><title>virtdlmd</title></head><body><a href=\"/metrics\">Metrics</a></body></html>\n".into(),
            head,
        ),
        Route::NotFound => ("404 Not Found", "text/plain; charset=utf-8", "not found: see /metrics\n".into(), false),
        Route::BadMethod => {
            ("405 Method Not Allowed", "text/plain; charset=utf-8", "only GET and HEAD\n".into(), false)
        }
        Route::BadRequest => ("400 Bad Request", "text/plain; charset=utf-8", "bad request\n".into(), false),
    };
    let mut resp = format!(
        "HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nConnection: close\r\n",
        body.len()
    );
    if status.starts_with("405") {
        resp.push_str("Allow: GET, HEAD\r\n");
    }
    resp.push_str("\r\n");
    if !head_only {
        resp.push_str(&body);
    }
    let _ = tokio::time::timeout(READ_TIMEOUT, async {
        stream.write_all(resp.as_bytes()).await?;
        stream.shutdown().await
    })
    .await;
}
