//! The listener's client verifier: webpki's chain and CRL verdict, then the
//! identity rules of `identity`, so a certificate whose names a header could
//! not carry is refused in the handshake (with an alert), not after it.

use crate::identity::{self, IdentityError};
use rustls::client::danger::HandshakeSignatureValid;
use rustls::pki_types::{CertificateDer, UnixTime};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::{CertificateError, DigitallySignedStruct, DistinguishedName, OtherError};
use rustls::{Error, SignatureScheme};
use std::sync::Arc;

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
        let ok = self
            .inner
            .verify_client_cert(end_entity, intermediates, now)?;
        // Only a chain the CA vouches for gets this far, so a stranger can't make
        // us parse arbitrary DER. Checked only: the identity itself is built once
        // per chain after the handshake (`verified`), where it is kept.
        identity::check_der(end_entity).map_err(refused)?;
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
