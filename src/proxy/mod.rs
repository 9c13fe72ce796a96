//! Proxying after the handshake: HTTP/1.1 reverse proxy or a TCP byte pipe,
//! to upstreams reached through per-worker pools.

pub mod http;
pub mod io;
pub mod tcp;
pub mod upstream;

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
    pub log_requests: bool,
}

impl ConnCtx<'_> {
    pub fn peer_label(&self) -> &str {
        self.peer.as_ref().map_or("-", |v| v.peer.label())
    }

    pub fn peer_id(&self) -> Option<&crate::identity::PeerId> {
        self.peer.as_ref().map(|v| &v.peer)
    }
}
