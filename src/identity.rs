//! The partner's identity, taken from its verified leaf certificate.
//!
//! Policy and the upstream header see only `PeerId`, never raw certificates
//! (as linkerd2-proxy does), so everything that decides access reads one type.

use std::borrow::Cow;
use std::fmt::Write as _;
use x509_parser::der_parser::asn1_rs::Tag;
use x509_parser::prelude::{FromDer, GeneralName, X509Certificate};
use x509_parser::x509::AttributeTypeAndValue;
use x509_parser::x509::X509Name;

/// Who the peer is, as proven by a certificate chain the listener verified.
/// Every string in it is free of control characters (see `check_str`).
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
    pub not_before: i64,
    /// Serial number, lower-case hex.
    pub serial: String,
    /// Issuer DN (RFC 4514; the CA's own, so not the partner's to choose).
    pub issuer: String,
}

#[derive(Debug, thiserror::Error)]
pub enum IdentityError {
    #[error("client certificate cannot be parsed: {0}")]
    Unparsable(String),
    /// A partner writes its own CSR, so it picks these strings: a control
    /// character in one could end a header line or a log line.
    #[error("client certificate {0} holds a control character")]
    Control(&'static str),
    /// Not a text string type: dumping it as RFC 4514 `#hex` would let the
    /// partner pick bytes that another DN parser decodes as a different name.
    #[error("client certificate subject has an attribute that is not text (type {0})")]
    NotText(u32),
}

/// Identity strings may not hold control characters (C0, DEL, C1). Refusing
/// them here, once, is what keeps every header, label and log line built from
/// a `PeerId` single-line; everything else (quotes, backslashes, separators,
/// non-ASCII) is escaped where it is written.
pub fn check_str(field: &'static str, s: &str) -> Result<(), IdentityError> {
    if s.chars().any(char::is_control) {
        return Err(IdentityError::Control(field));
    }
    Ok(())
}

impl PeerId {
    /// Builds the identity from a leaf certificate's DER (already verified by rustls).
    pub fn from_der(der: &[u8]) -> Result<PeerId, IdentityError> {
        let (_, cert) =
            X509Certificate::from_der(der).map_err(|e| IdentityError::Unparsable(e.to_string()))?;
        let mut uris = Vec::new();
        let mut dns = Vec::new();
        if let Ok(Some(san)) = cert.subject_alternative_name() {
            for name in &san.value.general_names {
                match name {
                    GeneralName::URI(u) => {
                        check_str("URI SAN", u)?;
                        uris.push((*u).to_string())
                    }
                    GeneralName::DNSName(d) => {
                        check_str("DNS SAN", d)?;
                        dns.push(d.to_ascii_lowercase())
                    }
                    _ => {}
                }
            }
        }
        let subject = rfc4514(cert.subject())?;
        // Every CN counts, so a `cn:` rule can tell one from two.
        let cns = cert
            .subject()
            .iter_common_name()
            .map(|a| attr_text(a).map(Cow::into_owned))
            .collect::<Result<_, _>>()?;
        Ok(PeerId {
            subject,
            cns,
            uris,
            dns,
            sha256: hex(aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, der).as_ref()),
            not_after: cert.validity().not_after.timestamp(),
            not_before: cert.validity().not_before.timestamp(),
            serial: hex(cert.raw_serial()),
            issuer: rfc4514(cert.issuer()).unwrap_or_else(|_| "(unreadable)".to_string()),
        })
    }

    /// The `x-forwarded-client-cert` value in Envoy's element format.
    pub fn xfcc(&self) -> String {
        xfcc_element(&self.sha256, &self.subject, &self.uris, &self.dns)
    }

    /// A short label for logs: the first URI SAN, else the subject.
    pub fn label(&self) -> &str {
        self.uris
            .first()
            .map_or(self.subject.as_str(), String::as_str)
    }
}

/// One XFCC element: `Hash=..;Subject="..";URI=..;DNS=..`.
pub fn xfcc_element(sha256: &str, subject: &str, uris: &[String], dns: &[String]) -> String {
    let mut out = String::with_capacity(128 + subject.len());
    out.push_str("Hash=");
    push_xfcc_value(&mut out, sha256, false);
    out.push_str(";Subject=");
    push_xfcc_value(&mut out, subject, true);
    for u in uris {
        out.push_str(";URI=");
        push_xfcc_value(&mut out, u, false);
    }
    for d in dns {
        out.push_str(";DNS=");
        push_xfcc_value(&mut out, d, false);
    }
    out
}

/// Bytes an XFCC value may carry without quotes: a conservative subset of
/// URI characters that holds none of XFCC's separators (`,` `;` `=`) and
/// nothing a quoted-string treats specially.
fn bare_ok(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"-._~:/?@!$&'()*+%".contains(&b)
}

