//! One partner connection after its handshake (`handshake`): a CRL reloaded
//! meanwhile, the listener's policy (tcp mode), the partner's connection
//! limit, then the http or tcp proxy.

use super::handshake::{self, log_refused};
use super::worker::{Gen, WorkerCtx};
use crate::authz::{self, Decision};
use crate::config::Mode;
use crate::metrics::Shard;
use crate::outcome::Outcome;
use crate::proxy::http::head;
use crate::proxy::{http, tcp, ConnCtx};
use crate::tls::Kind;
use std::net::SocketAddr;
use std::rc::Rc;
use tokio::sync::watch;
use tokio::time::timeout;
use tokio_uring::net::TcpStream;

/// A connection as the accept loop hands it over (with its stream).
pub struct Accepted {
    pub addr: SocketAddr,
    /// The generation it began in: its TLS state and listener settings.
    pub gen: Rc<Gen>,
    /// The listener's index in `gen`'s plan.
    pub idx: usize,
    pub shard: Shard,
    /// The listener run that accepted it, and the run's drain signal.
    pub run: u64,
    pub name: Rc<str>,
    pub draining: watch::Receiver<crate::proxy::Drain>,
}

/// close_notify, then the partner's unread bytes drained (it may have sent
/// its request right after the handshake): our answer is not lost to a reset.
pub async fn close_tls(tls: &crate::tls::ServerStream, within: std::time::Duration) {
    match timeout(within, crate::proxy::io::Io::shutdown_write(tls)).await {
        Ok(Ok(())) => crate::proxy::io::linger(tls).await,
        _ => crate::proxy::io::Io::abort(tls),
    }
}

/// Keeps the per-listener open-connection count right however the task ends.
struct Active(Shard);

impl Drop for Active {
    fn drop(&mut self) {
        self.0.with(|s| s.active -= 1);
    }
}

pub async fn serve(stream: TcpStream, a: Accepted, w: Rc<WorkerCtx>) {
    let _active = Active(a.shard.clone());
    // Boxed: the handshake's state (PROXY read, TLS, closes) is freed once it
    // is done, instead of sizing every idle connection's task for it.
    let Some(h) = Box::pin(handshake::run(stream, &a, &w)).await else {
        return;
    };
    let Accepted {
        gen,
        idx,
        shard,
        name,
        draining,
        ..
    } = a;
    // Used through `h`, whose fields drop in order: the registry entry, then the stream.
    let (tls, session, addr, local) = (&h.tls, &h.info, h.addr, h.local);
    let lc = &gen.view.plan.listeners[idx]; // ok: the accept loop found idx in this plan
    let live = &gen.live[idx]; // ok: live is indexed like the plan's listeners
    let partner = session.peer.as_ref().map(|v| v.peer.label());
    // A reload applied during the handshake: its CRLs (and, in tcp mode, its
    // allow-list) hold for this connection as for those already open.
    let now = w.gen.borrow().clone();
    if let (false, Some(v)) = (Rc::ptr_eq(&now, &gen), &session.peer) {
        if !super::open::still_valid(&now, &name, v) {
            shard.with(|s| s.closed_revoked += 1);
            let detail = "revoked by a CRL reloaded during the handshake";
            log_refused(&w, &lc.cfg.name, addr, Outcome::Revoked, detail);
            close_tls(tls, lc.cfg.handshake_timeout).await;
            return;
        }
    }
    if lc.cfg.mode == Mode::Tcp {
        let current = now
            .view
            .plan
            .listener(&name)
            .map(|i| &now.view.plan.listeners[i].cfg); // ok: i found in this plan
        let allow = match current {
            Some(c) if c.mode == Mode::Tcp => c.allow.as_ref(),
            _ => lc.cfg.allow.as_ref(),
        };
        if let Decision::Deny(why) =
            authz::decide(allow, session.peer.as_ref().map(|v| &v.peer), || {
                "listener".into()
            })
        {
            shard.with(|s| s.denied += 1);
            if let Some(p) = partner {
                shard.partner_failure(p, Outcome::DeniedByPolicy);
            }
            tracing::warn!(listener = %lc.cfg.name, %addr, peer = session.peer.as_ref().map_or("-", |v| v.peer.subject.as_str()), reason = %why, "connection denied by policy");
            close_tls(tls, lc.cfg.handshake_timeout).await;
            return;
        }
    }
    let _partner_permit = match &session.peer {
        Some(v) => match live.state.limits.connection(v.peer.label()) {
            Ok(p) => Some(p),
            Err(_) => {
                shard.limited("partner_connections");
                let o = Outcome::PartnerConnectionLimit;
                shard.partner_failure(v.peer.label(), o);
                log_refused(&w, &lc.cfg.name, addr, o, v.peer.label());
                if lc.cfg.mode == Mode::Http {
                    let r =
                        head::too_many_requests(1, true, "too many connections from this partner");
                    let _ = crate::proxy::io::send(tls, r, lc.cfg.http.send_timeout).await;
                }
                close_tls(tls, lc.cfg.handshake_timeout).await;
                return;
            }
        },
        None => None,
    };
    let cx = ConnCtx {
        listener: lc,
        current: w.current.clone(),
        own: (gen.view.clone(), idx),
        shard,
        draining,
        peer: session.peer.clone(),
        peer_addr: addr,
        client_ip: crate::header::HeaderValue::from_ip(addr.ip().to_canonical()),
        limits: &*live.state.limits,
        local_addr: local,
        tls: crate::proxy::TlsFacts {
            version: session.version,
            cipher: session.cipher,
            resumed: session.kind == Kind::Resumed,
        },
        sni: session.sni.clone(),
        access: w.access.clone(),
        handshake_us: h.took.as_micros() as u64,
    };
    match lc.cfg.mode {
        Mode::Http => http::serve(tls, &cx).await,
        Mode::Tcp => Box::pin(tcp::serve(tls, &cx)).await,
    }
}
