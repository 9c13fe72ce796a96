//! The one constructor of header values the gateway writes: a `HeaderValue`
//! cannot hold CR, LF, NUL or any other control byte but HTAB.
//!
//! Every field written upstream or to a partner, whether forwarded, rewritten
//! or generated (XFCC), goes through `HeaderValue::new`, so no input can end a
//! header line early and smuggle a second header or request (hyper's
//! `HeaderValue` is the model).

use std::fmt;

#[derive(Clone, PartialEq, Eq)]
pub struct HeaderValue(Vec<u8>);

#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("header value holds a control byte (0x{0:02x})")]
pub struct InvalidHeaderValue(pub u8);

/// RFC 9110 §5.5 field-value bytes: VCHAR, SP, HTAB and obs-text.
pub fn is_value_byte(b: u8) -> bool {
    b == b'\t' || (b' '..=b'~').contains(&b) || b >= 0x80
}

impl HeaderValue {
    pub fn new(bytes: impl Into<Vec<u8>>) -> Result<HeaderValue, InvalidHeaderValue> {
        let bytes = bytes.into();
        match bytes.iter().find(|b| !is_value_byte(**b)) {
            Some(&b) => Err(InvalidHeaderValue(b)),
            None => Ok(HeaderValue(bytes)),
        }
    }

    /// A value built from a number: digits only, always valid.
    pub fn from_u64(n: u64) -> HeaderValue {
        HeaderValue(n.to_string().into_bytes())
    }

    /// A socket address as a Host value (`1.2.3.4:5`, `[::1]:5`): always valid.
    pub fn from_addr(a: std::net::SocketAddr) -> HeaderValue {
        HeaderValue(a.to_string().into_bytes())
    }

    /// An IP address as text (digits, `.`, `:` and hex only).
    pub fn from_ip(ip: std::net::IpAddr) -> HeaderValue {
        HeaderValue(ip.to_string().into_bytes())
    }

    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }
}

impl fmt::Debug for HeaderValue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}", String::from_utf8_lossy(&self.0))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_control_byte_but_htab_is_refused() {
        for b in (0u8..0x20).chain([0x7f]) {
            let v = [b'a', b, b'b'];
            assert_eq!(
                HeaderValue::new(v.to_vec()).is_ok(),
                b == b'\t',
                "byte {b:#x}"
            );
        }
        assert!(HeaderValue::new("caf\u{e9} \"x\"").is_ok());
    }
}
