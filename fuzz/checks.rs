//! The properties the fuzz targets check: one `pub fn` per target, each
//! panicking on a violation. Plain Rust over mtlsgate's public API (no
//! libFuzzer), so `tests/gateway/fuzz_corpus.rs` replays the committed corpus
//! and the regression inputs through exactly these checks on stable.
//!
//! Where a property needs to know what a correct answer is (XFCC, RFC 4514,
//! chunked framing, what a backend decodes), the model is written here,
//! independently of the gateway's code, from the RFCs.

use mtlsgate::header::HeaderValue;
use mtlsgate::identity::{check_str, escape_value, xfcc_element};
use mtlsgate::proxy::http::chunked::{ChunkError, ChunkedDecoder};
use mtlsgate::proxy::http::head::{
    parse_request, parse_response, valid_host, write_request, write_response, BodyKind, HeadError,
    RequestHead, RequestRules, ResponseHead,
};
use mtlsgate::proxy::http::path::{
    canonical_target, route_key, string_prefix, under_prefix, valid_prefix,
};

// ---------------------------------------------------------------------------
// Shared helpers

/// At most this many prefixes of one input are parsed one by one; past it,
/// a sample (each parse is O(len), so all prefixes would be O(len²)).
const ALL_PREFIXES_UP_TO: usize = 1200;

/// The prefix lengths a split-read differential parses. Checking each prefix
/// on its own covers every way of splitting the input into appending reads:
/// a read sequence's answer is the first prefix (at a read boundary) that
/// is not `Ok(None)`. All of them for short inputs and up to the end of the
/// head (`head_end`, when the whole input holds one); past that a sample,
/// since each parse is O(len).
fn prefix_lengths(len: usize, head_end: Option<usize>) -> Vec<usize> {
    let all = head_end.map_or(ALL_PREFIXES_UP_TO, |n| n + 1).min(len);
    let mut v: Vec<usize> = (0..all).collect();
    v.extend((all..len).step_by(97));
    v.extend(len.saturating_sub(4).max(all)..len);
    v.sort_unstable();
    v.dedup();
    v
}

/// A few split points derived from the data itself (so the fuzzer steers them).
fn derived_cuts(data: &[u8]) -> Vec<usize> {
    let n = data.len();
    if n == 0 {
        return Vec::new();
    }
    let mut cuts = vec![n / 2, n / 3, 2 * n / 3];
    for i in 0..4.min(n) {
        let a = usize::from(data[i]);
        let b = usize::from(data[n - 1 - i]);
        cuts.push((a * 257 + b * 31 + i * 7) % (n + 1));
    }
    cuts.retain(|&c| c > 0 && c < n);
    cuts.sort_unstable();
    cuts.dedup();
    cuts
}

fn show(b: &[u8]) -> String {
    format!("{:?}", String::from_utf8_lossy(b))
}

/// CR, LF or NUL would end (or cut) a header line: no value may hold one.
fn assert_single_line(what: &str, v: &[u8]) {
    assert!(
        !v.iter().any(|&b| b == b'\r' || b == b'\n' || b == 0),
        "{what} holds CR/LF/NUL: {}",
        show(v)
    );
}

/// Any spelling of `x-forwarded-client-cert` (case-insensitive, `_` for `-`),
/// written here rather than taken from the gateway.
fn names_xfcc(name: &str) -> bool {
    name.to_ascii_lowercase().replace('_', "-") == "x-forwarded-client-cert"
}

/// Fields a partner may not pass to the upstream in any spelling: the
/// identity header, the client address (the gateway states it), and the path
/// overrides some backends route on (IIS, Symfony), which would route past
/// the gateway's decision.
fn gateway_owned(name: &str) -> bool {
    let n = name.to_ascii_lowercase().replace('_', "-");
    [
        "x-forwarded-client-cert",
        "x-forwarded-for",
        "forwarded",
        "x-real-ip",
        "true-client-ip",
        "x-original-url",
        "x-rewrite-url",
        "proxy", // httpoxy: CGI turns it into HTTP_PROXY
    ]
    .contains(&n.as_str())
}

/// The hop-by-hop model (RFC 9110 §7.6.1): fixed names, `proxy-*`, and
/// every token of every Connection header except `host`.
fn hop_model(headers: &[(String, HeaderValue)]) -> impl Fn(&str) -> bool {
    let listed: Vec<String> = headers
        .iter()
        .filter(|(n, _)| n.eq_ignore_ascii_case("connection"))
        .flat_map(|(_, v)| {
            String::from_utf8_lossy(v.as_bytes())
                .split(',')
                .map(|t| t.trim().to_ascii_lowercase())
                .filter(|t| !t.is_empty() && t != "host")
                .collect::<Vec<_>>()
        })
        .collect();
    move |name: &str| {
        let n = name.to_ascii_lowercase();
        matches!(
            n.as_str(),
            "connection"
                | "keep-alive"
                | "te"
                | "upgrade"
                | "transfer-encoding"
                | "content-length"
                | "trailer"
        ) || n.starts_with("proxy-")
            || listed.contains(&n)
    }
}

