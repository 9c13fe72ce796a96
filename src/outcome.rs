//! How a connection or request ended that did not succeed: one typed value
//! that knows its side (the partner, the origin, or the gateway itself) and
//! its reason. Metrics, logs and `/stats` all read this one value.

use std::fmt;

/// Whose doing an outcome is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Side {
    /// The partner: its certificate, its bytes, its pace.
    Downstream,
    /// The origin the gateway forwards to.
    Upstream,
    /// The gateway's own limits or state.
    Internal,
}

impl Side {
    pub fn label(self) -> &'static str {
        match self {
            Side::Downstream => "downstream",
            Side::Upstream => "upstream",
            Side::Internal => "internal",
        }
    }
}

/// A failed handshake, refused connection, or failed request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Outcome {
    // The partner's certificate.
    NoClientCert,
    UnknownCa,
    Expired,
    NotYetValid,
    Revoked,
    BadEku,
    BadSignature,
    BadIdentity,
    BadCert,
    UnknownRevocation,
    StaleCrl,
    // The partner's handshake or connection.
    AlertReceived,
    Incompatible,
    ProtocolError,
    HandshakeTimeout,
    PeerClosed,
    /// The socket failed mid-handshake (reset by the peer, or another error).
    IoError,
    BadProxyHeader,
    DeniedByPolicy,
    // The gateway's limits.
    HandshakeLimit,
    ConnectionLimit,
    SourceLimit,
    PartnerConnectionLimit,
    PartnerRateLimit,
    /// Neither side moved a byte for `idle_timeout` (tcp mode).
    IdleTimeout,
    Internal,
    // The origin.
    UpstreamRefused,
    UpstreamTimeout,
    UpstreamTls,
    UpstreamBadResponse,
    UpstreamWriteFailed,
    UpstreamProxyHeader,
    /// The origin's side of a tcp-mode pipe broke (reset, error).
    UpstreamReset,
    PoolExhausted,
}

impl Outcome {
    pub fn side(self) -> Side {
        use Outcome::*;
        match self {
            HandshakeLimit
            | ConnectionLimit
            | SourceLimit
            | PartnerConnectionLimit
            | PartnerRateLimit
            | Internal
            | PoolExhausted => Side::Internal,
            UpstreamRefused | UpstreamTimeout | UpstreamTls | UpstreamBadResponse
            | UpstreamWriteFailed | UpstreamProxyHeader => Side::Upstream,
            _ => Side::Downstream,
        }
    }

    /// The metric label (stable: dashboards and alerts name these).
    pub fn label(self) -> &'static str {
        use Outcome::*;
        match self {
            NoClientCert => "no_cert",
            UnknownCa => "unknown_ca",
            Expired => "expired",
            NotYetValid => "not_yet_valid",
            Revoked => "revoked",
            BadEku => "bad_eku",
            BadSignature => "bad_signature",
            BadIdentity => "bad_identity",
            BadCert => "bad_cert",
            UnknownRevocation => "unknown_revocation",
            StaleCrl => "stale_crl",
            AlertReceived => "alert_received",
            Incompatible => "incompatible",
            ProtocolError => "protocol_error",
            HandshakeTimeout => "timeout",
            PeerClosed => "peer_closed",
            IoError => "io_error",
            BadProxyHeader => "bad_proxy_header",
            DeniedByPolicy => "denied_by_policy",
            HandshakeLimit => "handshake_limit",
            ConnectionLimit => "connection_limit",
            SourceLimit => "source_limit",
            PartnerConnectionLimit => "partner_connection_limit",
            PartnerRateLimit => "partner_rate_limit",
            IdleTimeout => "idle_timeout",
            Internal => "internal",
            UpstreamRefused => "connect_failed",
            UpstreamTimeout => "connect_timeout",
            UpstreamTls => "tls_failed",
            UpstreamBadResponse => "bad_response",
            UpstreamWriteFailed => "write_failed",
            UpstreamProxyHeader => "proxy_header_failed",
            UpstreamReset => "upstream_reset",
            PoolExhausted => "pool_exhausted",
        }
    }
}

impl fmt::Display for Outcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.label())
    }
}

impl serde::Serialize for Outcome {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.label())
    }
}

#[cfg(test)]
mod tests {
    use super::Outcome;

    #[test]
    fn every_outcome_has_a_distinct_label() {
        let all = [
            Outcome::NoClientCert,
            Outcome::UnknownCa,
            Outcome::Expired,
            Outcome::NotYetValid,
            Outcome::Revoked,
            Outcome::BadEku,
            Outcome::BadSignature,
            Outcome::BadIdentity,
            Outcome::BadCert,
            Outcome::UnknownRevocation,
            Outcome::StaleCrl,
            Outcome::AlertReceived,
            Outcome::Incompatible,
            Outcome::ProtocolError,
            Outcome::HandshakeTimeout,
            Outcome::PeerClosed,
            Outcome::IoError,
            Outcome::BadProxyHeader,
            Outcome::DeniedByPolicy,
            Outcome::HandshakeLimit,
            Outcome::ConnectionLimit,
            Outcome::SourceLimit,
            Outcome::PartnerConnectionLimit,
            Outcome::PartnerRateLimit,
            Outcome::IdleTimeout,
            Outcome::Internal,
            Outcome::UpstreamRefused,
            Outcome::UpstreamTimeout,
            Outcome::UpstreamTls,
            Outcome::UpstreamBadResponse,
            Outcome::UpstreamWriteFailed,
            Outcome::UpstreamProxyHeader,
            Outcome::UpstreamReset,
            Outcome::PoolExhausted,
        ];
        let labels: std::collections::BTreeSet<&str> = all.iter().map(|o| o.label()).collect();
        assert_eq!(labels.len(), all.len());
    }
}
