//! Per-worker cache of client chains the listener's verifier has accepted.
//!
//! rustls restores a resumed session's client chain without verifying it, so
//! each resumed handshake must be checked again. The verifier's answer for a
//! chain depends only on the chain, the CA and CRL set (fixed for one verifier
//! instance) and the time; so once a chain has verified, it stays valid until
//! the earliest notAfter in it or, when stale CRLs are refused, the earliest CRL
//! nextUpdate. Within that bound a resumed handshake skips the signature work;
//! past it, or with a new verifier (CRL reload), the verifier runs again.
//! The identity (and its XFCC value) is parsed once per chain, not per connection.

use super::material;
use super::server::ListenerTls;
use crate::header::HeaderValue;
use crate::identity::{IdentityError, PeerId};
use crate::outcome::Outcome;
use rustls::pki_types::{CertificateDer, UnixTime};
use rustls::server::danger::ClientCertVerifier;
use std::collections::HashMap;
use std::rc::Rc;
use std::sync::Arc;
use x509_parser::prelude::{FromDer, X509Certificate};

/// A verified identity, shared by every connection of that partner on a worker.
pub struct Verified {
    pub peer: PeerId,
    pub xfcc: HeaderValue,
    leaf: Vec<u8>,
    intermediates: Vec<Vec<u8>>,
    valid_until: i64,
}

const MAX_ENTRIES: usize = 4096;

#[derive(Default)]
pub struct VerifiedCache {
    map: HashMap<Vec<u8>, Rc<Verified>>,
    /// The verifier the entries were made under. Held, not just its address:
    /// a freed verifier's address can be reused by the next reload's.
    verifier: Option<Arc<dyn ClientCertVerifier>>,
}

/// notAfter of each intermediate (the leaf's comes with its `PeerId`);
/// `None` if one can't be read, so nothing is cached for that chain.
fn earliest_not_after(intermediates: &[CertificateDer<'_>]) -> Option<i64> {
    intermediates.iter().try_fold(i64::MAX, |acc, c| {
        let (_, cert) = X509Certificate::from_der(c).ok()?;
        Some(acc.min(cert.validity().not_after.timestamp()))
    })
}

impl Verified {
    /// The client certificate, DER.
    pub fn leaf(&self) -> &[u8] {
        &self.leaf
    }

    /// Whether the chain still verifies under `tls`'s (reloaded) CAs and CRLs.
    pub fn still_valid(&self, tls: &ListenerTls) -> bool {
        let leaf = CertificateDer::from(self.leaf.as_slice());
        let rest: Vec<CertificateDer<'_>> = self
            .intermediates
            .iter()
            .map(|c| CertificateDer::from(c.as_slice()))
            .collect();
        tls.verifier
            .verify_client_cert(&leaf, &rest, UnixTime::now())
            .is_ok()
    }
}

impl VerifiedCache {
    /// The identity behind `chain` (leaf first). `resumed`: rustls did not verify
    /// it in this handshake, so it must be verified (or found verified) here.
    /// The error is the failure reason label.
    pub fn check(
        &mut self,
        tls: &ListenerTls,
        chain: &[CertificateDer<'_>],
        resumed: bool,
    ) -> Result<Rc<Verified>, Outcome> {
        let Some((leaf, rest)) = chain.split_first() else {
            return Err(Outcome::NoClientCert);
        };
        let now = material::now_secs();
        if !self
            .verifier
            .as_ref()
            .is_some_and(|v| Arc::ptr_eq(v, &tls.verifier))
        {
            self.map.clear();
            self.verifier = Some(tls.verifier.clone());
        }
        if let Some(v) = self.map.get(leaf.as_ref()) {
            let same_chain = v.intermediates.len() == rest.len()
                && v.intermediates
                    .iter()
                    .zip(rest)
                    .all(|(a, b)| a[..] == b[..]);
            if same_chain && now < v.valid_until {
                return Ok(v.clone());
            }
        }
        if resumed {
            tls.verifier
                .verify_client_cert(leaf, rest, UnixTime::now())
                .map_err(|e| super::tls_reason(&e))?;
        }
        let peer = PeerId::from_der(leaf).map_err(|e| match e {
            IdentityError::Control(_) | IdentityError::NotText(_) => Outcome::BadIdentity,
            IdentityError::Unparsable(_) => Outcome::BadCert,
        })?;
        let mut valid_until = earliest_not_after(rest).unwrap_or(now).min(peer.not_after);
        if let Some(crl) = tls.crl_valid_until {
            valid_until = valid_until.min(crl);
        }
        // `check_str` keeps control characters out of the identity, so this holds;
        // the constructor is still the one gate on every header value.
        let xfcc = HeaderValue::new(peer.xfcc()).map_err(|_| Outcome::BadIdentity)?;
        let v = Rc::new(Verified {
            xfcc,
            peer,
            leaf: leaf.to_vec(),
            intermediates: rest.iter().map(|c| c.to_vec()).collect(),
            valid_until,
        });
        if self.map.len() >= MAX_ENTRIES {
            self.map.clear();
        }
        self.map.insert(leaf.to_vec(), v.clone());
        Ok(v)
    }
}
