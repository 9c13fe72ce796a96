//! The `PP2_TYPE_SSL` TLV: what the TLS connection settled (client flags,
//! verify result, version, CN, cipher, …, the client certificate).

use super::*;

/// The `PP2_TYPE_SSL` TLV for `ssl`: client, verify, then each sub-TLV present.
pub fn ssl_tlv(ssl: &Ssl) -> Result<Tlv, Error> {
    let mut value = vec![ssl.client];
    value.extend_from_slice(&ssl.verify.to_be_bytes());
    for (kind, s) in [
        (PP2_SUBTYPE_SSL_VERSION, &ssl.version),
        (PP2_SUBTYPE_SSL_CN, &ssl.cn),
        (PP2_SUBTYPE_SSL_CIPHER, &ssl.cipher),
        (PP2_SUBTYPE_SSL_SIG_ALG, &ssl.sig_alg),
        (PP2_SUBTYPE_SSL_KEY_ALG, &ssl.key_alg),
        (PP2_SUBTYPE_SSL_GROUP, &ssl.group),
        (PP2_SUBTYPE_SSL_SIG_SCHEME, &ssl.sig_scheme),
    ] {
        if let Some(s) = s {
            push_tlv(&mut value, kind, s.as_bytes())?;
        }
    }
    if let Some(der) = &ssl.client_cert {
        push_tlv(&mut value, PP2_SUBTYPE_SSL_CLIENT_CERT, der)?;
    }
    if value.len() > usize::from(u16::MAX) {
        return Err(Error::ValueTooLong);
    }
    Ok(Tlv {
        kind: PP2_TYPE_SSL,
        value,
    })
}

/// Reads a `PP2_TYPE_SSL` TLV's value. Unknown sub-TLVs are skipped, as the
/// spec allows; a known one twice is refused, since two CNs would let two
/// readers see two identities.
pub fn parse_ssl(value: &[u8]) -> Result<Ssl, Error> {
    let Some((&[client, a, b, c, d], rest)) = value.split_first_chunk::<5>() else {
        return Err(Error::BadSsl("shorter than 5 bytes"));
    };
    let mut ssl = Ssl {
        client,
        verify: u32::from_be_bytes([a, b, c, d]),
        ..Ssl::default()
    };
    let subs = split_tlvs(rest).ok_or(Error::BadSsl("sub-TLV overruns the SSL TLV"))?;
    for (_, kind, v) in subs {
        let slot = match kind {
            PP2_SUBTYPE_SSL_VERSION => &mut ssl.version,
            PP2_SUBTYPE_SSL_CN => &mut ssl.cn,
            PP2_SUBTYPE_SSL_CIPHER => &mut ssl.cipher,
            PP2_SUBTYPE_SSL_SIG_ALG => &mut ssl.sig_alg,
            PP2_SUBTYPE_SSL_KEY_ALG => &mut ssl.key_alg,
            PP2_SUBTYPE_SSL_GROUP => &mut ssl.group,
            PP2_SUBTYPE_SSL_SIG_SCHEME => &mut ssl.sig_scheme,
            PP2_SUBTYPE_SSL_CLIENT_CERT => {
                if ssl.client_cert.replace(v.to_vec()).is_some() {
                    return Err(Error::BadSsl("repeated sub-TLV"));
                }
                continue;
            }
            _ => continue,
        };
        let s = std::str::from_utf8(v).map_err(|_| Error::BadSsl("sub-TLV value not UTF-8"))?;
        if slot.replace(s.to_owned()).is_some() {
            return Err(Error::BadSsl("repeated sub-TLV"));
        }
    }
    Ok(ssl)
}
