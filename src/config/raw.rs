//! The config file exactly as written: serde structs with no interpretation.
//!
//! Every struct denies unknown keys so a typo is an error naming the key,
//! not a silently ignored setting.

use serde::Deserialize;
use std::collections::BTreeMap;
use std::time::Duration;

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct RawConfig {
    pub workers: Option<usize>,
    pub log_format: Option<String>,
    pub log_requests: Option<bool>,
    pub ticket_keys: Option<String>,
    pub ring_entries: Option<u32>,
    pub sqpoll_idle_ms: Option<u32>,
    pub nofile: Option<u64>,
    #[serde(default, with = "humantime_serde")]
    pub ticket_lifetime: Option<Duration>,
    #[serde(default, with = "humantime_serde")]
    pub ticket_rotation: Option<Duration>,
    #[serde(default, with = "humantime_serde")]
    pub drain_timeout: Option<Duration>,
    pub partner_cap: Option<usize>,
    #[serde(default)]
    pub admin: Option<RawAdmin>,
    pub access_log: Option<RawAccessLog>,
    pub hdr_log: Option<RawHdrLog>,
    #[serde(default)]
    pub listener: Vec<RawListener>,
    #[serde(default)]
    pub upstream: BTreeMap<String, RawUpstream>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawHdrLog {
    pub path: String,
    #[serde(default, with = "humantime_serde")]
    pub interval: Option<Duration>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawAccessLog {
    pub path: String,
    pub format: Option<String>,
}

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct RawAdmin {
    pub bind: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawListener {
    pub name: Option<String>,
    pub bind: String,
    pub mode: Option<String>,
    pub upstream: Option<String>,
    pub allow: Option<Vec<String>>,
    pub backlog: Option<u32>,
    pub nodelay: Option<bool>,
    #[serde(default, with = "humantime_serde")]
    pub handshake_timeout: Option<Duration>,
    #[serde(default, with = "humantime_serde")]
    pub header_timeout: Option<Duration>,
    #[serde(default, with = "humantime_serde")]
    pub idle_timeout: Option<Duration>,
    pub max_header_bytes: Option<usize>,
    pub max_connections: Option<usize>,
    pub max_handshakes: Option<usize>,
    pub allow_path_params: Option<bool>,
    pub request_buffer_bytes: Option<usize>,
    pub max_body_bytes: Option<u64>,
    #[serde(default, with = "humantime_serde")]
    pub body_timeout: Option<Duration>,
    pub min_body_rate: Option<u64>,
    #[serde(default, with = "humantime_serde")]
    pub send_timeout: Option<Duration>,
    /// Expect a PROXY protocol v2 header before TLS on every connection.
    pub proxy_protocol: Option<bool>,
    /// The balancers' addresses (CIDRs) a PROXY header is taken from.
    pub proxy_protocol_from: Option<Vec<String>>,
    pub tls: RawServerTls,
    #[serde(default)]
    pub route: Vec<RawRoute>,
    pub limits: Option<RawLimits>,
}

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct RawLimits {
    pub max_connections_per_partner: Option<u32>,
    pub requests_per_second_per_partner: Option<f64>,
    pub burst: Option<u32>,
    pub max_handshakes_per_source: Option<u32>,
    #[serde(default)]
    pub partner: Vec<RawPartnerLimits>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawPartnerLimits {
    pub identity: String,
    pub max_connections: Option<u32>,
    pub requests_per_second: Option<f64>,
    pub burst: Option<u32>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawServerTls {
    pub cert: Option<String>,
    pub key: Option<String>,
    #[serde(default)]
    pub certs: Vec<RawCertEntry>,
    pub client_ca: Option<String>,
    pub client_auth: Option<String>,
    #[serde(default)]
    pub crl: Vec<String>,
    pub crl_check: Option<String>,
    pub crl_allow_stale: Option<bool>,
    pub crl_allow_unknown: Option<bool>,
    pub close_revoked: Option<bool>,
    pub versions: Option<Vec<String>>,
    pub groups: Option<Vec<String>>,
    pub suites: Option<Vec<String>>,
    pub prefer_client_suites: Option<bool>,
    pub tickets: Option<usize>,
    pub session_tickets: Option<bool>,
    pub session_cache: Option<usize>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawCertEntry {
    pub cert: String,
    pub key: String,
    #[serde(default)]
    pub sni: Vec<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawRoute {
    pub path_prefix: String,
    pub case_insensitive: Option<bool>,
    pub upstream: Option<String>,
    pub allow: Option<Vec<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawUpstream {
    pub addrs: Vec<String>,
    #[serde(default, with = "humantime_serde")]
    pub connect_timeout: Option<Duration>,
    #[serde(default, with = "humantime_serde")]
    pub response_timeout: Option<Duration>,
    pub pool_size: Option<usize>,
    /// Send a PROXY protocol v2 header (with the verified identity) first (tcp mode).
    pub proxy_protocol: Option<bool>,
    pub tls: Option<RawUpstreamTls>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawUpstreamTls {
    pub ca: String,
    pub cert: Option<String>,
    pub key: Option<String>,
    pub server_name: String,
}
