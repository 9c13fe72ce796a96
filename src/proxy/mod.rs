//! Proxying after the handshake: HTTP/1.1 reverse proxy or a TCP byte pipe,
//! to upstreams reached through per-worker pools.

pub mod http;
pub mod io;
pub mod tcp;
pub mod upstream;

use crate::header::HeaderValue;
use crate::limits::WorkerLimiter;
use crate::metrics::Shard;
use crate::plan::{Listener, Plan};
use crate::tls::verified::Verified;
use std::cell::RefCell;
use std::net::SocketAddr;
use std::rc::Rc;
use std::sync::Arc;
use upstream::Pool;

/// What a worker serves new requests with: a plan, and this worker's pools
/// for its upstreams (indexed like `Plan::upstreams`).
pub struct View {
    pub plan: Arc<Plan>,
    pub pools: Vec<Rc<Pool>>,
}

/// A worker's current view, swapped whole on reload; each request reads it once.
pub type Current = Rc<RefCell<Rc<View>>>;

/// Whether a connection's listener still serves, and how it drains.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Drain {
    Serving,
    /// Shutdown: connections with no request in flight close at once.
    Now,
    /// A successor takes over (an upgrade, a listener a reload removed): the
    /// same, except that a new connection's first request is still served.
    Handover,
}

impl Drain {
    pub fn active(self) -> bool {
        self != Drain::Serving
    }
}

/// What the handshake settled, as an upstream PROXY header reports it.
#[derive(Debug, Clone, Copy)]
pub struct TlsFacts {
    pub version: &'static str,
    pub cipher: Option<&'static str>,
    pub resumed: bool,
}

/// Everything one connection needs after its handshake.
pub struct ConnCtx<'a> {
    /// The listener as planned when the connection started: its timeouts and
    /// limits hold for the whole connection.
    pub listener: &'a Listener,
    pub current: Current,
    /// The view the connection started under, and its listener's index there.
    pub own: (Rc<View>, usize),
    pub shard: Shard,
    /// Per-partner limits of the listener (this worker's handle).
    pub limits: &'a dyn WorkerLimiter,
    /// Set when the process drains or a reload removes the listener.
    pub draining: tokio::sync::watch::Receiver<Drain>,
    /// The verified partner (none only with `client_auth = "optional"`).
    pub peer: Option<Rc<Verified>>,
    /// The partner's address: from the PROXY header when the listener takes
    /// one (the load balancer's client), else the socket's peer.
    pub peer_addr: SocketAddr,
    /// `peer_addr`'s IP as sent upstream in `x-forwarded-for`.
    pub client_ip: HeaderValue,
    /// The address the partner connected to (from the PROXY header when there is one).
    pub local_addr: SocketAddr,
    /// TLS version ("1.3", "1.2"), suite, and whether the session was resumed.
    pub tls: TlsFacts,
    /// The TLS server name (SNI) the partner asked for.
    pub sni: Option<String>,
    pub log_requests: bool,
}

impl ConnCtx<'_> {
    /// The view a new request runs under, and the connection's listener in
    /// it. `false`: a reload removed the listener (or changed its mode), so
    /// the request runs under the connection's own plan, and is its last.
    pub fn now(&self) -> (Rc<View>, usize, bool) {
        let v = self.current.borrow().clone();
        let found = v.plan.listener(&self.listener.cfg.name);
        match found.filter(|&i| v.plan.listeners[i].cfg.mode == self.listener.cfg.mode) {
            Some(i) => (v, i, true),
            None => (self.own.0.clone(), self.own.1, false),
        }
    }

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
