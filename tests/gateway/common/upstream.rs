//! Test upstreams: an HTTP/1.1 server that records every request that reached
//! it and answers through a handler, and a raw TCP sink/source for tcp mode.

use mtlsgate::proxy::http::chunked::ChunkedDecoder;
use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

#[derive(Debug, Clone)]
pub struct Seen {
    pub method: String,
    pub path: String,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
    pub chunked: bool,
    /// The body as it came on the wire (chunked framing included).
    pub raw_body: Vec<u8>,
}

impl Seen {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
    pub fn headers_named(&self, name: &str) -> Vec<&str> {
        self.headers
            .iter()
            .filter(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
            .collect()
    }
}

/// What the upstream sends back: raw response bytes, then keep or close.
pub struct Reply {
    pub bytes: Vec<u8>,
    pub close: bool,
}

pub fn ok(body: &str) -> Reply {
    Reply {
        bytes: format!(
            "HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        )
        .into_bytes(),
        close: false,
    }
}

pub struct Upstream {
    pub addr: SocketAddr,
    pub seen: Arc<Mutex<Vec<Seen>>>,
    pub conns: Arc<AtomicUsize>,
}

impl Upstream {
    pub fn requests(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }
    pub fn connections(&self) -> usize {
        self.conns.load(Ordering::SeqCst)
    }
}

type Handler = Arc<dyn Fn(&Seen) -> Reply + Send + Sync>;

pub fn spawn(handler: impl Fn(&Seen) -> Reply + Send + Sync + 'static) -> Upstream {
    spawn_on(TcpListener::bind("127.0.0.1:0").unwrap(), handler)
}

pub fn spawn_on(
    l: TcpListener,
    handler: impl Fn(&Seen) -> Reply + Send + Sync + 'static,
) -> Upstream {
    let addr = l.local_addr().unwrap();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let conns = Arc::new(AtomicUsize::new(0));
    let h: Handler = Arc::new(handler);
    let (s2, c2) = (seen.clone(), conns.clone());
    std::thread::spawn(move || {
        for s in l.incoming().flatten() {
            c2.fetch_add(1, Ordering::SeqCst);
            let (h, seen) = (h.clone(), s2.clone());
            std::thread::spawn(move || {
                let _ = serve(s, &h, &seen);
            });
        }
    });
    Upstream { addr, seen, conns }
}

/// Answers every request with the headers it received, one per line.
pub fn echo() -> Upstream {
    spawn(|r| {
        let mut body = format!("{} {}\n", r.method, r.path);
        for (n, v) in &r.headers {
            body.push_str(&format!("{}: {v}\n", n.to_ascii_lowercase()));
        }
        body.push_str(&format!("body-bytes: {}\n", r.body.len()));
        ok(&body)
    })
}

fn fill(s: &mut TcpStream, buf: &mut Vec<u8>) -> io::Result<bool> {
    let mut chunk = [0u8; 65536];
    let n = s.read(&mut chunk)?;
    buf.extend_from_slice(&chunk[..n]);
    Ok(n > 0)
}

fn serve(mut s: TcpStream, h: &Handler, seen: &Mutex<Vec<Seen>>) -> io::Result<()> {
    s.set_read_timeout(Some(Duration::from_secs(60)))?;
    let mut buf = Vec::new();
    loop {
        let (mut req, body_len, chunked) = loop {
            let mut hs = [httparse::EMPTY_HEADER; 256];
            let mut p = httparse::Request::new(&mut hs);
            if let httparse::Status::Complete(n) = p.parse(&buf).map_err(io::Error::other)? {
                let headers = super::owned_headers(p.headers);
                let req = Seen {
                    method: p.method.unwrap().to_string(),
                    path: p.path.unwrap().to_string(),
                    headers,
                    body: Vec::new(),
                    chunked: false,
                    raw_body: Vec::new(),
                };
                let cl = req
                    .header("content-length")
                    .map(|v| v.trim().parse::<usize>().unwrap());
                let chunked = req.header("transfer-encoding").is_some();
                buf.drain(..n);
                break (req, cl, chunked);
            }
            if !fill(&mut s, &mut buf)? {
                return Ok(());
            }
        };
        if chunked {
            req.chunked = true;
            let mut d = ChunkedDecoder::new();
            loop {
                let mut data = Vec::new();
                let used = d
                    .advance_with(&buf, |b| data.extend_from_slice(b))
                    .map_err(|e| io::Error::other(e.0))?;
                req.body.extend_from_slice(&data);
                req.raw_body.extend(buf.drain(..used));
                if d.is_done() {
                    break;
                }
                if !fill(&mut s, &mut buf)? {
                    return Ok(());
                }
            }
        } else if let Some(n) = body_len {
            while buf.len() < n {
                if !fill(&mut s, &mut buf)? {
                    return Ok(());
                }
            }
            req.body = buf.drain(..n).collect();
        }
        seen.lock().unwrap().push(req.clone());
        let reply = h(&req);
        s.write_all(&reply.bytes)?;
        if reply.close {
            return Ok(());
        }
    }
}

/// tcp mode peer: reads until the client's half-close, then sends `reply_len`
/// bytes of a pattern and closes. Reports (bytes received, sha256 of them).
pub fn tcp_sink_then_source(
    reply_len: usize,
) -> (SocketAddr, std::sync::mpsc::Receiver<(usize, Vec<u8>)>) {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let (mut s, _) = l.accept().unwrap();
        let mut ctx = aws_lc_rs::digest::Context::new(&aws_lc_rs::digest::SHA256);
        let mut total = 0;
        let mut chunk = vec![0u8; 65536];
        loop {
            let n = s.read(&mut chunk).unwrap();
            if n == 0 {
                break;
            }
            ctx.update(&chunk[..n]);
            total += n;
        }
        let _ = tx.send((total, ctx.finish().as_ref().to_vec()));
        s.write_all(&pattern(reply_len)).unwrap();
    });
    (addr, rx)
}

pub fn pattern(n: usize) -> Vec<u8> {
    (0..n).map(|i| (i % 251) as u8).collect()
}
