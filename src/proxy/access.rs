//! The access log: one line per request (http) or session (tcp). Without an
//! `[access_log]` file the line goes to the process log (`log_requests`);
//! with one, each worker appends JSON lines (or key=value text) to its own
//! buffer and writes it out when it holds 64 KiB or every 100 ms, as nginx's
//! `access_log … buffer=` does: one write(2) per batch, not per request.

use crate::config::AccessLogFormat;
use crate::outcome::Outcome;
use std::cell::RefCell;
use std::io::Write;
use std::path::Path;
use std::rc::Rc;

const FLUSH_AT: usize = 64 * 1024;

/// What one line says.
pub struct Entry<'a> {
    pub listener: &'a str,
    pub identity: &'a str,
    pub addr: std::net::SocketAddr,
    pub tls_version: &'a str,
    pub resumed: bool,
    pub handshake_us: u64,
    /// `-` for a tcp session.
    pub method: &'a str,
    /// The canonical path (what was routed and forwarded); `-` for tcp.
    pub path: &'a str,
    /// 0 for a tcp session.
    pub status: u16,
    pub upstream: &'a str,
    pub bytes_in: u64,
    pub bytes_out: u64,
    pub duration_us: u64,
    /// How it went wrong, if it did.
    pub outcome: Option<Outcome>,
}

/// One worker's buffered access-log file.
pub struct AccessLog {
    file: RefCell<std::fs::File>,
    buf: RefCell<Vec<u8>>,
    format: AccessLogFormat,
}

impl AccessLog {
    /// Opens `path` for appending (created 0640 if missing).
    pub fn open(path: &Path, format: AccessLogFormat) -> std::io::Result<Rc<AccessLog>> {
        use std::os::unix::fs::OpenOptionsExt;
        let file = std::fs::OpenOptions::new()
            .append(true)
            .create(true)
            .mode(0o640)
            .open(path)?;
        Ok(Rc::new(AccessLog {
            file: RefCell::new(file),
            buf: RefCell::new(Vec::with_capacity(FLUSH_AT + 1024)),
            format,
        }))
    }

    pub fn write(&self, e: &Entry<'_>) {
        let mut buf = self.buf.borrow_mut();
        match self.format {
            AccessLogFormat::Json => {
                let v = serde_json::json!({
                    "time": humantime::format_rfc3339_millis(std::time::SystemTime::now()).to_string(),
                    "listener": e.listener, "identity": e.identity, "addr": e.addr.to_string(),
                    "tls_version": e.tls_version, "resumed": e.resumed, "handshake_us": e.handshake_us,
                    "method": e.method, "path": e.path, "status": e.status, "upstream": e.upstream,
                    "bytes_in": e.bytes_in, "bytes_out": e.bytes_out, "duration_us": e.duration_us,
                    "outcome": e.outcome.map_or("ok", |o| o.label()),
                });
                // Writing JSON to a Vec cannot fail; serde escapes every string.
                let _ = serde_json::to_writer(&mut *buf, &v);
            }
            AccessLogFormat::Text => {
                // Values a partner chose are quoted with Debug escapes: one line each.
                let _ = write!(
                    buf,
                    "time={} listener={:?} identity={:?} addr={} tls={} resumed={} handshake_us={} method={:?} path={:?} status={} upstream={:?} bytes_in={} bytes_out={} duration_us={} outcome={}",
                    humantime::format_rfc3339_millis(std::time::SystemTime::now()),
                    e.listener, e.identity, e.addr, e.tls_version, e.resumed, e.handshake_us,
                    e.method, e.path, e.status, e.upstream, e.bytes_in, e.bytes_out, e.duration_us,
                    e.outcome.map_or("ok", |o| o.label()),
                );
            }
        }
        buf.push(b'\n');
        if buf.len() >= FLUSH_AT {
            drop(buf);
            self.flush();
        }
    }

    /// Writes out what is buffered (also every 100 ms, and at exit).
    pub fn flush(&self) {
        let mut buf = self.buf.borrow_mut();
        if buf.is_empty() {
            return;
        }
        if let Err(e) = self.file.borrow_mut().write_all(&buf) {
            tracing::warn!(error = %e, "cannot write the access log; lines dropped");
        }
        buf.clear();
    }

    /// Flushes every 100 ms for as long as the log is in use.
    pub async fn flusher(log: std::rc::Weak<AccessLog>) {
        loop {
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
            match log.upgrade() {
                Some(l) => l.flush(),
                None => return,
            }
        }
    }
}

impl Drop for AccessLog {
    fn drop(&mut self) {
        self.flush();
    }
}
