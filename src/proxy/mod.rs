//! Proxying after the handshake: HTTP/1.1 reverse proxy or a TCP byte pipe,
//! to upstreams reached through per-worker pools.

pub mod http;
pub mod io;
pub mod tcp;
pub mod upstream;

use crate::header::HeaderValue;
use crate::metrics::Shard;
use crate::runtime::ListenerCtx;
use crate::tls::verified::Verified;
use std::net::SocketAddr;
use std::rc::Rc;
use upstream::Pool;

/// Everything one connection needs after its handshake.
pub struct ConnCtx<'a> {
    pub listener: &'a ListenerCtx,
    pub shard: Shard,
    /// One pool per upstream, indexed like `Gateway::upstreams`.
    pub pools: Rc<Vec<Rc<Pool>>>,
    pub draining: tokio::sync::watch::Receiver<bool>,
    /// The verified partner (none only with `client_auth = "optional"`).
    pub peer: Option<Rc<Verified>>,
    pub peer_addr: SocketAddr,
    /// The TLS server name (SNI) the partner asked for.
    pub sni: Option<String>,
    pub log_requests: bool,
}

impl ConnCtx<'_> {
    pub fn peer_label(&self) -> &str {
        self.peer.as_ref().map_or("-", |v| v.peer.label())
    }

    pub fn peer_id(&self) -> Option<&crate::identity::PeerId> {
        self.peer.as_ref().map(|v| &v.peer)
    }

    /// Deadline of every write to the partner.
    pub fn send_timeout(&self) -> std::time::Duration {
        self.listener.cfg.http.send_timeout
    }

    /// The Host an HTTP/1.0 request without one is forwarded with: the name the
    /// partner asked for in the handshake, else the listener's address.
    pub fn fallback_host(&self) -> HeaderValue {
        let name = self
            .sni
            .as_deref()
            .and_then(|s| HeaderValue::new(s).ok())
            .filter(|h| http::head::valid_host(h.as_bytes()));
        name.unwrap_or_else(|| HeaderValue::from_addr(self.listener.cfg.bind))
    }
}
