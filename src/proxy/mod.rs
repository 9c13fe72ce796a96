//! Proxying after the handshake: HTTP/1.1 reverse proxy or a TCP byte pipe,
//! to upstreams reached through per-worker pools.

pub mod access;
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
    /// The worker's buffered access log (the `[access_log]` file, else the
    /// process log when `log_requests`); read per line, so a reopen after
    /// logrotate moves long-lived connections' lines to the new file too.
    pub access: Rc<RefCell<Option<Rc<access::AccessLog>>>>,
    /// Accept → handshake complete, for the access log.
    pub handshake_us: u64,
}

/// How a request (or tcp session) ended, for its counters and its log line.
pub struct Finished<'a> {
    pub method: &'a str,
    pub path: &'a str,
    /// 0 for a tcp session (no status, no requests_total entry).
    pub status: u16,
    pub upstream: &'a str,
    pub bytes_in: u64,
    pub bytes_out: u64,
    pub started: std::time::Instant,
    pub outcome: Option<crate::outcome::Outcome>,
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

    /// A response sent (or refused request answered): per listener and per partner.
    pub fn count_request(&self, status: u16) {
        self.shard.request(status);
        if let Some(v) = &self.peer {
            self.shard.partner_request(v.peer.label(), status);
        }
    }

    /// Counts a finished request (or session) and writes its log line.
    pub fn finish(&self, f: Finished<'_>) {
        if f.status != 0 {
            self.count_request(f.status);
        }
        self.count_bytes(f.bytes_in, f.bytes_out);
        let duration_us = f.started.elapsed().as_micros() as u64;
        let log = self.access.borrow().clone();
        if let Some(log) = &log {
            log.write(&access::Entry {
                listener: &self.listener.cfg.name,
                identity: self.peer_label(),
                addr: self.peer_addr,
                tls_version: self.tls.version,
                resumed: self.tls.resumed,
                handshake_us: self.handshake_us,
                method: f.method,
                path: f.path,
                status: f.status,
                upstream: f.upstream,
                bytes_in: f.bytes_in,
                bytes_out: f.bytes_out,
                duration_us,
                outcome: f.outcome,
            });
        }
    }

    /// Body bytes the partner sent and received.
    pub fn count_bytes(&self, bytes_in: u64, bytes_out: u64) {
        if let Some(v) = &self.peer {
            self.shard.bytes(v.peer.label(), bytes_in, bytes_out);
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
