//! Admin listener (plain HTTP, loopback by default): `/metrics` (Prometheus),
//! `/stats` (JSON), `/healthz` and `/ready`. Runs on its own thread, off the
//! workers' hot path; it asks the workers for their shards only when read.

use crate::metrics::{export, Registry};
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::time::Duration;

const WORKER_WAIT: Duration = Duration::from_secs(1);

pub fn spawn(listener: TcpListener, registry: Registry) -> anyhow::Result<()> {
    std::thread::Builder::new()
        .name("mtlsgate-admin".into())
        .spawn(move || {
            for stream in listener.incoming().flatten() {
                handle(stream, &registry);
            }
        })
        .map_err(|e| anyhow::anyhow!("cannot start admin thread: {e}"))?;
    Ok(())
}

fn handle(mut s: TcpStream, reg: &Registry) {
    let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
    let _ = s.set_write_timeout(Some(Duration::from_secs(2)));
    let mut buf = Vec::with_capacity(1024);
    let mut chunk = [0u8; 1024];
    let (path, head_only) = loop {
        let n = match s.read(&mut chunk) {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        buf.extend_from_slice(&chunk[..n]);
        let mut hs = [httparse::EMPTY_HEADER; 32];
        let mut req = httparse::Request::new(&mut hs);
        match req.parse(&buf) {
            Ok(httparse::Status::Complete(_)) => {
                if req.method != Some("GET") && req.method != Some("HEAD") {
                    return reply(&mut s, false, 405, "text/plain", "method not allowed\n");
                }
                let path = req
                    .path
                    .unwrap_or("/")
                    .split('?')
                    .next()
                    .unwrap_or("/")
                    .to_string();
                break (path, req.method == Some("HEAD"));
            }
            Ok(httparse::Status::Partial) if buf.len() < 8192 => continue,
            _ => return reply(&mut s, false, 400, "text/plain", "bad request\n"),
        }
    };
    match path.as_str() {
        "/metrics" => {
            let snap = reg.collect(WORKER_WAIT);
            let keys = reg.keys.lock().map(|k| k.clone()).unwrap_or_default();
            let body = export::prometheus(&reg.listener_names, &snap, &keys);
            reply(&mut s, head_only, 200, "text/plain; version=0.0.4", &body)
        }
        "/stats" => {
            let snap = reg.collect(WORKER_WAIT);
            let keys = reg.keys.lock().map(|k| k.clone()).unwrap_or_default();
            reply(
                &mut s,
                head_only,
                200,
                "application/json",
                &export::stats_json(&reg.listener_names, &snap, &keys),
            )
        }
        "/healthz" | "/ready" => {
            let snap = reg.collect(WORKER_WAIT);
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
            "not found: try /metrics /stats /healthz\n",
        ),
    }
}

fn reply(s: &mut TcpStream, head_only: bool, code: u16, ctype: &str, body: &str) {
    let reason = match code {
        200 => "OK",
        400 => "Bad Request",
        404 => "Not Found",
        405 => "Method Not Allowed",
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