fn hv(s: &str) -> HeaderValue {
    HeaderValue::new(s).expect("constant header value")
}

// ---------------------------------------------------------------------------
// request_head

/// The gateway's own lists (the property is that they are enforced, whatever
/// they hold): methods a case-folding backend reads as standard, and fields
/// that must not come in a `_` spelling.
use mtlsgate::proxy::http::head::{FRAMING_NAMES as FRAMING, METHODS as STANDARD_METHODS};

/// An accepted head uses CRLF line endings only and no obs-fold (a line
/// that starts with SP or HTAB continues the previous field for some parsers).
fn check_head_lines(head: &[u8]) {
    for (i, &b) in head.iter().enumerate() {
        if b == b'\n' {
            assert!(
                i > 0 && head[i - 1] == b'\r',
                "bare LF in an accepted head: {}",
                show(head)
            );
            assert!(
                !matches!(head.get(i + 1), Some(b' ' | b'\t')),
                "obs-fold in an accepted head: {}",
                show(head)
            );
        }
    }
}

const HOST: &str = "gw.example:8443";
const OUR_XFCC: &str = "Hash=9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08;Subject=\"CN=Fuzz Partner,O=Example\";URI=spiffe://partner.example/fuzz";

type ReqOutcome = Result<Option<(String, usize)>, HeadError>;

/// A parse result in a comparable form: the head's full `Debug` (method,
/// target, version, headers, framing, keep-alive, hop list) and its length.
fn req_outcome(r: &Result<Option<(RequestHead, usize)>, HeadError>) -> ReqOutcome {
    match r {
        Ok(Some((h, n))) => Ok(Some((format!("{h:?}"), *n))),
        Ok(None) => Ok(None),
        Err(e) => Err(e.clone()),
    }
}

/// What a read that ends after `k` bytes may see, given the whole input's
/// outcome: shorter than the head → incomplete; the whole head → the same
/// answer. An input that is refused anyway may be refused earlier (the error
/// is in the bytes already read), or as too large once the buffer is full.
fn check_prefix<T: PartialEq + std::fmt::Debug>(
    data: &[u8],
    k: usize,
    max_bytes: usize,
    whole: &Result<Option<(T, usize)>, HeadError>,
    part: &Result<Option<(T, usize)>, HeadError>,
    what: &str,
) {
    let ok = match whole {
        Ok(Some((_, n))) if k >= *n => part == whole,
        Ok(Some(_)) | Ok(None) => matches!(part, Ok(None)),
        Err(_) => {
            matches!(part, Ok(None))
                || part == whole
                || (k >= max_bytes && matches!(part, Err(HeadError::TooLarge(_))))
        }
    };
    assert!(
        ok,
        "{what}: a read of the first {k} bytes gives {part:?}, the whole input {whole:?}\ninput: {}",
        show(data)
    );
}

pub fn request_head(data: &[u8]) {
    // Until a head is complete, the outcome does not depend on `allow_params`:
    // the split reads are checked for one setting at each size limit.
    for (max_bytes, allow_params, splits) in
        [(1024, false, true), (1024, true, false), (64, false, true)]
    {
        let rules = RequestRules {
            max_bytes,
            allow_params,
        };
        let whole_r = parse_request(data, &rules);
        let whole = req_outcome(&whole_r);
        let head_end = whole_r
            .as_ref()
            .ok()
            .and_then(|r| r.as_ref().map(|(_, n)| *n));
        let ks = if splits {
            prefix_lengths(data.len(), head_end)
        } else {
            vec![]
        };
        for k in ks {
            let part = req_outcome(&parse_request(&data[..k], &rules));
            check_prefix(data, k, max_bytes, &whole, &part, "request head");
        }
        if let Ok(Some((h, n))) = whole_r {
            assert!(n <= data.len() && n <= max_bytes);
            check_head_lines(&data[..n]);
            assert!(
                !h.method.eq_ignore_ascii_case("CONNECT"),
                "CONNECT accepted"
            );
            assert!(
                !STANDARD_METHODS
                    .iter()
                    .any(|m| m.eq_ignore_ascii_case(&h.method) && *m != h.method),
                "a standard method in another case: {:?}",
                h.method
            );
            for (name, _) in &h.headers {
                let spelled = name.to_ascii_lowercase().replace('_', "-");
                assert!(
                    !name.contains('_') || !FRAMING.contains(&spelled.as_str()),
                    "accepted {name:?}, which a CGI-style backend reads as {spelled:?}"
                );
            }
            check_forwarded_request(&h, allow_params);
        }
    }
}

