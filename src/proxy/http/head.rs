//! HTTP/1.1 request and response heads: parsing with `httparse`, the framing
//! rules that keep requests from being smuggled, path checks, and writing the
//! heads the gateway forwards. Pure functions over bytes.

use std::fmt;

pub const MAX_HEADERS: usize = 100;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodyKind {
    None,
    Length(u64),
    Chunked,
    /// Response body delimited by the upstream closing the connection.
    Close,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HeadError {
    /// 431: head over the byte limit or over `MAX_HEADERS` fields.
    TooLarge(&'static str),
    /// 400 (request) / 502 (response): malformed or ambiguous.
    Bad(&'static str),
}

impl fmt::Display for HeadError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            HeadError::TooLarge(m) | HeadError::Bad(m) => f.write_str(m),
        }
    }
}

#[derive(Debug, Clone)]
pub struct RequestHead {
    pub method: String,
    pub target: String,
    pub http10: bool,
    pub headers: Vec<(String, Vec<u8>)>,
    pub body: BodyKind,
    pub keep_alive: bool,
    pub expect_continue: bool,
    hop: Vec<String>,
}

impl RequestHead {
    /// The path without the query.
    pub fn path(&self) -> &str {
        self.target.split('?').next().unwrap_or("")
    }
}

#[derive(Debug, Clone)]
pub struct ResponseHead {
    pub code: u16,
    pub reason: String,
    pub headers: Vec<(String, Vec<u8>)>,
    pub body: BodyKind,
    /// The upstream allows reusing the connection after this response.
    pub reusable: bool,
    hop: Vec<String>,
}

/// Rejects bare LF line endings (httparse tolerates them; a backend may not agree).
fn check_line_endings(head: &[u8]) -> Result<(), HeadError> {
    for (i, &b) in head.iter().enumerate() {
        if b == b'\n' && (i == 0 || head[i - 1] != b'\r') {
            return Err(HeadError::Bad("bare LF line ending"));
        }
    }
    Ok(())
}

struct Framing {
    body: BodyKind,
    te: bool,
    hop: Vec<String>,
    close: bool,
    keep_alive_token: bool,
}

