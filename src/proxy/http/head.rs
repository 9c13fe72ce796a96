//! HTTP/1.1 request and response heads: parsing with `httparse`, the framing
//! rules that keep requests from being smuggled, Host and method checks, and
//! writing the heads the gateway forwards. Pure functions over bytes.

use super::path;
use crate::header::HeaderValue;
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
    /// 405: a method the gateway does not proxy (CONNECT).
    Method(&'static str),
}

impl HeadError {
    /// The status a partner gets for a request head with this error.
    pub fn status(&self) -> u16 {
        match self {
            HeadError::TooLarge(_) => 431,
            HeadError::Bad(_) => 400,
            HeadError::Method(_) => 405,
        }
    }
}

impl fmt::Display for HeadError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            HeadError::TooLarge(m) | HeadError::Bad(m) | HeadError::Method(m) => f.write_str(m),
        }
    }
}

/// What a listener allows in a request head.
#[derive(Debug, Clone, Copy)]
pub struct RequestRules {
    pub max_bytes: usize,
    /// `;` path parameters are kept (and ignored for routing) instead of refused.
    pub allow_params: bool,
}

#[derive(Debug, Clone)]
pub struct RequestHead {
    pub method: String,
    /// The canonical target (`path::canonical_target`): routed and forwarded as is.
    pub target: String,
    pub http10: bool,
    pub headers: Vec<(String, HeaderValue)>,
    /// An HTTP/1.0 request may come without Host; the gateway then adds one.
    pub has_host: bool,
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
    pub reason: HeaderValue,
    pub headers: Vec<(String, HeaderValue)>,
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
                // Host is what the request is for: a Connection token can't remove it.
                if !t.is_empty() && t != "host" {
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

/// RFC 9112 §3.2: `host[:port]` where host is a DNS name, an IPv4 address or
/// a bracketed IPv6 literal and port fits 16 bits; nothing else (no userinfo,
/// path, space, escape). Empty is allowed (RFC 9112 §3.2).
pub fn valid_host(v: &[u8]) -> bool {
    let (host, port) = match v.iter().rposition(|&b| b == b':') {
        // A colon inside brackets belongs to the IPv6 literal.
        Some(i) if !v[i..].contains(&b']') => (&v[..i], Some(&v[i + 1..])),
        _ => (v, None),
    };
    let port_ok = |p: &[u8]| {
        p.is_empty()
            || (p.len() <= 5
                && p.iter().all(u8::is_ascii_digit)
                && std::str::from_utf8(p)
                    .ok()
                    .and_then(|s| s.parse::<u16>().ok())
                    .is_some())
    };
    if port.is_some_and(|p| !port_ok(p)) {
        return false;
    }
    if let Some(inner) = host.strip_prefix(b"[").and_then(|h| h.strip_suffix(b"]")) {
        return !inner.is_empty()
            && inner
                .iter()
                .all(|&b| b.is_ascii_hexdigit() || b == b':' || b == b'.');
    }
    // A DNS name or IPv4 address: RFC 3986 would also allow escapes and
    // sub-delims in a reg-name, which no real host name uses and some
    // backends decode.
    host.iter()
        .all(|&b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.' || b == b'_')
}

/// Headers as owned pairs; every value passes the one `HeaderValue` gate.
fn owned_headers(
    headers: &[httparse::Header<'_>],
) -> Result<Vec<(String, HeaderValue)>, HeadError> {
    headers
        .iter()
        .map(|h| {
            let v = HeaderValue::new(h.value)
                .map_err(|_| HeadError::Bad("control character in a header value"))?;
            Ok((h.name.to_string(), v))
        })
        .collect()
}

/// Parses a request head at the start of `buf`. `Ok(None)`: incomplete.
pub fn parse_request(
    buf: &[u8],
    rules: &RequestRules,
) -> Result<Option<(RequestHead, usize)>, HeadError> {
    let max_bytes = rules.max_bytes;
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
    let target = req.path.unwrap_or("");
    let http10 = req.version == Some(0);
    let f = framing(req.headers)?;
    if http10 && f.te {
        return Err(HeadError::Bad("Transfer-Encoding in an HTTP/1.0 request"));
    }
    check_method(&method)?;
    if req
        .headers
        .iter()
        .any(|h| h.name.contains('_') && FRAMING_NAMES.iter().any(|n| spells(h.name, n)))
    {
        return Err(HeadError::Bad(
            "a framing or hop-by-hop header spelled with '_'",
        ));
    }
    let mut hosts = req
        .headers
        .iter()
        .filter(|h| h.name.eq_ignore_ascii_case("host"));
    let host = hosts.next();
    if hosts.next().is_some() || (!http10 && host.is_none()) {
        return Err(HeadError::Bad(
            "an HTTP/1.1 request needs exactly one Host header",
        ));
    }
    if host.is_some_and(|h| !valid_host(h.value)) {
        return Err(HeadError::Bad("invalid Host header"));
    }
    let target = if method == "OPTIONS" && target == "*" {
        target.to_string()
    } else {
        path::canonical_target(target, rules.allow_params).map_err(HeadError::Bad)?
    };
    let expect_continue = req.headers.iter().any(|h| {
        h.name.eq_ignore_ascii_case("expect") && h.value.eq_ignore_ascii_case(b"100-continue")
    });
    Ok(Some((
        RequestHead {
            method,
            target,
            http10,
            headers: owned_headers(req.headers)?,
            has_host: host.is_some(),
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
    // Same bound however the head was split into reads.
    if n > max_bytes {
        return Err(HeadError::TooLarge("response head too large"));
    }
    check_line_endings(&buf[..n])?;
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
            reason: HeaderValue::new(resp.reason.unwrap_or(""))
                .map_err(|_| HeadError::Bad("control character in the reason phrase"))?,
            headers: owned_headers(resp.headers)?,
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

/// Whether `name` spells `lower` (a lower-case field name) in any case, with
/// `_` for `-`: how CGI-style backends see it.
fn spells(name: &str, lower: &str) -> bool {
    name.len() == lower.len()
        && name
            .bytes()
            .map(|b| {
                if b == b'_' {
                    b'-'
                } else {
                    b.to_ascii_lowercase()
                }
            })
            .eq(lower.bytes())
}

/// True for any spelling of `x-forwarded-client-cert` (case, `_` for `-`).
pub fn is_xfcc(name: &str) -> bool {
    spells(name, "x-forwarded-client-cert")
}

/// Fields the gateway owns or never passes on, in any spelling: the identity
/// header, and path overrides some backends route on (IIS, Symfony).
fn gateway_owned(name: &str) -> bool {
    ["x-forwarded-client-cert", "x-original-url", "x-rewrite-url"]
        .iter()
        .any(|n| spells(name, n))
}

/// Framing and hop names a backend must never see in an `_` spelling: to a
/// CGI-style backend `Transfer_Encoding` is `Transfer-Encoding`.
const FRAMING_NAMES: [&str; 10] = [
    "content-length",
    "transfer-encoding",
    "host",
    "connection",
    "keep-alive",
    "te",
    "trailer",
    "upgrade",
    "expect",
    "proxy-connection",
];

/// Methods whose meaning a case-folding backend would take from another
/// spelling (`head` as HEAD would change the response framing).
const METHODS: [&str; 9] = [
    "GET", "HEAD", "POST", "PUT", "DELETE", "OPTIONS", "TRACE", "PATCH", "CONNECT",
];

fn check_method(m: &str) -> Result<(), HeadError> {
    if m.eq_ignore_ascii_case("CONNECT") {
        return Err(HeadError::Method("CONNECT is not proxied"));
    }
    if METHODS.iter().any(|k| k.eq_ignore_ascii_case(m) && *k != m) {
        return Err(HeadError::Bad("standard methods must be upper case"));
    }
    Ok(())
}

/// Writes one field. Names are tokens (httparse checked them, or ours are
/// constants); values are `HeaderValue`s, so no line can end early.
fn push_header(out: &mut Vec<u8>, name: &str, value: &HeaderValue) {
    out.extend_from_slice(name.as_bytes());
    out.extend_from_slice(b": ");
    out.extend_from_slice(value.as_bytes());
    out.extend_from_slice(b"\r\n");
}

fn push_framing(out: &mut Vec<u8>, body: BodyKind) {
    match body {
        BodyKind::Length(n) => push_header(out, "Content-Length", &HeaderValue::from_u64(n)),
        BodyKind::Chunked => out.extend_from_slice(b"Transfer-Encoding: chunked\r\n"),
        BodyKind::None | BodyKind::Close => {}
    }
}

/// The head sent upstream: HTTP/1.1, hop-by-hop and client-supplied XFCC removed,
/// framing re-stated, the verified identity added; `host` when the partner
/// (HTTP/1.0) sent none, since HTTP/1.1 requires one.
pub fn write_request(
    out: &mut Vec<u8>,
    h: &RequestHead,
    xfcc: Option<&HeaderValue>,
    host: &HeaderValue,
) {
    out.extend_from_slice(h.method.as_bytes());
    out.push(b' ');
    out.extend_from_slice(h.target.as_bytes());
    out.extend_from_slice(b" HTTP/1.1\r\n");
    if !h.has_host {
        push_header(out, "Host", host);
    }
    for (name, value) in &h.headers {
        if hop_by_hop(name, &h.hop) || gateway_owned(name) || name.eq_ignore_ascii_case("expect") {
            continue;
        }
        push_header(out, name, value);
    }
    push_framing(out, h.body);
    if let Some(x) = xfcc {
        push_header(out, "x-forwarded-client-cert", x);
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
        405 => "Method Not Allowed",
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
