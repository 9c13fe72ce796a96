//! HTTP/1.1 request and response heads: parsing with `httparse` and the
//! framing rules that keep requests from being smuggled (field rules in
//! `fields`, writing in `write`). Pure functions over bytes.

use super::fields::{check_method, spells};
use super::path;
use crate::header::HeaderValue;
use std::fmt;

pub use super::fields::{is_xfcc, valid_host, FRAMING_NAMES, METHODS};
pub use super::write::{
    error_response, reason_phrase, too_many_requests, write_request, write_response,
};

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
    pub(super) hop: Vec<String>,
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
    pub(super) hop: Vec<String>,
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
    // A body-less answer (HEAD, 204, 304) whose head announces a body: if the
    // upstream sends that body anyway, a reused connection would hand it to
    // the next partner as its response. Such a connection is not reused.
    let announced =
        matches!(f.body, BodyKind::Chunked) || matches!(f.body, BodyKind::Length(n) if n > 0);
    let risky = no_body && code >= 200 && announced;
    let reusable = body != BodyKind::Close && !f.close && (!http10 || f.keep_alive_token) && !risky;
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_response_head_over_the_limit_is_refused_in_one_read_as_in_several() {
        let head = format!("HTTP/1.1 200 OK\r\nX-Big: {}\r\n\r\n", "a".repeat(2000));
        let max = 1024;
        assert!(matches!(
            parse_response(head.as_bytes(), max, false),
            Err(HeadError::TooLarge(_))
        ));
        assert!(matches!(
            parse_response(&head.as_bytes()[..max], max, false),
            Err(HeadError::TooLarge(_))
        ));
    }

    #[test]
    fn a_body_less_answer_that_announces_a_body_is_not_reused() {
        let head = |raw: &[u8], is_head| parse_response(raw, 4096, is_head).unwrap().unwrap().0;
        assert!(!head(b"HTTP/1.1 200 OK\r\nContent-Length: 40\r\n\r\n", true).reusable);
        assert!(
            !head(
                b"HTTP/1.1 204 No\r\nTransfer-Encoding: chunked\r\n\r\n",
                false
            )
            .reusable
        );
        assert!(head(b"HTTP/1.1 304 NM\r\nContent-Length: 0\r\n\r\n", false).reusable);
        assert!(head(b"HTTP/1.1 204 No\r\n\r\n", false).reusable);
    }

    #[test]
    fn bare_lf_is_refused_in_responses_too() {
        let r = parse_response(b"HTTP/1.1 200 OK\nContent-Length: 0\r\n\r\n", 4096, false);
        assert!(matches!(r, Err(HeadError::Bad(_))));
    }

    #[test]
    fn host_values_are_names_or_addresses_with_a_16_bit_port() {
        for ok in [
            "",
            "a.example",
            "a.example:443",
            "10.0.0.1:8080",
            "[::1]:9",
            "[fe80::1]",
        ] {
            assert!(valid_host(ok.as_bytes()), "{ok:?}");
        }
        for bad in [
            "a b", "evil/x?", "u@h", "a%00b", "a,b", "h:99999", "h:1x", "[]", "[::g]",
        ] {
            assert!(!valid_host(bad.as_bytes()), "{bad:?}");
        }
    }
}