/// Content-Length / Transfer-Encoding / Connection, strictly: anything a
/// backend could read differently is an error.
fn framing(headers: &[httparse::Header<'_>]) -> Result<Framing, HeadError> {
    let mut cl: Option<u64> = None;
    let mut te: Vec<&[u8]> = Vec::new();
    let mut hop = Vec::new();
    let (mut close, mut keep_alive_token) = (false, false);
    for h in headers {
        if h.name.eq_ignore_ascii_case("content-length") {
            let v = h.value;
            if v.is_empty() || v.len() > 19 || !v.iter().all(u8::is_ascii_digit) {
                return Err(HeadError::Bad("invalid Content-Length"));
            }
            let n: u64 = std::str::from_utf8(v)
                .ok()
                .and_then(|s| s.parse().ok())
                .ok_or(HeadError::Bad("invalid Content-Length"))?;
            if cl.is_some_and(|c| c != n) {
                return Err(HeadError::Bad("conflicting Content-Length headers"));
            }
            cl = Some(n);
        } else if h.name.eq_ignore_ascii_case("transfer-encoding") {
            te.push(h.value);
        } else if h.name.eq_ignore_ascii_case("connection") {
            for tok in h.value.split(|&b| b == b',') {
                let t = String::from_utf8_lossy(tok).trim().to_ascii_lowercase();
                close |= t == "close";
                keep_alive_token |= t == "keep-alive";
                if !t.is_empty() {
                    hop.push(t);
                }
            }
        }
    }
    let body = match (te.as_slice(), cl) {
        ([], None) => BodyKind::None,
        ([], Some(n)) => BodyKind::Length(n),
        ([v], None) if v.trim_ascii().eq_ignore_ascii_case(b"chunked") => BodyKind::Chunked,
        ([_], None) => {
            return Err(HeadError::Bad(
                "unsupported Transfer-Encoding (only \"chunked\")",
            ))
        }
        (_, None) => return Err(HeadError::Bad("multiple Transfer-Encoding headers")),
        (_, Some(_)) => return Err(HeadError::Bad("both Content-Length and Transfer-Encoding")),
    };
    Ok(Framing {
        body,
        te: !te.is_empty(),
        hop,
        close,
        keep_alive_token,
    })
}

/// Rejects dot-segments, empty segments, backslashes and encoded `.` `/` `\`
/// in the path, so a prefix route can't be dodged (`/public/../orders`).
pub fn check_path(target: &str) -> Result<(), HeadError> {
    let path = target.split('?').next().unwrap_or("");
    if !path.starts_with('/') {
        return Err(HeadError::Bad("request target must be an absolute path"));
    }
    let lower = path.to_ascii_lowercase();
    if lower.contains("%2e")
        || lower.contains("%2f")
        || lower.contains("%5c")
        || path.contains('\\')
    {
        return Err(HeadError::Bad("encoded dot, slash or backslash in path"));
    }
    if path.contains('#') {
        return Err(HeadError::Bad("fragment in request target"));
    }
    for seg in path[1..].split('/') {
        if seg == "." || seg == ".." {
            return Err(HeadError::Bad("dot-segment in path"));
        }
    }
    if path.contains("//") {
        return Err(HeadError::Bad("empty path segment"));
    }
    Ok(())
}

fn owned_headers(headers: &[httparse::Header<'_>]) -> Vec<(String, Vec<u8>)> {
    headers
        .iter()
        .map(|h| (h.name.to_string(), h.value.to_vec()))
        .collect()
}

/// Parses a request head at the start of `buf`. `Ok(None)`: incomplete.
pub fn parse_request(
    buf: &[u8],
    max_bytes: usize,
) -> Result<Option<(RequestHead, usize)>, HeadError> {
    let mut hs = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut req = httparse::Request::new(&mut hs);
    let n = match req.parse(buf) {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) => {
            if buf.len() >= max_bytes {
                return Err(HeadError::TooLarge("request head too large"));
            }
            return Ok(None);
        }
        Err(httparse::Error::TooManyHeaders) => {
            return Err(HeadError::TooLarge("too many header fields"))
        }
        Err(_) => return Err(HeadError::Bad("malformed request head")),
    };
    if n > max_bytes {
        return Err(HeadError::TooLarge("request head too large"));
    }
    check_line_endings(&buf[..n])?;
    let method = req.method.unwrap_or("").to_string(); // ok: set when Complete
    let target = req.path.unwrap_or("").to_string();
    let http10 = req.version == Some(0);
    let f = framing(req.headers)?;
    if http10 && f.te {
        return Err(HeadError::Bad("Transfer-Encoding in an HTTP/1.0 request"));
    }
    let hosts = req
        .headers
        .iter()
        .filter(|h| h.name.eq_ignore_ascii_case("host"))
        .count();
    if hosts > 1 || (!http10 && hosts == 0) {
        return Err(HeadError::Bad(
            "an HTTP/1.1 request needs exactly one Host header",
        ));
    }
    if !(method == "OPTIONS" && target == "*") {
        check_path(&target)?;
    }
    let expect_continue = req.headers.iter().any(|h| {
        h.name.eq_ignore_ascii_case("expect") && h.value.eq_ignore_ascii_case(b"100-continue")
    });
    Ok(Some((
        RequestHead {
            method,
            target,
            http10,
            headers: owned_headers(req.headers),
            body: f.body,
            keep_alive: !http10 && !f.close,
            expect_continue,
            hop: f.hop,
        },
        n,
    )))
}

/// Parses a response head. `head_request`: the request was HEAD (no body follows).
pub fn parse_response(
    buf: &[u8],
    max_bytes: usize,
    head_request: bool,
) -> Result<Option<(ResponseHead, usize)>, HeadError> {
    let mut hs = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut resp = httparse::Response::new(&mut hs);
    let n = match resp.parse(buf) {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) => {
            if buf.len() >= max_bytes {
                return Err(HeadError::TooLarge("response head too large"));
            }
            return Ok(None);
        }
        Err(httparse::Error::TooManyHeaders) => {
            return Err(HeadError::TooLarge("too many response header fields"))
        }
        Err(_) => return Err(HeadError::Bad("malformed response head")),
    };
    let code = resp.code.unwrap_or(0); // ok: set when Complete
    let http10 = resp.version == Some(0);
    let f = framing(resp.headers)?;
    let no_body = head_request || (100..200).contains(&code) || code == 204 || code == 304;
    let body = match f.body {
        _ if no_body => BodyKind::None,
        BodyKind::None => BodyKind::Close,
        b => b,
    };
    let reusable = body != BodyKind::Close && !f.close && (!http10 || f.keep_alive_token);
    Ok(Some((
        ResponseHead {
            code,
            reason: resp.reason.unwrap_or("").to_string(),
            headers: owned_headers(resp.headers),
            body,
            reusable,
            hop: f.hop,
        },
        n,
    )))
}