/// Writes `v` bare when every byte is `bare_ok`, else as an RFC 9110
/// quoted-string with `\` and `"` escaped as quoted-pairs, so any parser that
/// follows quoted-pair rules reads back exactly `v`.
fn push_xfcc_value(out: &mut String, v: &str, always_quote: bool) {
    if !always_quote && !v.is_empty() && v.bytes().all(bare_ok) {
        out.push_str(v);
        return;
    }
    out.push('"');
    for c in v.chars() {
        if c == '"' || c == '\\' {
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
pub fn rfc4514(name: &X509Name<'_>) -> Result<String, IdentityError> {
    let mut rdns: Vec<String> = Vec::new();
    for rdn in name.iter() {
        let mut parts = Vec::new();
        for atv in rdn.iter() {
            let oid = atv.attr_type().to_id_string();
            let key = short_name(&oid).map_or(oid.clone(), str::to_string);
            let value = escape_value(&attr_text(atv)?);
            parts.push(format!("{key}={value}"));
        }
        rdns.push(parts.join("+"));
    }
    rdns.reverse();
    Ok(rdns.join(","))
}

/// The text of a DN attribute value: the string types certificates use
/// (UTF8, Printable, IA5, Numeric; BMPString as UTF-16), free of control
/// characters. Any other type is refused (`IdentityError::NotText`).
fn attr_text<'a>(atv: &AttributeTypeAndValue<'a>) -> Result<Cow<'a, str>, IdentityError> {
    let v = atv.attr_value();
    let text = if v.tag() == Tag::BmpString {
        if v.data.len() % 2 != 0 {
            return Err(IdentityError::NotText(v.tag().0));
        }
        let units = v
            .data
            .chunks_exact(2)
            .map(|c| u16::from_be_bytes([c[0], c[1]])); // ok: chunks of 2
        Cow::Owned(
            char::decode_utf16(units)
                .collect::<Result<String, _>>()
                .map_err(|_| IdentityError::NotText(v.tag().0))?,
        )
    } else {
        Cow::Borrowed(
            atv.as_str()
                .map_err(|_| IdentityError::NotText(v.tag().0))?,
        )
    };
    check_str("subject", &text)?;
    Ok(text)
}

/// The identity rules of `from_der` alone, without building the identity
/// (no strings, no digest): what the handshake's verifier needs.
pub fn check_der(der: &[u8]) -> Result<(), IdentityError> {
    let (_, cert) =
        X509Certificate::from_der(der).map_err(|e| IdentityError::Unparsable(e.to_string()))?;
    if let Ok(Some(san)) = cert.subject_alternative_name() {
        for name in &san.value.general_names {
            match name {
                GeneralName::URI(u) => check_str("URI SAN", u)?,
                GeneralName::DNSName(d) => check_str("DNS SAN", d)?,
                _ => {}
            }
        }
    }
    for rdn in cert.subject().iter() {
        for atv in rdn.iter() {
            attr_text(atv)?;
        }
    }
    Ok(())
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

/// Escapes an attribute value per RFC 4514 §2.4: `,` `+` `;` `<` `>` `\` `"`
/// anywhere, `#` or space in front, space at the end (control characters never
/// get here: `check_str` refused them).
pub fn escape_value(v: &str) -> String {
    let mut out = String::with_capacity(v.len() + 4);
    let last = v.chars().count().saturating_sub(1);
    for (i, c) in v.chars().enumerate() {
        match c {
            ',' | '+' | ';' | '<' | '>' | '\\' | '"' => {
                out.push('\\');
                out.push(c);
            }
            '#' if i == 0 => out.push_str("\\#"),
            ' ' if i == 0 || i == last => out.push_str("\\ "),
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
        push_xfcc_value(&mut s, r#"CN=a \"b\",O=Acme\, Inc."#, true);
        assert_eq!(s, r#""CN=a \\\"b\\\",O=Acme\\, Inc.""#);
        let mut t = String::new();
        push_xfcc_value(&mut t, "spiffe://p.example/a", false);
        assert_eq!(t, "spiffe://p.example/a");
    }

    #[test]
    fn escape_value_escapes_specials_and_edge_spaces() {
        assert_eq!(escape_value("Acme, Inc."), r"Acme\, Inc.");
        assert_eq!(escape_value(" a+b "), r"\ a\+b\ ");
        assert_eq!(escape_value("#x"), r"\#x");
        assert_eq!(escape_value(r#"a "b" \c"#), r#"a \"b\" \\c"#);
    }

    #[test]
    fn values_outside_the_bare_set_are_quoted() {
        for v in ["a b", "", "x;y", "x,y", "k=v", "caf\u{e9}", r"back\slash"] {
            let mut s = String::new();
            push_xfcc_value(&mut s, v, false);
            assert!(s.starts_with('"') && s.ends_with('"'), "{v:?} -> {s}");
        }
    }

    #[test]
    fn control_characters_are_refused_anywhere() {
        for s in ["a\rb", "a\nb", "\0", "x\u{7f}", "x\u{85}", "\t"] {
            assert!(check_str("f", s).is_err(), "{s:?}");
        }
        assert!(check_str("f", "Partner \"A\" \\ caf\u{e9}").is_ok());
    }
}