/// What the gateway writes upstream for an accepted head is one complete,
/// unambiguous request for the same thing, with our identity and no other.
fn check_forwarded_request(h: &RequestHead, allow_params: bool) {
    for (n, v) in &h.headers {
        assert_single_line(n, v.as_bytes());
    }
    if !(h.method == "OPTIONS" && h.target == "*") {
        assert_eq!(
            canonical_target(&h.target, allow_params).as_deref(),
            Ok(h.target.as_str()),
            "the parsed target is not canonical"
        );
    }
    let xfcc = hv(OUR_XFCC);
    let mut out = Vec::new();
    write_request(&mut out, h, Some(&xfcc), Some(&hv(HOST)), None);
    let rules = RequestRules {
        max_bytes: out.len() + 1,
        allow_params,
    };
    let (h2, m) = match parse_request(&out, &rules) {
        Ok(Some(r)) => r,
        other => panic!(
            "the forwarded head does not re-parse: {other:?}\nforwarded: {}",
            show(&out)
        ),
    };
    assert_eq!(
        m,
        out.len(),
        "the forwarded head is not exactly one request: {}",
        show(&out)
    );
    assert_eq!(h2.method, h.method);
    assert_eq!(h2.target, h.target, "forwarded: {}", show(&out));
    assert_eq!(h2.body, h.body, "framing changed: {}", show(&out));
    assert!(!h2.http10 && h2.has_host);
    let mut got: &[(String, HeaderValue)] = &h2.headers;
    for (n, v) in got {
        assert_single_line(n, v.as_bytes());
    }
    let ours: Vec<_> = got.iter().filter(|(n, _)| names_xfcc(n)).collect();
    assert_eq!(
        ours.len(),
        1,
        "XFCC fields upstream: {ours:?}\nforwarded: {}",
        show(&out)
    );
    assert_eq!(ours[0].1.as_bytes(), OUR_XFCC.as_bytes());
    // Exactly: [Host we add] + the end-to-end fields in order + framing + XFCC.
    if !h.has_host {
        assert!(got[0].0 == "Host" && got[0].1.as_bytes() == HOST.as_bytes());
        got = &got[1..];
    }
    let hop = hop_model(&h.headers);
    let kept: Vec<&(String, HeaderValue)> = h
        .headers
        .iter()
        .filter(|(n, _)| !hop(n) && !gateway_owned(n) && !n.eq_ignore_ascii_case("expect"))
        .collect();
    let mut tail: Vec<(String, HeaderValue)> = match h.body {
        BodyKind::Length(len) => vec![("Content-Length".into(), HeaderValue::from_u64(len))],
        BodyKind::Chunked => vec![("Transfer-Encoding".into(), hv("chunked"))],
        BodyKind::None | BodyKind::Close => vec![],
    };
    tail.push(("x-forwarded-client-cert".into(), xfcc));
    assert_eq!(
        got.len(),
        kept.len() + tail.len(),
        "forwarded: {}",
        show(&out)
    );
    for (g, k) in got.iter().zip(kept) {
        assert_eq!(g, k, "forwarded: {}", show(&out));
    }
    assert_eq!(&got[got.len() - tail.len()..], &tail[..]);
    let hosts: Vec<_> = h2
        .headers
        .iter()
        .filter(|(n, _)| n.eq_ignore_ascii_case("host"))
        .collect();
    assert!(hosts.len() == 1, "forwarded: {}", show(&out));
    let host = hosts[0].1.as_bytes();
    // Whatever else `valid_host` allows, nothing that would make it a URL,
    // userinfo or a second value.
    assert!(
        valid_host(host)
            && !host
                .iter()
                .any(|&b| b"/?#@\\ \t,\"<>".contains(&b) || !(0x20..0x7f).contains(&b)),
        "forwarded Host {}",
        show(host)
    );
}

// ---------------------------------------------------------------------------
// response_head

type RespOutcome = Result<Option<(String, usize)>, HeadError>;

fn resp_outcome(r: &Result<Option<(ResponseHead, usize)>, HeadError>) -> RespOutcome {
    match r {
        Ok(Some((h, n))) => Ok(Some((format!("{h:?}"), *n))),
        Ok(None) => Ok(None),
        Err(e) => Err(e.clone()),
    }
}

pub fn response_head(data: &[u8]) {
    for (max_bytes, head_request) in [(1024, false), (1024, true), (64, false)] {
        let whole_r = parse_response(data, max_bytes, head_request);
        let whole = resp_outcome(&whole_r);
        let head_end = whole_r
            .as_ref()
            .ok()
            .and_then(|r| r.as_ref().map(|(_, n)| *n));
        for k in prefix_lengths(data.len(), head_end) {
            let part = resp_outcome(&parse_response(&data[..k], max_bytes, head_request));
            check_prefix(data, k, max_bytes, &whole, &part, "response head");
        }
        if let Ok(Some((h, n))) = whole_r {
            assert!(n <= data.len());
            check_head_lines(&data[..n]);
            // The gateway answers 502 to codes under 100 and to 101 and relays the rest.
            if h.code >= 100 && h.code != 101 {
                check_relayed_response(&h, head_request);
            }
        }
    }
}

