//! The access log: one line per request (http) or session (tcp), to the
//! `[access_log]` file or, without one, to the process log's stderr
//! (`log_requests`). Each worker appends JSON lines (or key=value text) to its
//! own buffer and writes it out when it holds 64 KiB or every 100 ms, as
//! nginx's `access_log … buffer=` does: one write(2) per batch, not per request.

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

/// Where a worker's lines go.
enum Sink {
    File(std::fs::File),
    /// The process log (journald or a terminal): lines of many workers
    /// interleave only at batch boundaries, each batch being whole lines.
    Stderr,
}

/// One worker's buffered access log.
pub struct AccessLog {
    sink: RefCell<Sink>,
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
        Ok(Self::with_sink(Sink::File(file), format))
    }

    /// Request lines in the process log (`log_requests` without `[access_log]`).
    pub fn stderr(format: AccessLogFormat) -> Rc<AccessLog> {
        Self::with_sink(Sink::Stderr, format)
    }

    fn with_sink(sink: Sink, format: AccessLogFormat) -> Rc<AccessLog> {
        Rc::new(AccessLog {
            sink: RefCell::new(sink),
            buf: RefCell::new(Vec::with_capacity(FLUSH_AT + 1024)),
            format,
        })
    }

    pub fn write(&self, e: &Entry<'_>) {
        let mut buf = self.buf.borrow_mut();
        match self.format {
            AccessLogFormat::Json => {
                let line = JsonLine {
                    time: Rfc3339(std::time::SystemTime::now()),
                    listener: e.listener,
                    identity: e.identity,
                    addr: e.addr,
                    tls_version: e.tls_version,
                    resumed: e.resumed,
                    handshake_us: e.handshake_us,
                    method: e.method,
                    path: e.path,
                    status: e.status,
                    upstream: e.upstream,
                    bytes_in: e.bytes_in,
                    bytes_out: e.bytes_out,
                    duration_us: e.duration_us,
                    outcome: e.outcome.map_or("ok", |o| o.label()),
                };
                // Serialised straight into the buffer (no map, no per-field
                // allocation); writing to a Vec cannot fail; serde escapes every string.
                let _ = serde_json::to_writer(&mut *buf, &line);
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
        let written = match &mut *self.sink.borrow_mut() {
            Sink::File(f) => f.write_all(&buf),
            Sink::Stderr => write_lines(&mut std::io::stderr().lock(), &buf),
        };
        if let Err(e) = written {
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

/// Writes whole lines in pieces of at most `PIPE_BUF` (4 KiB) where it can: a
/// pipe or journald's stream socket may be shared with another process (an
/// upgrade's predecessor), and only writes that small are never interleaved.
fn write_lines(w: &mut impl Write, mut buf: &[u8]) -> std::io::Result<()> {
    const PIECE: usize = 4096;
    while !buf.is_empty() {
        let window = &buf[..buf.len().min(PIECE)];
        // Up to the last line end in the window; a longer line goes whole.
        let cut = match window.iter().rposition(|&b| b == b'\n') {
            Some(i) if buf.len() > PIECE => i + 1,
            _ if buf.len() <= PIECE => buf.len(),
            _ => buf
                .iter()
                .position(|&b| b == b'\n')
                .map_or(buf.len(), |i| i + 1),
        };
        w.write_all(&buf[..cut])?;
        buf = &buf[cut..];
    }
    Ok(())
}

/// A JSON line, in the order the README lists its fields.
#[derive(serde::Serialize)]
struct JsonLine<'a> {
    time: Rfc3339,
    listener: &'a str,
    identity: &'a str,
    addr: std::net::SocketAddr,
    tls_version: &'a str,
    resumed: bool,
    handshake_us: u64,
    method: &'a str,
    path: &'a str,
    status: u16,
    upstream: &'a str,
    bytes_in: u64,
    bytes_out: u64,
    duration_us: u64,
    outcome: &'a str,
}

/// A timestamp serialised as RFC 3339 with milliseconds, written in place.
struct Rfc3339(std::time::SystemTime);

impl serde::Serialize for Rfc3339 {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(&humantime::format_rfc3339_millis(self.0))
    }
}

impl Drop for AccessLog {
    fn drop(&mut self) {
        self.flush();
    }
}

#[cfg(test)]
mod tests {
    use super::write_lines;

    /// Records each write it is given.
    struct Writes(Vec<Vec<u8>>);

    impl std::io::Write for Writes {
        fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
            self.0.push(b.to_vec());
            Ok(b.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn a_batch_goes_out_in_whole_lines_of_at_most_4_kib_unless_a_line_is_longer() {
        let mut batch = Vec::new();
        for i in 0..500 {
            batch.extend_from_slice(format!("line {i} {}\n", "x".repeat(i % 90)).as_bytes());
        }
        let long = format!("{}\n", "y".repeat(9000));
        batch.extend_from_slice(long.as_bytes());
        batch.extend_from_slice(b"last\n");
        let mut w = Writes(Vec::new());
        assert!(write_lines(&mut w, &batch).is_ok());
        assert_eq!(w.0.concat(), batch, "nothing lost, nothing reordered");
        for piece in &w.0 {
            assert!(piece.ends_with(b"\n"), "each write ends a line");
            assert!(
                piece.len() <= 4096 || piece == long.as_bytes(),
                "{}",
                piece.len()
            );
        }
    }
}
