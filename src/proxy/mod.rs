//! Proxying after the handshake: HTTP/1.1 reverse proxy or a TCP byte pipe,
//! to upstreams reached through per-worker pools.

pub mod http;
pub mod io;
pub mod tcp;
pub mod upstream;

use crate::identity::PeerId;
use crate::metrics::Shard;
use crate::runtime::ListenerCtx;
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
    pub peer: Option<PeerId>,
    pub xfcc: Option<String>,
    pub peer_addr: SocketAddr,
    pub log_requests: bool,
}

impl ConnCtx<'_> {
    pub fn peer_label(&self) -> &str {
        self.peer.as_ref().map_or("-", PeerId::label)
    }
}
