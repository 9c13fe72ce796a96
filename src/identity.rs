//! The partner's identity, taken from its verified leaf certificate.
//!
//! Policy and the upstream header see only `PeerId`, never raw certificates
//! (as linkerd2-proxy does), so everything that decides access reads one type.

use std::fmt::Write as _;
use x509_parser::prelude::{FromDer, GeneralName, X509Certificate};
use x509_parser::x509::X509Name;

/// Who the peer is, as proven by a certificate chain the listener verified.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerId {
    /// Subject DN as an RFC 4514 string (last RDN first).
    pub subject: String,
    /// Common names in the subject, in certificate order.
    pub cns: Vec<String>,
    /// URI SANs (SPIFFE IDs and the like).
    pub uris: Vec<String>,
    /// DNS SANs, lower-cased.
    pub dns: Vec<String>,
    /// Lower-case hex SHA-256 of the leaf certificate's DER.
    pub sha256: String,
    /// notAfter as seconds since the epoch.
    pub not_after: i64,
}

#[derive(Debug, thiserror::Error)]
#[error("client certificate cannot be parsed: {0}")]
pub struct IdentityError(String);

impl PeerId {
    /// Builds the identity from a leaf certificate's DER (already verified by rustls).
    pub fn from_der(der: &[u8]) -> Result<PeerId, IdentityError> {
        let (_, cert) = X509Certificate::from_der(der).map_err(|e| IdentityError(e.to_string()))?;
        let mut uris = Vec::new();
        let mut dns = Vec::new();
        if let Ok(Some(san)) = cert.subject_alternative_name() {
            for name in &san.value.general_names {
                match name {
                    GeneralName::URI(u) => uris.push((*u).to_string()),
                    GeneralName::DNSName(d) => dns.push(d.to_ascii_lowercase()),
                    _ => {}
                }
            }
        }
        let cns = cert
            .subject()
            .iter_common_name()
            .filter_map(|a| a.as_str().ok().map(str::to_string))
            .collect();
        Ok(PeerId {
            subject: rfc4514(cert.subject()),
            cns,
            uris,
            dns,
            sha256: hex(aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, der).as_ref()),
            not_after: cert.validity().not_after.timestamp(),
        })
    }

    /// The `x-forwarded-client-cert` value in Envoy's element format.
    pub fn xfcc(&self) -> String {
        let mut out = String::with_capacity(128 + self.subject.len());
        out.push_str("Hash=");
        out.push_str(&self.sha256);
        out.push_str(";Subject=");
        push_xfcc_value(&mut out, &self.subject, true);
        for u in &self.uris {
            out.push_str(";URI=");
            push_xfcc_value(&mut out, u, false);
        }
        for d in &self.dns {
            out.push_str(";DNS=");
            push_xfcc_value(&mut out, d, false);
        }
        out
    }

    /// A short label for logs: the first URI SAN, else the subject.
    pub fn label(&self) -> &str {
        self.uris
            .first()
            .map_or(self.subject.as_str(), String::as_str)
    }
}

/// Quotes a value that holds `,` `;` `=` or `"` (or is empty, when `quote_empty`),
/// escaping `"` as `\"`, as Envoy's XFCC grammar requires.
fn push_xfcc_value(out: &mut String, v: &str, quote_empty: bool) {
    let needs = v.contains([',', ';', '=', '"']) || (quote_empty && v.is_empty());
    if !needs {
        out.push_str(v);
        return;
    }
    out.push('"');
    for c in v.chars() {
        if c == '"' {
            out.push('\\');
        }
        out.push(c);
    }
    out.push('"');
}

pub fn hex(bytes: &[u8]) -> String {
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        let _ = write!(s, "{b:02x}"); // ok: writing to a String cannot fail
    }
    s
}

/// RFC 4514 string of a DN: RDNs last-to-first, joined by `,`; multi-valued RDNs by `+`.
pub fn rfc4514(name: &X509Name<'_>) -> String {
    let mut rdns: Vec<String> = Vec::new();
    for rdn in name.iter() {
        let mut parts = Vec::new();
        for atv in rdn.iter() {
            let oid = atv.attr_type().to_id_string();
            let key = short_name(&oid).map_or(oid.clone(), str::to_string);
            let value = match atv.as_str() {
                Ok(s) => escape_value(s),
                Err(_) => format!("#{}", hex(atv.attr_value().data)),
            };
            parts.push(format!("{key}={value}"));
        }
        rdns.push(parts.join("+"));
    }
    rdns.reverse();
    rdns.join(",")
}

fn short_name(oid: &str) -> Option<&'static str> {
    Some(match oid {
        "2.5.4.3" => "CN",
        "2.5.4.7" => "L",
        "2.5.4.8" => "ST",
        "2.5.4.10" => "O",
        "2.5.4.11" => "OU",
        "2.5.4.6" => "C",
        "2.5.4.9" => "STREET",
        "0.9.2342.19200300.100.1.25" => "DC",
        "0.9.2342.19200300.100.1.1" => "UID",
        "2.5.4.5" => "SERIALNUMBER",
        "1.2.840.113549.1.9.1" => "emailAddress",
        _ => return None,
    })
}

/// Escapes an attribute value: `,` `+` `;` `<` `>` `\` anywhere, `#` or space in front,
/// space at the end, and NUL. Double quotes stay literal here; the XFCC layer escapes
/// them (the gateway's documented DN form, e.g. `O=Acme\, Inc.,CN=a "b"`).
fn escape_value(v: &str) -> String {
    let mut out = String::with_capacity(v.len() + 4);
    let last = v.chars().count().saturating_sub(1);
    for (i, c) in v.chars().enumerate() {
        match c {
            ',' | '+' | ';' | '<' | '>' | '\\' => {
                out.push('\\');
                out.push(c);
            }
            '#' if i == 0 => out.push_str("\\#"),
            ' ' if i == 0 || i == last => out.push_str("\\ "),
            '\0' => out.push_str("\\00"),
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn xfcc_quotes_values_with_separators_and_escapes_quotes() {
        let mut s = String::new();
        push_xfcc_value(&mut s, r#"O=Acme\, Inc.,CN=a "b""#, true);
        assert_eq!(s, r#""O=Acme\, Inc.,CN=a \"b\"""#);
        let mut t = String::new();
        push_xfcc_value(&mut t, "spiffe://p.example/a", false);
        assert_eq!(t, "spiffe://p.example/a");
    }

    #[test]
    fn escape_value_escapes_specials_and_edge_spaces() {
        assert_eq!(escape_value("Acme, Inc."), r"Acme\, Inc.");
        assert_eq!(escape_value(" a+b "), r"\ a\+b\ ");
        assert_eq!(escape_value("#x"), r"\#x");
    }
}