/// Headers that describe one hop and are never forwarded.
fn hop_by_hop(name: &str, listed: &[String]) -> bool {
    // Case-insensitive without allocating: this runs for every header of every message.
    const FIXED: [&str; 7] = [
        "connection",
        "keep-alive",
        "te",
        "upgrade",
        "transfer-encoding",
        "content-length",
        "trailer",
    ];
    FIXED.iter().any(|f| name.eq_ignore_ascii_case(f))
        || name
            .get(..6)
            .is_some_and(|p| p.eq_ignore_ascii_case("proxy-"))
        || listed.iter().any(|l| name.eq_ignore_ascii_case(l))
}

/// True for any spelling of `x-forwarded-client-cert` (case, `_` for `-`).
pub fn is_xfcc(name: &str) -> bool {
    name.len() == 23
        && name
            .bytes()
            .map(|b| {
                if b == b'_' {
                    b'-'
                } else {
                    b.to_ascii_lowercase()
                }
            })
            .eq(b"x-forwarded-client-cert".iter().copied())
}

fn push_header(out: &mut Vec<u8>, name: &str, value: &[u8]) {
    out.extend_from_slice(name.as_bytes());
    out.extend_from_slice(b": ");
    out.extend_from_slice(value);
    out.extend_from_slice(b"\r\n");
}

fn push_framing(out: &mut Vec<u8>, body: BodyKind) {
    match body {
        BodyKind::Length(n) => push_header(out, "Content-Length", n.to_string().as_bytes()),
        BodyKind::Chunked => push_header(out, "Transfer-Encoding", b"chunked"),
        BodyKind::None | BodyKind::Close => {}
    }
}

/// The head sent upstream: HTTP/1.1, hop-by-hop and client-supplied XFCC removed,
/// framing re-stated, the verified identity added.
pub fn write_request(out: &mut Vec<u8>, h: &RequestHead, xfcc: Option<&str>) {
    out.extend_from_slice(h.method.as_bytes());
    out.push(b' ');
    out.extend_from_slice(h.target.as_bytes());
    out.extend_from_slice(b" HTTP/1.1\r\n");
    for (name, value) in &h.headers {
        if hop_by_hop(name, &h.hop) || is_xfcc(name) || name.eq_ignore_ascii_case("expect") {
            continue;
        }
        push_header(out, name, value);
    }
    push_framing(out, h.body);
    if let Some(x) = xfcc {
        push_header(out, "x-forwarded-client-cert", x.as_bytes());
    }
    out.extend_from_slice(b"\r\n");
}

/// The head sent to the partner. Framing headers of a body-less response
/// (HEAD, 204, 304) are kept as the upstream sent them.
pub fn write_response(out: &mut Vec<u8>, h: &ResponseHead, close: bool) {
    out.extend_from_slice(format!("HTTP/1.1 {} ", h.code).as_bytes());
    out.extend_from_slice(h.reason.as_bytes());
    out.extend_from_slice(b"\r\n");
    for (name, value) in &h.headers {
        let keep_length = h.body == BodyKind::None && name.eq_ignore_ascii_case("content-length");
        if hop_by_hop(name, &h.hop) && !keep_length {
            continue;
        }
        push_header(out, name, value);
    }
    push_framing(out, h.body);
    if close {
        out.extend_from_slice(b"Connection: close\r\n");
    }
    out.extend_from_slice(b"\r\n");
}

pub fn reason_phrase(code: u16) -> &'static str {
    match code {
        400 => "Bad Request",
        403 => "Forbidden",
        404 => "Not Found",
        408 => "Request Timeout",
        431 => "Request Header Fields Too Large",
        502 => "Bad Gateway",
        503 => "Service Unavailable",
        504 => "Gateway Timeout",
        _ => "Error",
    }
}

/// A short response generated by the gateway itself.
pub fn error_response(code: u16, close: bool, detail: &str) -> Vec<u8> {
    let body = format!("{} {}: {}\n", code, reason_phrase(code), detail);
    let mut out = format!(
        "HTTP/1.1 {} {}\r\nContent-Type: text/plain\r\nContent-Length: {}\r\n",
        code,
        reason_phrase(code),
        body.len()
    )
    .into_bytes();
    if close {
        out.extend_from_slice(b"Connection: close\r\n");
    }
    out.extend_from_slice(b"\r\n");
    out.extend_from_slice(body.as_bytes());
    out
}
