//! Rules on field names and values: which fields describe one hop, which the
//! gateway owns, which spellings a CGI-style backend would confuse, methods,
//! and the Host value.

use super::head::HeadError;

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

/// Headers that describe one hop and are never forwarded.
pub(super) fn hop_by_hop(name: &str, listed: &[String]) -> bool {
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
pub(super) fn spells(name: &str, lower: &str) -> bool {
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
/// header, the client address (a partner could name any), path overrides some
/// backends route on (IIS, Symfony), and `Proxy`, which CGI turns into
/// `HTTP_PROXY` (httpoxy).
pub(super) fn gateway_owned(name: &str) -> bool {
    [
        "x-forwarded-client-cert",
        "x-forwarded-for",
        "forwarded",
        "x-real-ip",
        "true-client-ip",
        "x-original-url",
        "x-rewrite-url",
        "proxy",
    ]
    .iter()
    .any(|n| spells(name, n))
}

/// Framing and hop names a backend must never see in an `_` spelling: to a
/// CGI-style backend `Transfer_Encoding` is `Transfer-Encoding`.
pub const FRAMING_NAMES: [&str; 10] = [
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
pub const METHODS: [&str; 9] = [
    "GET", "HEAD", "POST", "PUT", "DELETE", "OPTIONS", "TRACE", "PATCH", "CONNECT",
];

pub(super) fn check_method(m: &str) -> Result<(), HeadError> {
    if m.eq_ignore_ascii_case("CONNECT") {
        return Err(HeadError::Method("CONNECT is not proxied"));
    }
    if METHODS.iter().any(|k| k.eq_ignore_ascii_case(m) && *k != m) {
        return Err(HeadError::Bad("standard methods must be upper case"));
    }
    Ok(())
}
