//! Admin listener (plain HTTP, loopback by default): `/metrics` (Prometheus),
//! `/stats` (JSON), `/certs`, `/healthz`, `/ready`, and `POST /reload`. Runs on its own threads, off the
//! workers' hot path; it asks the workers for their shards only when read.
//! Each client gets a thread (at most `MAX_CLIENTS` at once), so a slow one
//! costs only itself and a health check never waits behind it.

use crate::metrics::reloads::ReloadInfo;
use crate::metrics::{export, json, Detail, KeyInfo, PartnerRefusals, Registry};
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

const WORKER_WAIT: Duration = Duration::from_secs(1);
const MAX_CLIENTS: usize = 64;

/// Frees a client slot however its thread ends.
struct Slot(Arc<AtomicUsize>);

impl Drop for Slot {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

/// The running admin listener; `close` stops it taking connections (an
/// upgrade's successor has its own on the same port).
pub struct Admin {
    fd: std::os::fd::RawFd,
    closed: Arc<AtomicBool>,
    /// Client threads still running (answers being written).
    busy: Arc<AtomicUsize>,
}

impl Admin {
    pub fn close(&self) {
        self.closed.store(true, Ordering::Release);
        // SAFETY: the listener's fd stays open for the process's life (its
        // thread ends on the closed flag but never drops it before exit);
        // shutdown(2) only wakes the blocked accept.
        unsafe { libc::shutdown(self.fd, libc::SHUT_RDWR) };
    }

