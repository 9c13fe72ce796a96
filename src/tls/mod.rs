//! TLS: building rustls configs from the file, and the one module that drives
//! rustls connections (`stream`). Nothing else in the gateway calls rustls.

pub mod client;
pub mod material;
pub mod peer_verifier;
pub mod server;
pub mod session_cache;
pub mod stream;
pub mod tickets;
pub mod verified;

pub use stream::{TlsError, TlsStream};

use rustls::{CertificateError, Error, HandshakeKind, ServerConnection};
use server::ListenerTls;
use std::rc::Rc;
use verified::{Verified, VerifiedCache};

/// Why a handshake (or the post-handshake identity check) failed: the metric label.
pub fn reason(e: &TlsError) -> &'static str {
    match e {
        TlsError::PeerClosed => "peer_closed",
        TlsError::Io(_) => "io_error",
        TlsError::Tls(e) => tls_reason(e),
    }
}

pub fn tls_reason(e: &Error) -> &'static str {
    match e {
        Error::NoCertificatesPresented => "no_cert",
        Error::InvalidCertificate(c) => match c {
            CertificateError::UnknownIssuer => "unknown_ca",
            CertificateError::Expired | CertificateError::ExpiredContext { .. } => "expired",
            CertificateError::NotValidYet | CertificateError::NotValidYetContext { .. } => {
                "not_yet_valid"
            }
            CertificateError::Revoked => "revoked",
            CertificateError::BadSignature => "bad_signature",
            CertificateError::InvalidPurpose | CertificateError::InvalidPurposeContext { .. } => {
                "bad_eku"
            }
            CertificateError::UnknownRevocationStatus => "unknown_revocation",
            c if peer_verifier::is_identity_refusal(c) => "bad_identity",
            CertificateError::ExpiredRevocationList
            | CertificateError::ExpiredRevocationListContext { .. } => "stale_crl",
            _ => "bad_cert",
        },
        Error::AlertReceived(_) => "alert_received",
        Error::PeerIncompatible(_) => "incompatible",
        _ => "protocol_error",
    }
}

/// The TLS details of a finished server handshake.
pub struct Session {
    pub resumed: bool,
    pub version: &'static str,
    /// The negotiated suite's IANA name (rustls spelling).
    pub cipher: Option<&'static str>,
    pub peer: Option<Rc<Verified>>,
    /// The server name the client sent (SNI).
    pub sni: Option<String>,
}

/// Reads the outcome of a completed handshake. For a resumed one the restored
/// client chain is verified again (expiry, CRL; see `verified`): rustls does
/// not re-verify it, and a partner revoked or expired since must not slip in.
pub fn session(
    conn: &ServerConnection,
    tls: &ListenerTls,
    cache: &mut VerifiedCache,
) -> Result<Session, &'static str> {
    let resumed = conn.handshake_kind() == Some(HandshakeKind::Resumed);
    let version = match conn.protocol_version() {
        Some(rustls::ProtocolVersion::TLSv1_3) => "1.3",
        Some(rustls::ProtocolVersion::TLSv1_2) => "1.2",
        _ => "other",
    };
    let peer = match conn.peer_certificates() {
        Some(chain) if !chain.is_empty() => Some(cache.check(tls, chain, resumed)?),
        _ => None,
    };
    Ok(Session {
        resumed,
        version,
        cipher: conn
            .negotiated_cipher_suite()
            .and_then(|c| c.suite().as_str()),
        peer,
        sni: conn.server_name().map(str::to_string),
    })
}
