//! TLS: building rustls configs from the file, and the one module that drives
//! rustls connections (`stream`). Nothing else in the gateway calls rustls.

pub mod client;
mod engine;
pub mod material;
pub mod peer_verifier;
pub mod server;
pub mod session_cache;
pub mod stream;
pub mod tickets;
pub mod verified;

pub use stream::{TlsError, TlsStream};

/// A partner's TLS connection, as the rest of the gateway names it.
pub type ServerStream = TlsStream<UnbufferedServerConnection>;
/// An origin's TLS connection.
pub type ClientStream = TlsStream<rustls::client::UnbufferedClientConnection>;
/// A listener's server config on one worker.
pub type ServerConfig = std::sync::Arc<rustls::ServerConfig>;

/// Starts a server-side TLS connection on an accepted socket.
pub fn accept(
    tcp: tokio_uring::net::TcpStream,
    config: ServerConfig,
) -> Result<ServerStream, String> {
    let conn = UnbufferedServerConnection::new(config)
        .map_err(|e| format!("cannot create TLS connection: {e}"))?;
    Ok(TlsStream::new(tcp, conn))
}

use crate::outcome::Outcome;
use rustls::server::UnbufferedServerConnection;
use rustls::{CertificateError, CommonState, Error, HandshakeKind};
use server::ListenerTls;
use std::rc::Rc;
use verified::{Verified, VerifiedCache};

/// Why a handshake (or the post-handshake identity check) failed.
pub fn reason(e: &TlsError) -> Outcome {
    match e {
        TlsError::PeerClosed => Outcome::PeerClosed,
        TlsError::Io(_) => Outcome::IoError,
        TlsError::Tls(e) => tls_reason(e),
    }
}

pub fn tls_reason(e: &Error) -> Outcome {
    match e {
        Error::NoCertificatesPresented => Outcome::NoClientCert,
        Error::InvalidCertificate(c) => match c {
            CertificateError::UnknownIssuer => Outcome::UnknownCa,
            CertificateError::Expired | CertificateError::ExpiredContext { .. } => Outcome::Expired,
            CertificateError::NotValidYet | CertificateError::NotValidYetContext { .. } => {
                Outcome::NotYetValid
            }
            CertificateError::Revoked => Outcome::Revoked,
            CertificateError::BadSignature => Outcome::BadSignature,
            CertificateError::InvalidPurpose | CertificateError::InvalidPurposeContext { .. } => {
                Outcome::BadEku
            }
            CertificateError::UnknownRevocationStatus => Outcome::UnknownRevocation,
            c if peer_verifier::is_identity_refusal(c) => Outcome::BadIdentity,
            CertificateError::ExpiredRevocationList
            | CertificateError::ExpiredRevocationListContext { .. } => Outcome::StaleCrl,
            _ => Outcome::BadCert,
        },
        Error::AlertReceived(_) => Outcome::AlertReceived,
        Error::PeerIncompatible(_) => Outcome::Incompatible,
        _ => Outcome::ProtocolError,
    }
}

/// Full or resumed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Kind {
    Full,
    Resumed,
}

impl Kind {
    pub fn label(self) -> &'static str {
        match self {
            Kind::Full => "full",
            Kind::Resumed => "resumed",
        }
    }
}

/// What a server handshake settled, for the rest of the gateway (which never
/// names rustls): kind, version, suite, key-exchange group, the verified
/// partner, and its two clocks.
pub struct HandshakeInfo {
    pub kind: Kind,
    /// "1.3", "1.2" (or "none" when a failed handshake got no version).
    pub version: &'static str,
    /// The negotiated suite's IANA name (rustls spelling).
    pub cipher: Option<&'static str>,
    /// "x25519", "x25519mlkem768", "secp256r1", "secp384r1", "none" (TLS 1.2
    /// resumption, or a handshake that failed before one), "other".
    pub group: &'static str,
    pub peer: Option<Rc<Verified>>,
    /// The server name the client sent (SNI).
    pub sni: Option<String>,
}

/// Version and group of a (possibly failed) handshake, as far as it got.
pub fn version_group(conn: &CommonState) -> (&'static str, &'static str) {
    let version = match conn.protocol_version() {
        Some(rustls::ProtocolVersion::TLSv1_3) => "1.3",
        Some(rustls::ProtocolVersion::TLSv1_2) => "1.2",
        Some(_) => "other",
        None => "none",
    };
    let group = match conn.negotiated_key_exchange_group().map(|g| g.name()) {
        None => "none",
        Some(rustls::NamedGroup::X25519) => "x25519",
        Some(rustls::NamedGroup::X25519MLKEM768) => "x25519mlkem768",
        Some(rustls::NamedGroup::secp256r1) => "secp256r1",
        Some(rustls::NamedGroup::secp384r1) => "secp384r1",
        Some(_) => "other",
    };
    (version, group)
}

/// Reads the outcome of a completed handshake. For a resumed one the restored
/// client chain is verified again (expiry, CRL; see `verified`): rustls does
/// not re-verify it, and a partner revoked or expired since must not slip in.
/// The error names the partner when the chain gives one. `sni` is the name
/// the client sent (`TlsStream::server_name`).
pub fn session(
    conn: &CommonState,
    sni: Option<String>,
    tls: &ListenerTls,
    cache: &mut VerifiedCache,
) -> Result<HandshakeInfo, (Outcome, Option<String>, Kind)> {
    let kind = match conn.handshake_kind() {
        Some(HandshakeKind::Resumed) => Kind::Resumed,
        _ => Kind::Full,
    };
    let (version, group) = version_group(conn);
    let peer = match conn.peer_certificates() {
        Some(chain) if !chain.is_empty() => {
            let v = cache
                .check(tls, chain, kind == Kind::Resumed)
                .map_err(|o| {
                    // The chain verified when the session began, so it is the
                    // partner's; but only its own certificate's state is its
                    // doing (a stale CRL or a CA removed on reload is ours).
                    let theirs = matches!(
                        o,
                        Outcome::Revoked | Outcome::Expired | Outcome::NotYetValid
                    );
                    let who = chain
                        .first()
                        .filter(|_| theirs)
                        .and_then(|c| crate::identity::PeerId::from_der(c).ok())
                        .map(|p| p.label().to_string());
                    (o, who, kind)
                })?;
            Some(v)
        }
        _ => None,
    };
    Ok(HandshakeInfo {
        kind,
        version,
        group,
        cipher: conn
            .negotiated_cipher_suite()
            .and_then(|c| c.suite().as_str()),
        peer,
        sni,
    })
}
