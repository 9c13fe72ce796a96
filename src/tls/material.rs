//! Loading TLS material from files: certificate chains, keys, CA bundles, CRLs.
//!
//! Every failure is a `ConfigError` naming the file, the config key and the
//! problem, so `mtlsgate check` and start-up report the same thing.

use crate::config::ConfigError;
use crate::plan::files::Files;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, CertificateRevocationListDer, PrivateKeyDer};
use rustls::sign::CertifiedKey;
use rustls::RootCertStore;
use std::path::Path;
use std::sync::Arc;
use x509_parser::prelude::{FromDer, X509Certificate};

/// Where material comes from (the plan's file snapshot) and, for error
/// messages, the config file and the key being loaded.
pub struct Ctx<'a> {
    pub files: &'a Files,
    pub file: &'a Path,
    pub key: String,
}

impl Ctx<'_> {
    pub fn err(&self, path: &Path, msg: impl std::fmt::Display) -> ConfigError {
        ConfigError::new(self.file, &self.key, format!("{}: {msg}", path.display()))
    }
}

fn read(ctx: &Ctx<'_>, path: &Path) -> Result<Arc<[u8]>, ConfigError> {
    ctx.files
        .read(path, &ctx.key)
        .map_err(|e| ctx.err(path, format!("cannot read: {e}")))
}

/// All certificates in a PEM file, in order.
pub fn certs(ctx: &Ctx<'_>, path: &Path) -> Result<Vec<CertificateDer<'static>>, ConfigError> {
    let data = read(ctx, path)?;
    let certs = CertificateDer::pem_slice_iter(&data)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| ctx.err(path, format!("bad PEM: {e}")))?;
    if certs.is_empty() {
        return Err(ctx.err(path, "no CERTIFICATE found"));
    }
    Ok(certs)
}

pub fn private_key(ctx: &Ctx<'_>, path: &Path) -> Result<PrivateKeyDer<'static>, ConfigError> {
    let data = read(ctx, path)?;
    PrivateKeyDer::from_pem_slice(&data)
        .map_err(|e| ctx.err(path, format!("no usable private key: {e}")))
}

/// A chain and its key, checked to match and to be currently valid.
pub fn certified_key(
    ctx: &Ctx<'_>,
    provider: &CryptoProvider,
    cert: &Path,
    key: &Path,
) -> Result<(Arc<CertifiedKey>, CertInfo), ConfigError> {
    let chain = certs(ctx, cert)?;
    let info = cert_info(&chain[0]).map_err(|e| ctx.err(cert, e))?; // ok: certs() never returns an empty chain
    let now = now_secs();
    if info.not_after < now {
        return Err(ctx.err(
            cert,
            format!("certificate expired on {}", fmt_time(info.not_after)),
        ));
    }
    if info.not_before > now {
        return Err(ctx.err(
            cert,
            format!("certificate not valid before {}", fmt_time(info.not_before)),
        ));
    }
    let der = private_key(ctx, key)?;
    let signing = provider
        .key_provider
        .load_private_key(der)
        .map_err(|e| ctx.err(key, format!("unsupported private key: {e}")))?;
    let ck = CertifiedKey::new(chain, signing);
    ck.keys_match().map_err(|_| {
        ctx.err(
            key,
            format!("key does not match certificate {}", cert.display()),
        )
    })?;
    Ok((Arc::new(ck), info))
}

pub fn roots(
    ctx: &Ctx<'_>,
    path: &Path,
) -> Result<(Arc<RootCertStore>, Vec<CertInfo>), ConfigError> {
    let mut store = RootCertStore::empty();
    let mut infos = Vec::new();
    for c in certs(ctx, path)? {
        infos.push(cert_info(&c).map_err(|e| ctx.err(path, e))?);
        store
            .add(c)
            .map_err(|e| ctx.err(path, format!("not a usable CA certificate: {e}")))?;
    }
    Ok((Arc::new(store), infos))
}

/// CRLs in PEM (`X509 CRL`) or a single DER CRL.
pub fn crls(
    ctx: &Ctx<'_>,
    path: &Path,
) -> Result<Vec<CertificateRevocationListDer<'static>>, ConfigError> {
    let data = read(ctx, path)?;
    if !data.starts_with(b"-----") {
        x509_parser::revocation_list::CertificateRevocationList::from_der(&data)
            .map_err(|e| ctx.err(path, format!("bad CRL: {e}")))?;
        return Ok(vec![CertificateRevocationListDer::from(data.to_vec())]);
    }
    let list = CertificateRevocationListDer::pem_slice_iter(&data)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| ctx.err(path, format!("bad PEM: {e}")))?;
    if list.is_empty() {
        return Err(ctx.err(path, "no X509 CRL found"));
    }
    for crl in &list {
        x509_parser::revocation_list::CertificateRevocationList::from_der(crl)
            .map_err(|e| ctx.err(path, format!("bad CRL: {e}")))?;
    }
    Ok(list)
}

/// Each CRL's issuer (RFC 4514) and nextUpdate, for coverage checks and `/stats`.
pub fn crl_facts(crls: &[CertificateRevocationListDer<'_>]) -> Vec<CrlInfo> {
    crls.iter()
        .filter_map(|c| {
            let (_, crl) =
                x509_parser::revocation_list::CertificateRevocationList::from_der(c).ok()?;
            Some(CrlInfo {
                issuer: crate::identity::rfc4514(crl.issuer()).unwrap_or_else(|e| e.to_string()),
                this_update: crl.last_update().timestamp(),
                next_update: crl.next_update().map(|t| t.timestamp()),
            })
        })
        .collect()
}

#[derive(Debug, Clone)]
pub struct CrlInfo {
    pub issuer: String,
    pub this_update: i64,
    pub next_update: Option<i64>,
}

/// The earliest nextUpdate among `crls` (seconds since the epoch), if any has one.
pub fn crls_next_update(crls: &[CertificateRevocationListDer<'_>]) -> Option<i64> {
    crls.iter()
        .filter_map(|c| {
            let (_, crl) =
                x509_parser::revocation_list::CertificateRevocationList::from_der(c).ok()?;
            crl.next_update().map(|t| t.timestamp())
        })
        .min()
}

/// What `check` prints about a certificate.
#[derive(Debug, Clone)]
pub struct CertInfo {
    pub subject: String,
    /// SHA-256 of the DER certificate, lower-case hex.
    pub sha256: String,
    pub not_before: i64,
    pub not_after: i64,
}

pub fn cert_info(der: &[u8]) -> Result<CertInfo, String> {
    let (_, c) = X509Certificate::from_der(der).map_err(|e| format!("bad certificate: {e}"))?;
    Ok(CertInfo {
        subject: crate::identity::rfc4514(c.subject()).unwrap_or_else(|e| e.to_string()),
        sha256: aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, der)
            .as_ref()
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect(),
        not_before: c.validity().not_before.timestamp(),
        not_after: c.validity().not_after.timestamp(),
    })
}

pub fn now_secs() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

pub fn fmt_time(secs: i64) -> String {
    let t = std::time::UNIX_EPOCH + std::time::Duration::from_secs(secs.max(0) as u64);
    humantime::format_rfc3339_seconds(t).to_string()
}
