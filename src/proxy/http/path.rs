//! One canonical form of a request target, so what the gateway routes is
//! exactly what it forwards and no backend can decode it into another path.
//!
//! RFC 3986 §6.2.2: escapes of unreserved characters are decoded, the rest are
//! upper-cased. Everything a backend might read differently from us is refused
//! rather than normalised: invalid, control, space, slash, backslash and
//! double-encoded escapes, escapes that are not UTF-8, raw bytes outside the
//! path grammar, dot-segments and empty segments, and `;` path parameters
//! unless the listener allows them (then they are ignored for routing).

use std::borrow::Cow;

/// Bytes that RFC 3986 calls unreserved: their escapes mean the same as they do.
fn unreserved(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~')
}

/// Raw bytes allowed in a path besides unreserved, `%` and `;` (pchar and `/`).
fn raw_path_byte(b: u8) -> bool {
    unreserved(b) || b"!$&'()*+,=:@/".contains(&b)
}

fn hex_val(b: u8) -> Option<u8> {
    (b as char).to_digit(16).map(|d| d as u8)
}

fn escape_at(p: &[u8], i: usize) -> Option<u8> {
    let hi = hex_val(*p.get(i + 1)?)?;
    let lo = hex_val(*p.get(i + 2)?)?;
    Some(hi << 4 | lo)
}

/// The canonical `path[?query]` of an origin-form target, or why it is refused.
pub fn canonical_target(target: &str, allow_params: bool) -> Result<String, &'static str> {
    if !target.starts_with('/') {
        return Err("request target must be an absolute path");
    }
    if target.contains('#') {
        return Err("fragment in request target");
    }
    let (path, query) = match target.split_once('?') {
        Some((p, q)) => (p, Some(q)),
        None => (target, None),
    };
    let p = path.as_bytes();
    let mut out = String::with_capacity(target.len());
    // Escaped bytes >= 0x80 must decode to UTF-8 (raw ones are refused below).
    let mut high = false;
    let mut i = 0;
    while i < p.len() {
        let b = p[i];
        if b == b'%' {
            let v = escape_at(p, i).ok_or("invalid percent-escape in path")?;
            if unreserved(v) {
                out.push(v as char);
            } else if v <= b' ' || v == 0x7f {
                return Err("encoded control character or space in path");
            } else if v == b'/' || v == b'\\' {
                return Err("encoded slash or backslash in path");
            } else if v == b';' {
                // Even with parameters allowed: a backend that decodes it would
                // strip a parameter our router never saw.
                return Err("encoded path parameter (;) in path");
            } else {
                const HEX: &[u8; 16] = b"0123456789ABCDEF";
                out.push('%');
                out.push(char::from(HEX[usize::from(v >> 4)])); // ok: index < 16
                out.push(char::from(HEX[usize::from(v & 15)])); // ok: index < 16
                high |= v >= 0x80;
            }
            i += 3;
            continue;
        }
        if b == b';' && !allow_params {
            return Err("path parameter (;) in path");
        }
        if !(raw_path_byte(b) || b == b';') {
            return Err("invalid character in path");
        }
        out.push(b as char);
        i += 1;
    }
    // Checked on the output, where escaped hex digits are already decoded
    // (`%25%32%65` is `%252e` too).
    let o = out.as_bytes();
    if (0..o.len()).any(|j| o[j..].starts_with(b"%25") && escape_at(o, j + 2).is_some()) {
        return Err("double-encoded escape in path");
    }
    if high && std::str::from_utf8(&decode_all(&out)).is_err() {
        return Err("escapes in path do not decode to UTF-8");
    }
    check_segments(&out, allow_params)?;
    if let Some(q) = query {
        if !q.bytes().all(|b| b.is_ascii_graphic()) {
            return Err("invalid character in query");
        }
        out.push('?');
        out.push_str(q);
    }
    Ok(out)
}

/// Every escape of a canonical path decoded: the path as a decoding backend sees it.
pub fn decode_all(canonical: &str) -> Vec<u8> {
    let p = canonical.as_bytes();
    let mut out = Vec::with_capacity(p.len());
    let mut i = 0;
    while i < p.len() {
        match escape_at(p, i).filter(|_| p[i] == b'%') {
            Some(v) => {
                out.push(v);
                i += 3;
            }
            None => {
                out.push(p[i]);
                i += 1;
            }
        }
    }
    out
}

/// A segment without its `;` parameters (when they are allowed).
fn segment_name(seg: &str, allow_params: bool) -> &str {
    if allow_params {
        seg.split(';').next().unwrap_or(seg) // ok: split yields at least one item
    } else {
        seg
    }
}

