//! One partner connection: timed handshake, identity and re-check of resumed
//! sessions, listener policy, then the http or tcp proxy.

use super::worker::{Gen, WorkerCtx};
use crate::authz::{self, Decision};
use crate::config::Mode;
use crate::metrics::Shard;
use crate::proxy::http::head;
use crate::proxy::{http, tcp, ConnCtx};
use crate::tls::{self, TlsStream};
use rustls::ServerConnection;
use std::net::SocketAddr;
use std::os::fd::AsRawFd;
use std::rc::Rc;
use std::time::Instant;
use tokio::sync::watch;
use tokio::time::timeout;
use tokio_uring::net::TcpStream;

/// A connection as the accept loop hands it over.
pub struct Accepted {
    pub stream: TcpStream,
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

/// Keeps the per-listener open-connection count right however the task ends.
struct Active(Shard);

impl Drop for Active {
    fn drop(&mut self) {
        self.0.with(|s| s.active -= 1);
    }
}

/// Counts the connections in their handshake (the PROXY header included) on
/// this worker, for `max_handshakes`, however the task ends.
struct Handshaking(Rc<WorkerCtx>);

impl Handshaking {
    fn new(w: &Rc<WorkerCtx>) -> Handshaking {
        w.handshaking.set(w.handshaking.get() + 1);
        Handshaking(w.clone())
    }
}

impl Drop for Handshaking {
    fn drop(&mut self) {
        self.0.handshaking.set(self.0.handshaking.get() - 1);
    }
}

/// A missing or bad PROXY header: counted, logged, and the connection closed
/// cleanly (our FIN, then the peer's unread bytes drained, not a reset).
async fn refuse_proxy(
    w: &WorkerCtx,
    shard: &Shard,
    listener: &str,
    addr: SocketAddr,
    stream: &TcpStream,
    why: &str,
) {
    shard.failure("bad_proxy_header");
    log_refused(w, listener, addr, "bad_proxy_header", why);
    if stream.shutdown(std::net::Shutdown::Write).is_ok() {
        crate::proxy::io::linger(stream).await;
    }
}

fn log_refused(w: &WorkerCtx, listener: &str, addr: SocketAddr, reason: &str, detail: &str) {
    if reason == "peer_closed" {
        // TCP health checks connect and close without a byte: not worth a warning.
        tracing::debug!(listener, %addr, reason, "connection closed before the handshake completed");
        return;
    }
    if let Some(suppressed) = w.log_limit.borrow_mut().allow() {
        tracing::warn!(listener, %addr, reason, detail, suppressed, "handshake refused");
    }
}

pub async fn serve(a: Accepted, w: Rc<WorkerCtx>) {
    let Accepted {
        stream,
        addr,
        gen,
        idx,
        shard,
        run,
        name,
        draining,
    } = a;
    let _active = Active(shard.clone());
    let start = Instant::now();
    let lc = &gen.view.plan.listeners[idx]; // ok: the accept loop found idx in this plan
    let live = &gen.live[idx]; // ok: live is indexed like the plan's listeners
    let (ltls, config) = (live.state.tls.clone(), live.config.clone());
    let conn = match ServerConnection::new(config) {
        Ok(c) => c,
        Err(e) => {
            shard.failure("internal");
            tracing::error!(listener = %lc.cfg.name, error = %e, "cannot create TLS connection");
            return;
        }
    };
    let handshaking = Handshaking::new(&w);
    // Only a PROXY header sent upstream needs the exact local address (a syscall).
    let plan = &gen.view.plan;
    let sends_header = lc.cfg.mode == Mode::Tcp
        && lc
            .default_upstream
            .and_then(|u| plan.upstreams.get(u))
            .is_some_and(|u| u.cfg.proxy_protocol);
    let local = match sends_header {
        true => super::proxied::local_addr(&stream).unwrap_or(lc.cfg.bind),
        false => lc.cfg.bind,
    };
    let (addr, local) = if lc.cfg.proxy_protocol {
        let header = timeout(lc.cfg.handshake_timeout, super::proxied::read(&stream)).await;
        match header {
            Ok(Ok(relayed)) => relayed.unwrap_or((addr, local)),
            Ok(Err(why)) => {
                return refuse_proxy(&w, &shard, &lc.cfg.name, addr, &stream, &why).await
            }
            Err(_) => {
                let why = "no complete PROXY header within handshake_timeout";
                shard.failure("bad_proxy_header");
                log_refused(&w, &lc.cfg.name, addr, "bad_proxy_header", why);
                return;
            }
        }
    } else {
        (addr, local)
    };
    // Per source address while there is no identity yet; held through the handshake.
    let Ok(source_permit) = live.state.limits.handshake(addr.ip()) else {
        shard.limited("source_handshakes");
        log_refused(
            &w,
            &lc.cfg.name,
            addr,
            "source_limit",
            "too many handshakes from this source",
        );
        return;
    };
    let tls = TlsStream::new(stream, conn);
    // Listed from before the handshake, so a reload that lands during it
    // still finds the connection (drain deadlines, close_revoked). Declared
    // after `tls`: dropped first, so the entry goes before the fd does.
    let listed = super::open::register(&w, run, name.clone(), tls.tcp().as_raw_fd());
    // Boxed so the connection's long-lived future doesn't reserve room for it.
    let hs = timeout(lc.cfg.handshake_timeout, Box::pin(tls.handshake())).await;
    drop(handshaking);
    drop(source_permit);
    let failed = match hs {
        Err(_) => {
            tls.abort();
            Some((
                "timeout",
                "no complete handshake within handshake_timeout".to_string(),
            ))
        }
        Ok(Err(e)) => Some((tls::reason(&e), e.to_string())),
        Ok(Ok(())) => None,
    };
    if let Some((reason, detail)) = failed {
        shard.failure(reason);
        log_refused(&w, &lc.cfg.name, addr, reason, &detail);
        if reason != "timeout" && reason != "peer_closed" {
            // The alert is sent; a client still sending would get a reset in its
            // place if we closed with its bytes unread.
            if tls.tcp().shutdown(std::net::Shutdown::Write).is_ok() {
                crate::proxy::io::linger(tls.tcp()).await;
            }
        }
        return;
    }
    let checked = tls.with_conn(|c| tls::session(c, &ltls, &mut live.state.verified.borrow_mut()));
    let session = match checked {
        Ok(s) => s,
        Err(reason) => {
            // A resumed session whose certificate no longer verifies (revoked, expired).
            shard.failure(reason);
            log_refused(
                &w,
                &lc.cfg.name,
                addr,
                reason,
                "resumed session's client certificate no longer verifies",
            );
            let _ = timeout(lc.cfg.handshake_timeout, tls.shutdown_write()).await;
            return;
        }
    };
    shard.handshake(start.elapsed(), session.resumed, session.version);
    listed.set_peer(session.peer.clone());
    // A reload applied during the handshake: its CRLs (and, in tcp mode, its
    // allow-list) hold for this connection as for those already open.
    let now = w.gen.borrow().clone();
    if let (false, Some(v)) = (Rc::ptr_eq(&now, &gen), &session.peer) {
        if !super::open::still_valid(&now, &name, v) {
            shard.with(|s| s.closed_revoked += 1);
            log_refused(
                &w,
                &lc.cfg.name,
                addr,
                "revoked",
                "revoked by a CRL reloaded during the handshake",
            );
            let _ = timeout(lc.cfg.handshake_timeout, tls.shutdown_write()).await;
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
            tracing::warn!(listener = %lc.cfg.name, %addr, peer = session.peer.as_ref().map_or("-", |v| v.peer.subject.as_str()), reason = %why, "connection denied by policy");
            let _ = timeout(lc.cfg.handshake_timeout, tls.shutdown_write()).await;
            return;
        }
    }
    let _partner_permit = match &session.peer {
        Some(v) => match live.state.limits.connection(v.peer.label()) {
            Ok(p) => Some(p),
            Err(_) => {
                shard.limited("partner_connections");
                log_refused(&w, &lc.cfg.name, addr, "partner_limit", v.peer.label());
                if lc.cfg.mode == Mode::Http {
                    let r =
                        head::too_many_requests(1, true, "too many connections from this partner");
                    let _ = crate::proxy::io::send(&tls, r, lc.cfg.http.send_timeout).await;
                }
                let _ = timeout(lc.cfg.handshake_timeout, tls.shutdown_write()).await;
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
        peer: session.peer,
        peer_addr: addr,
        client_ip: crate::header::HeaderValue::from_ip(addr.ip()),
        limits: &*live.state.limits,
        local_addr: local,
        tls: crate::proxy::TlsFacts {
            version: session.version,
            cipher: session.cipher,
            resumed: session.resumed,
        },
        sni: session.sni,
        log_requests: gen.view.plan.config.log_requests,
    };
    match lc.cfg.mode {
        Mode::Http => http::serve(&tls, &cx).await,
        Mode::Tcp => Box::pin(tcp::serve(&tls, &cx)).await,
    }
}
