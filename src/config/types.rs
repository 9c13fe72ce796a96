//! The validated, typed configuration the gateway runs on (and `ConfigError`).

use crate::authz::AllowList;
use std::collections::BTreeMap;
use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

/// A configuration problem: which file, which key, what is wrong.
#[derive(Debug, Clone)]
pub struct ConfigError {
    pub file: PathBuf,
    pub key: String,
    pub msg: String,
}

impl ConfigError {
    pub fn new(file: &Path, key: impl Into<String>, msg: impl Into<String>) -> Self {
        ConfigError {
            file: file.to_path_buf(),
            key: key.into(),
            msg: msg.into(),
        }
    }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.key.is_empty() {
            write!(f, "{}: {}", self.file.display(), self.msg)
        } else {
            write!(f, "{}: {}: {}", self.file.display(), self.key, self.msg)
        }
    }
}

impl std::error::Error for ConfigError {}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    Http,
    Tcp,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CrlCheck {
    /// Check revocation of the whole chain (every certificate needs a CRL).
    Chain,
    /// Check only the client's own certificate.
    Leaf,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AccessLogFormat {
    Json,
    Text,
}

/// Where request lines go when not to the process log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AccessLogConfig {
    pub path: PathBuf,
    pub format: AccessLogFormat,
}

/// Where and how often handshake histograms are appended (V2 log format).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HdrLogConfig {
    pub path: PathBuf,
    pub interval: Duration,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, Clone)]
pub struct CertEntry {
    pub cert: PathBuf,
    pub key: PathBuf,
    pub sni: Vec<String>,
}

#[derive(Debug, Clone)]
pub struct ServerTlsConfig {
    pub certs: Vec<CertEntry>,
    pub client_ca: Option<PathBuf>,
    pub client_auth_required: bool,
    pub crls: Vec<PathBuf>,
    pub crl_check: CrlCheck,
    pub crl_allow_stale: bool,
    pub crl_allow_unknown: bool,
    /// On a CRL reload, close open connections whose certificate it revokes.
    pub close_revoked: bool,
    pub tls13: bool,
    pub tls12: bool,
    pub groups: Option<Vec<String>>,
    pub suites: Option<Vec<String>>,
    /// Follow the client's suite order instead of the server's.
    pub prefer_client_suites: bool,
    pub tickets: usize,
    pub session_tickets: bool,
    /// Entries of the stateful session cache; 0 = off.
    pub session_cache: usize,
}

#[derive(Debug, Clone)]
pub struct RouteConfig {
    pub path_prefix: String,
    /// Match the prefix ASCII-case-insensitively (for backends that fold case).
    pub case_insensitive: bool,
    pub upstream: String,
    pub allow: Option<AllowList>,
}

#[derive(Debug, Clone)]
pub struct ListenerConfig {
    pub name: String,
    pub bind: SocketAddr,
    pub mode: Mode,
    pub upstream: Option<String>,
    pub allow: Option<AllowList>,
    pub backlog: u32,
    pub nodelay: bool,
    pub handshake_timeout: Duration,
    pub header_timeout: Duration,
    pub idle_timeout: Duration,
    pub max_header_bytes: usize,
    pub max_connections: usize,
    pub max_handshakes: usize,
    pub http: HttpRules,
    pub tls: ServerTlsConfig,
    pub routes: Vec<RouteConfig>,
    /// A PROXY protocol v2 header comes first on every connection.
    pub proxy_protocol: bool,
    /// Peers a PROXY header is accepted from (the balancers); anyone else is refused.
    pub proxy_protocol_from: Vec<ipnet::IpNet>,
    pub limits: LimitsConfig,
}

/// Per-partner and per-source limits of one listener (all off by default).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct LimitsConfig {
    pub default: crate::limits::PartnerLimits,
    /// By exact partner identity (SPIFFE ID, else subject); replaces the default whole.
    pub partners: BTreeMap<String, crate::limits::PartnerLimits>,
    pub source: crate::limits::SourceLimits,
}

/// How an http listener reads requests and writes to partners.
#[derive(Debug, Clone, Copy)]
pub struct HttpRules {
    /// Keep `;` path parameters (ignored for routing) instead of refusing them.
    pub allow_path_params: bool,
    /// Bodies up to this size are read whole before an upstream is leased.
    pub request_buffer_bytes: usize,
    /// Larger request bodies get 413; `None`: no limit.
    pub max_body_bytes: Option<u64>,
    /// How long a body may take to arrive (plus 1 s per `min_body_rate` bytes when streamed).
    pub body_timeout: Duration,
    /// Bytes per second a streamed body must keep up on average.
    pub min_body_rate: u64,
    /// Deadline of every write to the partner.
    pub send_timeout: Duration,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UpstreamTlsConfig {
    pub ca: PathBuf,
    pub cert: Option<PathBuf>,
    pub key: Option<PathBuf>,
    pub server_name: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UpstreamConfig {
    pub name: String,
    pub addrs: Vec<SocketAddr>,
    pub connect_timeout: Duration,
    pub response_timeout: Duration,
    pub pool_size: usize,
    /// Send a PROXY protocol v2 header with the verified identity (tcp mode).
    pub proxy_protocol: bool,
    pub tls: Option<UpstreamTlsConfig>,
}

#[derive(Debug, Clone)]
pub struct Config {
    pub path: PathBuf,
    pub workers: usize,
    pub admin_bind: Option<SocketAddr>,
    pub log_format: LogFormat,
    pub log_requests: bool,
    /// io_uring submission queue entries per worker ring.
    pub ring_entries: u32,
    /// SQPOLL kernel thread idle time in ms; 0 = no SQPOLL.
    pub sqpoll_idle_ms: u32,
    /// Open-file limit to ask for (capped by the hard limit); None = the hard limit.
    pub nofile: Option<u64>,
    pub tickets: TicketConfig,
    /// After SIGTERM: how long in-flight requests get to finish.
    pub drain_timeout: Duration,
    /// Distinct partners with metric series of their own; the rest are `other`.
    pub partner_cap: usize,
    /// A buffered access-log file instead of request lines in the process log.
    pub access_log: Option<AccessLogConfig>,
    /// An HDR interval log of handshake latency.
    pub hdr_log: Option<HdrLogConfig>,
    pub listeners: Vec<ListenerConfig>,
    pub upstreams: BTreeMap<String, Arc<UpstreamConfig>>,
}

/// Session-ticket keys: from a fleet-wide file, or random in memory.
#[derive(Debug, Clone)]
pub struct TicketConfig {
    pub key_file: Option<PathBuf>,
    /// How long a ticket resumes (and the lifetime hint sent to clients).
    pub lifetime: Duration,
    /// In-memory keys only: how often they rotate.
    pub rotation: Duration,
}

pub const DEFAULT_ADMIN: &str = "127.0.0.1:9901";
/// One ticket per handshake serves clients that resume one connection at a
/// time (curl, OpenSSL, Go, Java keep only the newest); see README.
pub const DEFAULT_TICKETS: usize = 1;
pub const DEFAULT_TICKET_LIFETIME: Duration = Duration::from_secs(12 * 3600);