    /// Waits (at most `limit`) for the answers in flight to be written: the
    /// process must not exit under `mtlsgate upgrade` before it hears "done".
    pub fn wait_idle(&self, limit: Duration) {
        let until = std::time::Instant::now() + limit;
        while self.busy.load(Ordering::Acquire) > 0 && std::time::Instant::now() < until {
            std::thread::sleep(Duration::from_millis(5));
        }
    }
}

pub fn spawn(listener: TcpListener, registry: Arc<Registry>) -> anyhow::Result<Admin> {
    let busy = Arc::new(AtomicUsize::new(0));
    let closed = Arc::new(AtomicBool::new(false));
    let admin = Admin {
        fd: std::os::fd::AsRawFd::as_raw_fd(&listener),
        closed: closed.clone(),
        busy: busy.clone(),
    };
    std::thread::Builder::new()
        .name("mtlsgate-admin".into())
        .spawn(move || {
            for stream in listener.incoming() {
                let stream = match stream {
                    Ok(s) => s,
                    Err(_) if closed.load(Ordering::Acquire) => break,
                    Err(_) => {
                        // EMFILE and friends: back off instead of spinning.
                        std::thread::sleep(Duration::from_millis(10));
                        continue;
                    }
                };
                if busy.fetch_add(1, Ordering::AcqRel) >= MAX_CLIENTS {
                    busy.fetch_sub(1, Ordering::AcqRel);
                    drop(stream); // over the limit: the client retries
                    continue;
                }
                let slot = Slot(busy.clone());
                let reg = registry.clone();
                let started = std::thread::Builder::new()
                    .name("mtlsgate-admin-client".into())
                    .spawn(move || {
                        let _slot = slot;
                        handle(stream, &reg);
                    });
                if let Err(e) = started {
                    tracing::warn!(error = %e, "admin: cannot start a client thread");
                }
            }
            // Kept until the process exits, so the fd `Admin::close` names stays valid.
            std::mem::forget(listener);
        })
        .map_err(|e| anyhow::anyhow!("cannot start admin thread: {e}"))?;
    Ok(admin)
}

fn handle(mut s: TcpStream, reg: &Registry) {
    let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
    let _ = s.set_write_timeout(Some(Duration::from_secs(2)));
    let mut buf = Vec::with_capacity(1024);
    let mut chunk = [0u8; 1024];
    let until = std::time::Instant::now() + Duration::from_secs(3);
    let (path, query, head_only) = loop {
        if std::time::Instant::now() > until {
            return; // a trickling client gets a bounded share
        }
        let n = match s.read(&mut chunk) {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        buf.extend_from_slice(&chunk[..n]);
        let mut hs = [httparse::EMPTY_HEADER; 32];
        let mut req = httparse::Request::new(&mut hs);
        match req.parse(&buf) {
            Ok(httparse::Status::Complete(_)) => {
                let bare = req.path.and_then(|p| p.split('?').next());
                if req.method == Some("POST") && bare == Some("/reload") {
                    return reload(&mut s, reg);
                }
                if req.method == Some("POST") && bare == Some("/upgrade") {
                    return upgrade(&mut s, reg);
                }
                if req.method != Some("GET") && req.method != Some("HEAD") {
                    return reply(&mut s, false, 405, "text/plain", "method not allowed\n");
                }
                let target = req.path.unwrap_or("/");
                let (path, query) = target.split_once('?').unwrap_or((target, ""));
                break (
                    path.to_string(),
                    query.to_string(),
                    req.method == Some("HEAD"),
                );
            }
            Ok(httparse::Status::Partial) if buf.len() < 8192 => continue,
            _ => return reply(&mut s, false, 400, "text/plain", "bad request\n"),
        }
    };
    match path.as_str() {
        "/metrics" => {
            let snap = reg.collect(WORKER_WAIT, Detail::Light);
            let (keys, reloads) = info(reg);
            let mut body =
                export::prometheus(&snap, &keys, &reloads, &reg.slots, reg.stale_workers());
            export::partner_limits(&mut body, &limits(reg), &reg.slots);
            reply(&mut s, head_only, 200, "text/plain; version=0.0.4", &body)
        }
        "/stats" => {
            let snap = reg.collect(WORKER_WAIT, Detail::Full);
            let (keys, reloads) = info(reg);
            let body = json::stats_json(&snap, &keys, &reloads, &reg.slots);
            reply(&mut s, head_only, 200, "application/json", &body)
        }
        "/certs" => {
            let within = match query.split('&').find_map(|kv| kv.strip_prefix("within=")) {
                None => None,
                Some(v) => match humantime::parse_duration(v) {
                    Ok(d) => Some(d.as_secs().min(i64::MAX as u64) as i64),
                    Err(e) => {
                        let msg = format!("within={v:?}: {e} (e.g. within=30d)\n");
                        return reply(&mut s, false, 400, "text/plain", &msg);
                    }
                },
            };
            let snap = reg.collect(WORKER_WAIT, Detail::Light);
            let (_, reloads) = info(reg);
            let now = crate::tls::material::now_secs();
            let body = json::certs_json(&snap, &reloads, now, within);
            reply(&mut s, head_only, 200, "application/json", &body)
        }
        "/ready" if reg.draining.load(Ordering::Acquire) => {
            reply(&mut s, head_only, 503, "text/plain", "draining\n")
        }
        "/healthz" | "/ready" => {
            let snap = reg.collect(WORKER_WAIT, Detail::Ping);
            let down = snap.iter().filter(|w| w.is_none()).count();
            if down == 0 {
                reply(&mut s, head_only, 200, "text/plain", "ok\n")
            } else {
                reply(
                    &mut s,
                    head_only,
                    503,
                    "text/plain",
                    &format!("{down} worker(s) not answering\n"),
                )
            }
        }
        _ => reply(
            &mut s,
            head_only,
            404,
            "text/plain",
            "not found: try /metrics /stats /certs /healthz /ready\n",
        ),
    }
}

/// Per listener: the per-partner refusals of its limiter.
fn limits(reg: &Registry) -> Vec<(String, PartnerRefusals)> {
    let l = reg.limiters.lock().map(|l| l.clone()).unwrap_or_default();
    l.iter()
        .map(|(n, lim)| (n.clone(), lim.refused()))
        .collect()
}

fn info(reg: &Registry) -> (KeyInfo, ReloadInfo) {
    let keys = reg.keys.lock().map(|k| k.clone()).unwrap_or_default();
    let reloads = reg.reloads.lock().map(|r| r.clone()).unwrap_or_default();
    (keys, reloads)
}

/// `POST /reload` (what `mtlsgate reload` sends): a whole-config reload,
/// answered with its outcome once the main thread has applied or refused it.
fn reload(s: &mut TcpStream, reg: &Registry) {
    let _ = s.set_write_timeout(Some(Duration::from_secs(5)));
    match (reg.reload)() {
        Some(o) => {
            let code = if o.result == "ok" { 200 } else { 422 };
            let body = serde_json::to_string_pretty(&o).unwrap_or_default() + "\n";
            reply(s, false, code, "application/json", &body)
        }
        None => reply(s, false, 503, "text/plain", "the gateway did not answer\n"),
    }
    drain_close(s);
}

/// `POST /upgrade` (what `mtlsgate upgrade` sends): answered once the new
/// process serves (200, its pid) or failed (422, why; the old one serves on).
fn upgrade(s: &mut TcpStream, reg: &Registry) {
    let _ = s.set_write_timeout(Some(Duration::from_secs(5)));
    match (reg.upgrade)() {
        Some(Ok(pid)) => {
            let body =
                serde_json::json!({"result": "ok", "pid": pid, "old_pid": std::process::id()});
            reply(s, false, 200, "application/json", &format!("{body}\n"))
        }
        Some(Err(e)) => {
            let body =
                serde_json::json!({"result": "failed", "error": e, "pid": std::process::id()});
            reply(s, false, 422, "application/json", &format!("{body}\n"))
        }
        None => reply(s, false, 503, "text/plain", "the gateway did not answer\n"),
    }
    drain_close(s);
}

fn drain_close(s: &mut TcpStream) {
    // Whatever the client sent after the head (a body) is read before the
    // close, so the close is a FIN and the answer is not lost to a reset.
    let _ = s.shutdown(std::net::Shutdown::Write);
    let _ = s.set_read_timeout(Some(Duration::from_millis(500)));
    let mut sink = [0u8; 1024];
    let mut left = 64 * 1024;
    while let Ok(n @ 1..) = s.read(&mut sink) {
        left -= n.min(left);
        if left == 0 {
            break;
        }
    }
}

fn reply(s: &mut TcpStream, head_only: bool, code: u16, ctype: &str, body: &str) {
    let reason = match code {
        200 => "OK",
        400 => "Bad Request",
        404 => "Not Found",
        405 => "Method Not Allowed",
        422 => "Unprocessable Content",
        _ => "Service Unavailable",
    };
    let head = format!(
        "HTTP/1.1 {code} {reason}\r\nContent-Type: {ctype}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    let _ = s.write_all(head.as_bytes());
    if !head_only {
        let _ = s.write_all(body.as_bytes());
    }
}
