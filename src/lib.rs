//! mtlsgate: a thread-per-core io_uring gateway that terminates mutual TLS.
//!
//! ```text
//!  partner ──TCP──▶ worker N (pinned core, own tokio-uring ring, own SO_REUSEPORT socket)
//!                    │ accept (io_uring)
//!                    ▼
//!                  tls: rustls unbuffered connections driven over owned buffers (tls::stream)
//!                    │   handshake timed → per-worker HDR histogram
//!                    ▼
//!                  identity: verified leaf → PeerId
//!                    ▼
//!                  authz: allow-lists → allow | deny(reason)
//!                    ▼
//!                  proxy: http (HTTP/1.1, XFCC) | tcp (byte pipe) ── optional mTLS to origin
//!                    ▼
//!                  metrics: per-worker shards, merged on read (admin: /metrics /stats)
//! ```

pub mod admin;
pub mod authz;
pub mod bufpool;
pub mod config;
pub mod ctl;
pub mod demo;
pub mod header;
pub mod identity;
pub mod limits;
pub mod metrics;
pub mod outcome;
pub mod plan;
pub mod proxy;
pub mod proxy_protocol;
pub mod runtime;
pub mod tls;
pub mod tune;
