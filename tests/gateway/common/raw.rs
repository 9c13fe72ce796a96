//! A raw upstream: records the exact bytes every connection sent it, and
//! answers each request with a scripted response written in pieces (a flush
//! and a short pause between them), so a response head can reach the gateway
//! in several reads split at chosen offsets.

use mtlsgate::proxy::http::chunked::ChunkedDecoder;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Pause between two pieces of a response.
const PIECE_GAP: Duration = Duration::from_millis(20);

/// What the upstream answers: `bytes`, cut at each offset in `splits`.
#[derive(Clone)]
pub struct Reply {
    pub bytes: Vec<u8>,
    pub splits: Vec<usize>,
}

pub struct RawUpstream {
    pub addr: SocketAddr,
    /// Every byte received, one entry per accepted connection, in accept order.
    pub conns: Arc<Mutex<Vec<Vec<u8>>>>,
    reply: Arc<Mutex<Reply>>,
}

/// `HTTP/1.1 200 OK` with `body` and a Content-Length.
pub fn ok(body: &str) -> Vec<u8> {
    format!(
        "HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

impl RawUpstream {
    /// Listens on 127.0.0.1:0; answers every request with `reply`, in one piece.
    pub fn spawn(reply: Vec<u8>) -> RawUpstream {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap();
        let conns = Arc::new(Mutex::new(Vec::new()));
        let reply = Arc::new(Mutex::new(Reply {
            bytes: reply,
            splits: Vec::new(),
        }));
        let (c2, r2) = (conns.clone(), reply.clone());
        std::thread::spawn(move || {
            for s in l.incoming().flatten() {
                let idx = {
                    let mut c = c2.lock().unwrap();
                    c.push(Vec::new());
                    c.len() - 1
                };
                let (c, r) = (c2.clone(), r2.clone());
                std::thread::spawn(move || serve(s, idx, &c, &r));
            }
        });
        RawUpstream { addr, conns, reply }
    }

    /// Answers from now on with `bytes`, written in pieces cut at `splits`.
    pub fn set_reply(&self, bytes: Vec<u8>, splits: &[usize]) {
        *self.reply.lock().unwrap() = Reply {
            bytes,
            splits: splits.to_vec(),
        };
    }

    pub fn received(&self) -> Vec<Vec<u8>> {
        self.conns.lock().unwrap().clone()
    }

    /// How much each connection has received so far (for `since`).
    pub fn mark(&self) -> Vec<usize> {
        self.conns.lock().unwrap().iter().map(Vec::len).collect()
    }

    /// The bytes received after `mark`, connection after connection.
    pub fn since(&self, mark: &[usize]) -> Vec<u8> {
        let c = self.conns.lock().unwrap();
        let mut out = Vec::new();
        for (i, bytes) in c.iter().enumerate() {
            out.extend_from_slice(&bytes[mark.get(i).copied().unwrap_or(0)..]);
        }
        out
    }
}

fn serve(mut s: TcpStream, idx: usize, conns: &Mutex<Vec<Vec<u8>>>, reply: &Mutex<Reply>) {
    let _ = s.set_nodelay(true);
    let _ = s.set_read_timeout(Some(Duration::from_secs(60)));
    let mut buf = Vec::new();
    let mut chunk = vec![0u8; 64 * 1024];
    // After bytes it cannot parse, it only records (and answers no more).
    let mut broken = false;
    loop {
        let n = match s.read(&mut chunk) {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        conns.lock().unwrap()[idx].extend_from_slice(&chunk[..n]);
        if broken {
            continue;
        }
        buf.extend_from_slice(&chunk[..n]);
        loop {
            match parse_one(&buf) {
                Ok(Some((_, used))) => {
                    buf.drain(..used);
                    let r = reply.lock().unwrap().clone();
                    if write_pieces(&mut s, &r).is_err() {
                        return;
                    }
                }
                Ok(None) => break,
                Err(_) => {
                    broken = true;
                    break;
                }
            }
        }
    }
}

fn write_pieces(s: &mut TcpStream, r: &Reply) -> std::io::Result<()> {
    let mut at = 0;
    for &cut in r.splits.iter().filter(|&&c| c > 0 && c < r.bytes.len()) {
        if cut <= at {
            continue;
        }
        s.write_all(&r.bytes[at..cut])?;
        s.flush()?;
        std::thread::sleep(PIECE_GAP);
        at = cut;
    }
    s.write_all(&r.bytes[at..])?;
    s.flush()
}

/// One request as it arrived: its exact bytes, and its body de-chunked.
#[derive(Debug, Clone)]
pub struct RawRequest {
    pub raw: Vec<u8>,
    pub head_len: usize,
    pub body: Vec<u8>,
}

impl RawRequest {
    /// The first line, without its CRLF.
    pub fn request_line(&self) -> String {
        let head = &self.raw[..self.head_len];
        let end = head.windows(2).position(|w| w == b"\r\n").unwrap_or(0);
        String::from_utf8_lossy(&head[..end]).to_string()
    }

    /// Header fields in order, exactly as sent (names not normalised).
    pub fn headers(&self) -> Vec<(String, String)> {
        let mut hs = [httparse::EMPTY_HEADER; 256];
        let mut p = httparse::Request::new(&mut hs);
        match p.parse(&self.raw[..self.head_len]) {
            Ok(_) => super::owned_headers(p.headers),
            Err(_) => Vec::new(),
        }
    }

    /// Values of the fields named `name` (ASCII case-insensitive).
    pub fn values(&self, name: &str) -> Vec<String> {
        self.headers()
            .into_iter()
            .filter(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v)
            .collect()
    }
}

/// One request at the start of `buf`: `Ok(None)` while incomplete.
pub fn parse_one(buf: &[u8]) -> Result<Option<(RawRequest, usize)>, String> {
    let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") else {
        return Ok(None);
    };
    let head_len = end + 4;
    let mut hs = [httparse::EMPTY_HEADER; 256];
    let mut p = httparse::Request::new(&mut hs);
    match p.parse(&buf[..head_len]) {
        Ok(httparse::Status::Complete(_)) => {}
        other => return Err(format!("unparsable request head: {other:?}")),
    }
    let field = |name: &str| {
        p.headers
            .iter()
            .find(|h| h.name.eq_ignore_ascii_case(name))
            .map(|h| String::from_utf8_lossy(h.value).trim().to_ascii_lowercase())
    };
    let rest = &buf[head_len..];
    let (body, body_len) = if field("transfer-encoding").is_some_and(|v| v.contains("chunked")) {
        let mut d = ChunkedDecoder::new();
        let mut data = Vec::new();
        let used = d
            .advance_with(rest, |b| data.extend_from_slice(b))
            .map_err(|e| format!("bad chunked body: {}", e.0))?;
        if !d.is_done() {
            return Ok(None);
        }
        (data, used)
    } else if let Some(cl) = field("content-length") {
        let n: usize = cl
            .parse()
            .map_err(|_| format!("bad Content-Length {cl:?}"))?;
        if rest.len() < n {
            return Ok(None);
        }
        (rest[..n].to_vec(), n)
    } else {
        (Vec::new(), 0)
    };
    let used = head_len + body_len;
    Ok(Some((
        RawRequest {
            raw: buf[..used].to_vec(),
            head_len,
            body,
        },
        used,
    )))
}

/// Splits `bytes` into whole requests; an error if any byte is left over.
pub fn parse_requests(mut bytes: &[u8]) -> Result<Vec<RawRequest>, String> {
    let mut out = Vec::new();
    while !bytes.is_empty() {
        match parse_one(bytes)? {
            Some((r, used)) => {
                out.push(r);
                bytes = &bytes[used..];
            }
            None => {
                return Err(format!(
                    "{} trailing bytes that are not a whole request: {:?}",
                    bytes.len(),
                    String::from_utf8_lossy(bytes)
                ))
            }
        }
    }
    Ok(out)
}