fn check_relayed_response(h: &ResponseHead, head_request: bool) {
    assert_single_line("reason", h.reason.as_bytes());
    for close in [false, true] {
        let mut out = Vec::new();
        write_response(&mut out, h, close);
        let (h2, m) = match parse_response(&out, out.len() + 1, head_request) {
            Ok(Some(r)) => r,
            other => panic!(
                "the relayed head does not re-parse: {other:?}\nrelayed: {}",
                show(&out)
            ),
        };
        assert_eq!(
            m,
            out.len(),
            "the relayed head is not one response: {}",
            show(&out)
        );
        assert_eq!(h2.code, h.code);
        assert_eq!(h2.reason, h.reason);
        assert_eq!(h2.body, h.body, "framing changed: {}", show(&out));
        if close {
            assert!(!h2.reusable);
        }
        for (n, v) in &h2.headers {
            assert_single_line(n, v.as_bytes());
        }
        let hop = hop_model(&h.headers);
        let kept: Vec<&(String, HeaderValue)> = h
            .headers
            .iter()
            .filter(|(n, _)| {
                !hop(n) || (h.body == BodyKind::None && n.eq_ignore_ascii_case("content-length"))
            })
            .collect();
        let mut tail: Vec<(String, HeaderValue)> = match h.body {
            BodyKind::Length(len) => vec![("Content-Length".into(), HeaderValue::from_u64(len))],
            BodyKind::Chunked => vec![("Transfer-Encoding".into(), hv("chunked"))],
            BodyKind::None | BodyKind::Close => vec![],
        };
        if close {
            tail.push(("Connection".into(), hv("close")));
        }
        assert_eq!(
            h2.headers.len(),
            kept.len() + tail.len(),
            "relayed: {}",
            show(&out)
        );
        for (g, k) in h2.headers.iter().zip(kept) {
            assert_eq!(g, k, "relayed: {}", show(&out));
        }
        assert_eq!(&h2.headers[h2.headers.len() - tail.len()..], &tail[..]);
    }
}

// ---------------------------------------------------------------------------
// chunked

#[derive(Debug, PartialEq)]
struct Decoded {
    result: Result<usize, ChunkError>,
    data: Vec<u8>,
    done: bool,
}

/// Feeds `data` in pieces ending at `cuts`, as the gateway does with reads:
/// stop at the end of the body or at the first error.
fn feed(data: &[u8], cuts: &[usize]) -> Decoded {
    let mut d = ChunkedDecoder::new();
    let mut out = Vec::new();
    let mut total = 0;
    let mut start = 0;
    for &end in cuts.iter().chain(std::iter::once(&data.len())) {
        let piece = &data[start..end];
        start = end;
        match d.advance_with(piece, |x| out.extend_from_slice(x)) {
            Ok(k) => {
                total += k;
                if d.is_done() {
                    break;
                }
                assert_eq!(k, piece.len(), "consumed part of a read without finishing");
            }
            Err(e) => {
                return Decoded {
                    result: Err(e),
                    data: out,
                    done: d.is_done(),
                }
            }
        }
    }
    Decoded {
        result: Ok(total),
        data: out,
        done: d.is_done(),
    }
}

/// An independent, non-incremental reading of a chunked body (RFC 9112 §7.1)
/// with the gateway's documented limits.
#[derive(Debug)]
enum RefChunked {
    /// Complete: body length and decoded data.
    Done(usize, Vec<u8>),
    /// Valid so far, incomplete: data decoded so far.
    Partial(Vec<u8>),
    Bad,
    /// Over a size limit: the decoder must refuse it, but where it does is its own business.
    Limit,
}

fn value_byte(b: u8) -> bool {
    b == b'\t' || (0x20..0x7f).contains(&b) || b >= 0x80
}