fn check_segments(path: &str, allow_params: bool) -> Result<(), &'static str> {
    let segs: Vec<&str> = path[1..].split('/').collect();
    let last = segs.len() - 1; // ok: split yields at least one item
    for (i, seg) in segs.iter().enumerate() {
        let name = segment_name(seg, allow_params);
        if name == "." || name == ".." {
            return Err("dot-segment in path");
        }
        if name.is_empty() && i != last {
            return Err("empty path segment");
        }
    }
    Ok(())
}

/// The path routes are matched against: the canonical path, without segment
/// parameters when the listener allows them (`/orders;v=1` is `/orders`).
pub fn route_key(path: &str, allow_params: bool) -> Cow<'_, str> {
    if !allow_params || !path.contains(';') {
        return Cow::Borrowed(path);
    }
    let segs: Vec<&str> = path.split('/').map(|s| segment_name(s, true)).collect();
    Cow::Owned(segs.join("/"))
}

/// Whether a configured route prefix is one a request can't dodge: only
/// unreserved characters and `/` (any other has an escape that stays escaped
/// in the canonical path, while a backend decodes it), and canonical itself.
pub fn valid_prefix(prefix: &str) -> bool {
    prefix.bytes().all(|b| unreserved(b) || b == b'/')
        && canonical_target(prefix, false).as_deref() == Ok(prefix)
}

/// Whether `path` starts with `prefix` as a string.
pub fn string_prefix(path: &str, prefix: &str, case_insensitive: bool) -> bool {
    match path.get(..prefix.len()) {
        Some(head) if case_insensitive => head.eq_ignore_ascii_case(prefix),
        Some(head) => head == prefix,
        None => false,
    }
}

/// Whether `path` lies under `prefix` on a segment boundary (`prefix` without a
/// trailing `/`; empty for `/`).
pub fn under_prefix(path: &str, prefix: &str, case_insensitive: bool) -> bool {
    string_prefix(path, prefix, case_insensitive)
        && (prefix.is_empty()
            || path.len() == prefix.len()
            || path.as_bytes()[prefix.len()] == b'/')
}

#[cfg(test)]
mod tests {
    use super::*;

    fn canon(t: &str) -> Result<String, &'static str> {
        canonical_target(t, false)
    }

    #[test]
    fn escapes_of_unreserved_characters_are_decoded_and_others_upper_cased() {
        assert_eq!(canon("/%6frders").as_deref(), Ok("/orders"));
        assert_eq!(canon("/orde%72s?x=%2f").as_deref(), Ok("/orders?x=%2f"));
        assert_eq!(canon("/a%3a%c3%a9").as_deref(), Ok("/a%3A%C3%A9"));
        assert_eq!(canon("/a%2eb").as_deref(), Ok("/a.b"));
    }

    #[test]
    fn what_a_backend_could_read_differently_is_refused() {
        for t in [
            "/orders%00",
            "/orders%20",
            "/orders%zz",
            "/orders%",
            "/orders%4",
            "/a%2Fb",
            "/a%5cb",
            "/a%252e",
            "/orders;x",
            "/a%3bb",
            "/public/..;/orders",
            "/%2e%2e/x",
            "/a/./b",
            "/a//b",
            "/caf\u{e9}",
            "/a b",
            "/a\\b",
            "/a%c0%ae",
            "/a%ff",
            "x",
            "/a#f",
            "/a?b c",
            "/a|b",
        ] {
            assert!(canon(t).is_err(), "{t:?} was accepted as {:?}", canon(t));
        }
    }

    #[test]
    fn with_params_allowed_they_are_kept_but_ignored_for_routing() {
        assert_eq!(
            canonical_target("/orders;v=1/x", true).as_deref(),
            Ok("/orders;v=1/x")
        );
        assert_eq!(route_key("/orders;v=1/x", true), "/orders/x");
        assert!(canonical_target("/public/..;/orders", true).is_err());
        assert!(canonical_target("/orders%3Bv=1", true).is_err());
    }

    #[test]
    fn prefixes_match_on_segment_boundaries_and_optionally_ignore_case() {
        assert!(under_prefix("/orders/1", "/orders", false));
        assert!(!under_prefix("/ordersx", "/orders", false));
        assert!(!under_prefix("/Orders", "/orders", false));
        assert!(under_prefix("/ORDERS/1", "/orders", true));
        assert!(under_prefix("/anything", "", false));
    }
}
