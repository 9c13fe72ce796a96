//! The listener's client verifier: webpki's chain and CRL verdict, then the
//! identity rules of `identity`, so a certificate whose names a header could
//! not carry is refused in the handshake (with an alert), not after it.

use crate::identity::{self, IdentityError};
use rustls::client::danger::HandshakeSignatureValid;
use rustls::pki_types::{CertificateDer, UnixTime};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::{CertificateError, DigitallySignedStruct, DistinguishedName, OtherError};
use rustls::{Error, SignatureScheme};
use std::cell::RefCell;
use std::collections::HashSet;
use std::sync::Arc;
use x509_parser::prelude::FromDer;

thread_local! {
    /// The partner a refusal on this thread was for, when it is known to be
    /// one (see `attribute`); taken by `stream` right after the rustls call
    /// that refused, before any other connection's handshake runs.
    static REFUSED: RefCell<Option<String>> = const { RefCell::new(None) };
}

thread_local! {
    /// Leaves whose names passed `identity::check_der` on this thread, so a
    /// partner reconnecting with its certificate is not parsed again on every
    /// full handshake (≈ 8 µs each). Only chains the CA vouches for get here.
    static CHECKED: RefCell<HashSet<Box<[u8]>>> = RefCell::new(HashSet::new());
}

/// Bounds `CHECKED` (≈ 1 MiB per worker of typical leaves); full, it starts over.
const CHECKED_MAX: usize = 1024;

/// `identity::check_der`, remembered per leaf for the ones that pass (the
/// verdict depends on the certificate's bytes alone).
fn check_identity(der: &[u8]) -> Result<(), IdentityError> {
    if CHECKED.with(|c| c.borrow().contains(der)) {
        return Ok(());
    }
    identity::check_der(der)?;
    CHECKED.with(|c| {
        let mut c = c.borrow_mut();
        if c.len() >= CHECKED_MAX {
            c.clear();
        }
        c.insert(der.into());
    });
    Ok(())
}

/// The refused partner the last verification on this thread named, if any.
pub fn take_refused() -> Option<String> {
    REFUSED.with(|r| r.borrow_mut().take())
}

#[derive(Debug)]
pub struct PeerVerifier {
    pub inner: Arc<dyn ClientCertVerifier>,
}

/// The error a refused identity becomes inside rustls (alert: certificate_unknown).
fn refused(e: IdentityError) -> Error {
    Error::InvalidCertificate(CertificateError::Other(OtherError(Arc::new(e))))
}

/// True when a rustls error is our identity refusal (the `bad_identity` label).
pub fn is_identity_refusal(e: &CertificateError) -> bool {
    matches!(e, CertificateError::Other(o) if o.0.downcast_ref::<IdentityError>().is_some())
}

impl PeerVerifier {
    /// Which partner a refusal is for, only when the chain is the CA's: a
    /// revocation is found on a chain built to a trusted root; an expired (or
    /// not yet valid) certificate counts as the partner's only if the chain
    /// verifies at a moment it was valid. Anything else (unknown CA, bad
    /// signature…) names nobody: a stranger must not get failures counted
    /// under a name of its choosing.
    fn attribute(
        &self,
        e: &Error,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
    ) -> Option<String> {
        let Error::InvalidCertificate(c) = e else {
            return None;
        };
        let then = match c {
            CertificateError::Revoked => None,
            CertificateError::Expired | CertificateError::ExpiredContext { .. } => {
                Some(identity::PeerId::from_der(end_entity).ok()?.not_after - 1)
            }
            CertificateError::NotValidYet | CertificateError::NotValidYetContext { .. } => {
                let (_, cert) = x509_parser::prelude::X509Certificate::from_der(end_entity).ok()?;
                Some(cert.validity().not_before.timestamp() + 1)
            }
            _ => return None,
        };
        if let Some(t) = then {
            let at =
                UnixTime::since_unix_epoch(std::time::Duration::from_secs(u64::try_from(t).ok()?));
            self.inner
                .verify_client_cert(end_entity, intermediates, at)
                .ok()?;
        }
        identity::PeerId::from_der(end_entity)
            .ok()
            .map(|p| p.label().to_string())
    }
}

impl ClientCertVerifier for PeerVerifier {
    fn offer_client_auth(&self) -> bool {
        self.inner.offer_client_auth()
    }
    fn client_auth_mandatory(&self) -> bool {
        self.inner.client_auth_mandatory()
    }
    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        self.inner.root_hint_subjects()
    }
    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<ClientCertVerified, Error> {
        let ok = match self
            .inner
            .verify_client_cert(end_entity, intermediates, now)
        {
            Ok(ok) => ok,
            Err(e) => {
                let who = self.attribute(&e, end_entity, intermediates);
                REFUSED.with(|r| *r.borrow_mut() = who);
                return Err(e);
            }
        };
        // Only a chain the CA vouches for gets this far, so a stranger can't make
        // us parse arbitrary DER. Checked only: the identity itself is built once
        // per chain after the handshake (`verified`), where it is kept.
        check_identity(end_entity).map_err(refused)?;
        Ok(ok)
    }
    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, Error> {
        self.inner.verify_tls12_signature(message, cert, dss)
    }
    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, Error> {
        self.inner.verify_tls13_signature(message, cert, dss)
    }
    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.inner.supported_verify_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::check_identity;
    use crate::demo::pki::{Ca, ClientSpec};

    #[test]
    fn a_leaf_whose_names_fail_is_refused_every_time_and_a_good_one_is_remembered() {
        let ca = Ca::new("check CA").expect("test CA"); // ok: test set-up
        let good = ca
            .client(&ClientSpec::named("Good Partner").uri("spiffe://partner.example/good"))
            .expect("good leaf"); // ok: test set-up
        let bad = ca
            .client(&ClientSpec::named("Bad\r\nX-Injected: 1"))
            .expect("bad leaf"); // ok: test set-up
        for _ in 0..3 {
            assert!(
                check_identity(&bad.der).is_err(),
                "a refusal is never cached"
            );
            assert!(check_identity(&good.der).is_ok());
        }
        assert!(super::CHECKED.with(|c| c.borrow().contains(&good.der[..])));
        assert!(!super::CHECKED.with(|c| c.borrow().contains(&bad.der[..])));
    }
}