fn tchar(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

fn reference_chunked(s: &[u8]) -> RefChunked {
    use RefChunked::*;
    let n = s.len();
    let mut i = 0;
    let mut data = Vec::new();
    // CRLF at i: Ok(i + 2), or the outcome if it is not there.
    macro_rules! crlf {
        ($i:expr, $data:expr) => {{
            if $i >= n {
                return Partial($data);
            }
            if s[$i] != b'\r' {
                return Bad;
            }
            if $i + 1 >= n {
                return Partial($data);
            }
            if s[$i + 1] != b'\n' {
                return Bad;
            }
            $i + 2
        }};
    }
    loop {
        let start = i;
        while i < n && s[i].is_ascii_hexdigit() {
            i += 1;
        }
        let digits = i - start;
        if digits > 15 {
            return Limit;
        }
        if i == n {
            return Partial(data);
        }
        if digits == 0 {
            return Bad;
        }
        let size = u64::from_str_radix(std::str::from_utf8(&s[start..i]).unwrap(), 16).unwrap();
        if s[i] == b';' {
            i += 1;
            let ext = i;
            while i < n && s[i] != b'\r' {
                if !value_byte(s[i]) {
                    return if i - ext > 4096 { Limit } else { Bad };
                }
                i += 1;
            }
            if i - ext > 4096 {
                return Limit;
            }
        }
        i = crlf!(i, data);
        if size == 0 {
            break;
        }
        let avail = (n - i) as u64;
        if avail < size {
            data.extend_from_slice(&s[i..]);
            return Partial(data);
        }
        let size = size as usize;
        data.extend_from_slice(&s[i..i + size]);
        i = crlf!(i + size, data);
    }
    let (mut fields, mut bytes) = (0, 0);
    loop {
        if i == n {
            return Partial(data);
        }
        if s[i] == b'\r' {
            let end = crlf!(i, data);
            return Done(end, data);
        }
        let name = i;
        while i < n && tchar(s[i]) {
            i += 1;
        }
        if i == name {
            return Bad;
        }
        fields += 1;
        if fields > 32 || bytes + (i - name) > 8192 {
            return Limit;
        }
        if i == n {
            return Partial(data);
        }
        if s[i] != b':' {
            return Bad;
        }
        i += 1;
        while i < n && s[i] != b'\r' {
            if !value_byte(s[i]) {
                return if bytes + (i - name) > 8192 {
                    Limit
                } else {
                    Bad
                };
            }
            i += 1;
        }
        bytes += i - name;
        if bytes > 8192 {
            return Limit;
        }
        i = crlf!(i, data);
    }
}

pub fn chunked(data: &[u8]) {
    let whole = feed(data, &[]);
    let cuts = derived_cuts(data);
    for c in &cuts {
        assert_eq!(feed(data, &[*c]), whole, "split at {c}: {}", show(data));
    }
    assert_eq!(
        feed(data, &cuts),
        whole,
        "split at {cuts:?}: {}",
        show(data)
    );
    if data.len() <= 4096 {
        let every: Vec<usize> = (1..data.len()).collect();
        assert_eq!(feed(data, &every), whole, "byte by byte: {}", show(data));
    }
    if let Ok(n) = whole.result {
        assert!(n <= data.len());
        assert!(whole.done || n == data.len());
    }
    match reference_chunked(data) {
        RefChunked::Done(n, d) => assert!(
            whole.result == Ok(n) && whole.done && whole.data == d,
            "a complete body ({n} bytes, data {}) decoded as {whole:?}: {}",
            show(&d),
            show(data)
        ),
        RefChunked::Partial(d) => assert!(
            whole.result == Ok(data.len()) && !whole.done && whole.data == d,
            "a valid incomplete body (data so far {}) decoded as {whole:?}: {}",
            show(&d),
            show(data)
        ),
        RefChunked::Bad | RefChunked::Limit => assert!(
            whole.result.is_err(),
            "an invalid body decoded as {whole:?}: {}",
            show(data)
        ),
    }
}

// ---------------------------------------------------------------------------
// path

/// Route prefixes as the config keeps them: canonical, no trailing `/`,
/// only unreserved characters and `/` (config validation refuses any other:
/// with `!b` in a prefix, `/a%21b` routed past it while a decoding backend
/// served it from there, as this target found).
const PREFIXES: [&str; 8] = [
    "",
    "/orders",
    "/orders/export",
    "/public",
    "/a-b",
    "/v1.2",
    "/x_y~z",
    "/A",
];

fn unreserved(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~')
}

fn hex_digit(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

/// One round of percent-decoding, as a backend does (invalid escapes kept).
fn percent_decode(p: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(p.len());
    let mut i = 0;
    while i < p.len() {
        if p[i] == b'%' {
            if let (Some(h), Some(l)) = (
                p.get(i + 1).copied().and_then(hex_digit),
                p.get(i + 2).copied().and_then(hex_digit),
            ) {
                out.push(h << 4 | l);
                i += 3;
                continue;
            }
        }
        out.push(p[i]);
        i += 1;
    }
    out
}

/// Segments without their `;` parameters.
fn strip_params(p: &str) -> String {
    p.split('/')
        .map(|s| s.split(';').next().unwrap_or(""))
        .collect::<Vec<_>>()
        .join("/")
}

fn check_canonical_bytes(c: &str, allow_params: bool) {
    let (p, q) = match c.split_once('?') {
        Some((p, q)) => (p, Some(q)),
        None => (c, None),
    };
    let p = p.as_bytes();
    assert!(p.first() == Some(&b'/'), "{c:?} is not origin-form");
    let mut i = 0;
    while i < p.len() {
        let b = p[i];
        if b == b'%' {
            let (h, l) = (p.get(i + 1).copied(), p.get(i + 2).copied());
            let upper =
                |x: Option<u8>| x.is_some_and(|x| x.is_ascii_digit() || (b'A'..=b'F').contains(&x));
            assert!(
                upper(h) && upper(l),
                "{c:?}: escape not two upper-case hex digits"
            );
            let v = hex_digit(h.unwrap()).unwrap() << 4 | hex_digit(l.unwrap()).unwrap();
            assert!(!unreserved(v), "{c:?}: escape of an unreserved byte kept");
            assert!(
                v > b' ' && v != 0x7f,
                "{c:?}: escape of a control byte or space"
            );
            assert!(v != b'/' && v != b'\\', "{c:?}: escaped slash or backslash");
            assert!(
                allow_params || v != b';',
                "{c:?}: escaped ; without path params"
            );
            i += 3;
            continue;
        }
        let ok = unreserved(b) || b"!$&'()*+,=:@/".contains(&b) || (allow_params && b == b';');
        assert!(ok, "{c:?}: byte {b:#04x} outside the path grammar");
        i += 1;
    }
    if let Some(q) = q {
        assert!(
            q.bytes().all(|b| b.is_ascii_graphic() && b != b'#'),
            "{c:?}: query byte outside the allowed set"
        );
    }
}

/// A decoded path a backend might act on: no dot or empty segments, no
/// backslash, no control byte, UTF-8.
fn check_decoded(c: &str, d: &[u8], allow_params: bool, level: usize) {
    let s = std::str::from_utf8(d)
        .unwrap_or_else(|_| panic!("{c:?} decodes ({level}x) to non-UTF-8 {}", show(d)));
    assert!(
        !d.iter().any(|&b| b < 0x20 || b == 0x7f || b == b'\\'),
        "{c:?} decodes ({level}x) to a control byte or backslash: {s:?}"
    );
    let segs: Vec<&str> = s[1..].split('/').collect();
    for (i, seg) in segs.iter().enumerate() {
        let names = if allow_params {
            vec![*seg, seg.split(';').next().unwrap_or("")]
        } else {
            vec![*seg]
        };
        for name in names {
            assert!(
                name != "." && name != "..",
                "{c:?} decodes ({level}x) to a dot-segment: {s:?}"
            );
        }
        assert!(
            !seg.is_empty() || i == segs.len() - 1,
            "{c:?} decodes ({level}x) to an empty segment: {s:?}"
        );
    }
}

pub fn path(data: &[u8]) {
    for p in PREFIXES {
        assert!(
            p.is_empty() || valid_prefix(p),
            "{p:?} is no prefix the config accepts"
        );
    }
    let t = String::from_utf8_lossy(data);
    for allow_params in [false, true] {
        let Ok(c) = canonical_target(&t, allow_params) else {
            continue;
        };
        assert_eq!(
            canonical_target(&c, allow_params).as_deref(),
            Ok(c.as_str()),
            "not idempotent: {t:?} -> {c:?}"
        );
        check_canonical_bytes(&c, allow_params);
        let cpath = c.split('?').next().unwrap_or("");
        let key = route_key(cpath, allow_params);
        // Decoding once is what a backend does; decoding again must change
        // nothing (no double encoding) so a backend that decodes twice agrees.
        let once = percent_decode(cpath.as_bytes());
        let twice = percent_decode(&once);
        check_decoded(&c, &once, allow_params, 1);
        assert_eq!(
            show(&twice),
            show(&once),
            "{c:?} still holds an escape after decoding once"
        );
        let once = String::from_utf8(once).unwrap_or_default();
        // What a decoding backend routes on. With path params allowed, one that
        // strips them before decoding, and one that decodes and then strips.
        let backends: Vec<String> = if allow_params {
            vec![
                String::from_utf8(percent_decode(strip_params(cpath).as_bytes()))
                    .unwrap_or_default(),
                strip_params(&once),
            ]
        } else {
            vec![once]
        };
        for p in PREFIXES {
            for ci in [false, true] {
                let ours = under_prefix(&key, p, ci);
                // The gateway applies a route's allow-list to the paths under
                // it and to its string-prefix neighbours (`/orders.json`).
                let guarded = string_prefix(&key, p, ci);
                for b in &backends {
                    assert_eq!(
                        ours,
                        under_prefix(b, p, ci),
                        "{t:?} -> {c:?} routes on {key:?}, a backend on {b:?}: they disagree on prefix {p:?} (case-insensitive: {ci})"
                    );
                    assert!(
                        guarded || !string_prefix(b, p, ci),
                        "{t:?} -> {c:?}: a backend matching {p:?} as a string prefix of {b:?} serves it, the gateway did not apply that route's allow-list to {key:?}"
                    );
                }
            }
        }
    }
}

// ---------------------------------------------------------------------------
// xfcc

const HASH: &str = "3b4c2f1e0d9a8b7c6d5e4f30211203f4e5d6c7b8a9f0e1d2c3b4a5968778695a";

/// The input as identity strings: subject attribute values (each 0xFD starts
/// a new RDN, each 0xFC another value of the same RDN), then each 0xFF starts
/// a URI SAN and each 0xFE a DNS SAN; lossy UTF-8. Attribute values come
/// with `true` when they start a new RDN.
#[allow(clippy::type_complexity)]
fn identity_parts(data: &[u8]) -> (Vec<(bool, String)>, Vec<String>, Vec<String>) {
    let end = data
        .iter()
        .position(|&b| b == 0xFF || b == 0xFE)
        .unwrap_or(data.len());
    let mut attrs = Vec::new();
    let mut new_rdn = true;
    for part in data[..end].split_inclusive(|&b| b == 0xFD || b == 0xFC) {
        let (v, sep) = match part.last() {
            Some(&b) if b == 0xFD || b == 0xFC => (&part[..part.len() - 1], Some(b)),
            _ => (part, None),
        };
        attrs.push((new_rdn, String::from_utf8_lossy(v).into_owned()));
        new_rdn = sep != Some(0xFC);
    }
    if attrs.is_empty() || data[..end].last().is_some_and(|&b| b == 0xFD || b == 0xFC) {
        attrs.push((new_rdn, String::new()));
    }
    let (mut uris, mut dns) = (Vec::new(), Vec::new());
    let mut i = end;
    while i < data.len() {
        let kind = data[i];
        let j = data[i + 1..]
            .iter()
            .position(|&b| b == 0xFF || b == 0xFE)
            .map_or(data.len(), |p| i + 1 + p);
        let v = String::from_utf8_lossy(&data[i + 1..j]).into_owned();
        if kind == 0xFF {
            uris.push(v);
        } else {
            dns.push(v);
        }
        i = j;
    }
    (attrs, uris, dns)
}

const KEYS: [&str; 4] = ["CN", "O", "OU", "C"];

pub fn xfcc(data: &[u8]) {
    let (rdn_attrs, uris, dns) = identity_parts(data);
    let attrs: Vec<String> = rdn_attrs.iter().map(|(_, v)| v.clone()).collect();
    if attrs
        .iter()
        .chain(&uris)
        .chain(&dns)
        .any(|v| check_str("fuzz", v).is_err())
    {
        return; // the handshake refuses such a certificate
    }
    for v in attrs.iter().chain(&uris).chain(&dns) {
        assert_eq!(
            unescape_rfc4514_value(&escape_value(v)).as_deref(),
            Ok(v.as_str()),
            "escape_value({v:?}) = {:?} does not unescape to it",
            escape_value(v)
        );
    }
    let mut subject = String::new();
    for (i, (new_rdn, v)) in rdn_attrs.iter().enumerate() {
        if i > 0 {
            subject.push(if *new_rdn { ',' } else { '+' });
        }
        subject.push_str(KEYS[i % KEYS.len()]);
        subject.push('=');
        subject.push_str(&escape_value(v));
    }
    assert_eq!(
        parse_dn(&subject),
        Ok(attrs
            .iter()
            .enumerate()
            .map(|(i, v)| (KEYS[i % KEYS.len()].to_string(), v.clone()))
            .collect::<Vec<_>>()),
        "subject {subject:?}"
    );
    let x = xfcc_element(HASH, &subject, &uris, &dns);
    if let Err(e) = HeaderValue::new(x.as_bytes()) {
        panic!("XFCC {x:?} is not a header value: {e}");
    }
    let mut want = vec![
        ("Hash".to_string(), HASH.to_string()),
        ("Subject".to_string(), subject.clone()),
    ];
    want.extend(uris.iter().map(|u| ("URI".to_string(), u.clone())));
    want.extend(dns.iter().map(|d| ("DNS".to_string(), d.clone())));
    assert_eq!(
        parse_xfcc(&x),
        Ok(vec![want]),
        "XFCC {x:?} does not read back as the certificate's values"
    );
}

/// RFC 9110 §5.6.4 quoted-string starting at `s[0] == '"'`: (value, bytes used).
fn quoted_string(s: &[u8]) -> Result<(Vec<u8>, usize), String> {
    let qdtext = |b: u8| {
        b == b'\t'
            || b == b' '
            || b == 0x21
            || (0x23..=0x5b).contains(&b)
            || (0x5d..=0x7e).contains(&b)
            || b >= 0x80
    };
    let mut v = Vec::new();
    let mut i = 1;
    loop {
        match s.get(i) {
            None => return Err("unterminated quoted-string".into()),
            Some(b'"') => return Ok((v, i + 1)),
            Some(b'\\') => match s.get(i + 1) {
                Some(&c) if c == b'\t' || (0x20..=0x7e).contains(&c) || c >= 0x80 => {
                    v.push(c);
                    i += 2;
                }
                _ => return Err("bad quoted-pair".into()),
            },
            Some(&c) if qdtext(c) => {
                v.push(c);
                i += 1;
            }
            Some(c) => return Err(format!("byte {c:#04x} in a quoted-string")),
        }
    }
}

/// Envoy's XFCC grammar: elements separated by `,`, each `key=value` pairs
/// separated by `;`, a value bare (up to `,`/`;`) or a quoted-string.
/// Returns each element's pairs in order.
pub fn parse_xfcc(x: &str) -> Result<Vec<Vec<(String, String)>>, String> {
    let s = x.as_bytes();
    let mut elements = Vec::new();
    let mut pairs = Vec::new();
    let mut i = 0;
    loop {
        let k0 = i;
        while i < s.len() && tchar(s[i]) {
            i += 1;
        }
        if i == k0 || s.get(i) != Some(&b'=') {
            return Err(format!("no key= at byte {k0}"));
        }
        let key = String::from_utf8(s[k0..i].to_vec()).map_err(|e| e.to_string())?;
        i += 1;
        let value = if s.get(i) == Some(&b'"') {
            let (v, used) = quoted_string(&s[i..])?;
            i += used;
            v
        } else {
            let v0 = i;
            while i < s.len() && s[i] != b';' && s[i] != b',' {
                if s[i] == b'"' || s[i] == b'=' || s[i] == b'\\' || s[i] <= b' ' || s[i] >= 0x7f {
                    return Err(format!("byte {:#04x} in a bare value", s[i]));
                }
                i += 1;
            }
            if i == v0 {
                return Err("empty bare value".into());
            }
            s[v0..i].to_vec()
        };
        pairs.push((key, String::from_utf8(value).map_err(|e| e.to_string())?));
        match s.get(i) {
            None => {
                elements.push(pairs);
                return Ok(elements);
            }
            Some(b';') => i += 1,
            Some(b',') => {
                elements.push(std::mem::take(&mut pairs));
                i += 1;
            }
            Some(c) => return Err(format!("byte {c:#04x} after a value")),
        }
    }
}

/// RFC 4514 §3 attribute value (string form): `\` + special or two hex
/// digits, nothing special unescaped, no raw `#` or space in front or space
/// at the end.
fn unescape_rfc4514_value(v: &str) -> Result<String, String> {
    let s = v.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < s.len() {
        let b = s[i];
        if b == b'\\' {
            match s.get(i + 1) {
                Some(&c) if b" \"#+,;<=>\\".contains(&c) => {
                    out.push(c);
                    i += 2;
                }
                Some(&h) if hex_digit(h).is_some() => {
                    let l = s
                        .get(i + 2)
                        .copied()
                        .and_then(hex_digit)
                        .ok_or("bad \\XX")?;
                    out.push(hex_digit(h).unwrap() << 4 | l);
                    i += 3;
                }
                _ => return Err(format!("bad escape at {i} in {v:?}")),
            }
            continue;
        }
        if b"\"+,;<>".contains(&b) || b == 0 {
            return Err(format!("unescaped {:?} in {v:?}", b as char));
        }
        if (i == 0 && (b == b'#' || b == b' ')) || (i == s.len() - 1 && b == b' ') {
            return Err(format!(
                "unescaped leading/trailing {:?} in {v:?}",
                b as char
            ));
        }
        out.push(b);
        i += 1;
    }
    String::from_utf8(out).map_err(|e| e.to_string())
}

/// An RFC 4514 DN string: RDNs separated by unescaped `,`, multi-valued by
/// `+` (flattened here), each `type=value`.
pub fn parse_dn(dn: &str) -> Result<Vec<(String, String)>, String> {
    let s = dn.as_bytes();
    let mut atvs = Vec::new();
    let mut start = 0;
    let mut i = 0;
    while i <= s.len() {
        if i < s.len() && s[i] == b'\\' {
            if i + 1 == s.len() {
                return Err(format!("{dn:?} ends in a lone backslash"));
            }
            i += 2;
            continue;
        }
        if i == s.len() || s[i] == b',' || s[i] == b'+' {
            let atv = &dn[start..i.min(s.len())];
            let (k, v) = atv.split_once('=').ok_or(format!("no = in {atv:?}"))?;
            atvs.push((k.to_string(), unescape_rfc4514_value(v)?));
            start = i + 1;
        }
        i += 1;
    }
    Ok(atvs)
}
