//! One partner connection: timed handshake, identity and re-check of resumed
//! sessions, listener policy, then the http or tcp proxy.

use super::worker::{Gen, WorkerCtx};
use crate::authz::{self, Decision};
use crate::config::Mode;
use crate::metrics::Shard;
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
    pub draining: watch::Receiver<bool>,
}

/// Keeps the per-listener open-connection count right however the task ends.
struct Active(Shard);

impl Drop for Active {
    fn drop(&mut self) {
        self.0.with(|s| s.active -= 1);
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
    let tls = TlsStream::new(stream, conn);
    w.handshaking.set(w.handshaking.get() + 1);
    // Boxed so the connection's long-lived future doesn't reserve room for it.
    let hs = timeout(lc.cfg.handshake_timeout, Box::pin(tls.handshake())).await;
    w.handshaking.set(w.handshaking.get() - 1);
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
    // Declared after `tls`: dropped first, so the entry goes before the fd does.
    let listed = super::open::register(&w, run, name, tls.tcp().as_raw_fd());
    listed.set_peer(session.peer.clone());
    if lc.cfg.mode == Mode::Tcp {
        if let Decision::Deny(why) = authz::decide(
            lc.cfg.allow.as_ref(),
            session.peer.as_ref().map(|v| &v.peer),
            || "listener".into(),
        ) {
            shard.with(|s| s.denied += 1);
            tracing::warn!(listener = %lc.cfg.name, %addr, peer = session.peer.as_ref().map_or("-", |v| v.peer.subject.as_str()), reason = %why, "connection denied by policy");
            let _ = timeout(lc.cfg.handshake_timeout, tls.shutdown_write()).await;
            return;
        }
    }
    let cx = ConnCtx {
        listener: lc,
        current: w.current.clone(),
        shard,
        draining,
        peer: session.peer,
        peer_addr: addr,
        sni: session.sni,
        log_requests: gen.view.plan.config.log_requests,
    };
    match lc.cfg.mode {
        Mode::Http => http::serve(&tls, &cx).await,
        Mode::Tcp => Box::pin(tcp::serve(&tls, &cx)).await,
    }
}
