//! A connection's way to a verified partner: the PROXY header (when the
//! listener takes one), the per-source limit, the timed TLS handshake and the
//! re-check of resumed sessions. Every way it can end is one `Outcome`,
//! counted (for the partner too, when the refusal names one) and recorded in
//! the handshake histograms with both clocks.

use super::conn::Accepted;
use super::open::Registration;
use super::proxied::Refused;
use super::worker::WorkerCtx;
use crate::config::Mode;
use crate::metrics::series::SeriesKey;
use crate::metrics::Shard;
use crate::outcome::Outcome;
use crate::tls::{self, HandshakeInfo, Kind, ServerStream};
use std::net::SocketAddr;
use std::os::fd::AsRawFd;
use std::rc::Rc;
use std::time::{Duration, Instant};
use tokio::time::timeout_at;
use tokio_uring::net::TcpStream;

/// A partner through the handshake. `listed` comes first: dropped before the
/// stream, so the registry entry goes before the fd does.
pub struct Handshaken {
    pub _listed: Registration,
    pub tls: ServerStream,
    pub info: HandshakeInfo,
    /// The partner's address (the PROXY header's, when there is one).
    pub addr: SocketAddr,
    /// Where it connected to.
    pub local: SocketAddr,
    /// Accept → handshake complete.
    pub took: Duration,
}

/// Counts the connections in their handshake (the PROXY header included), on
/// this worker for `max_handshakes` and per listener for the metrics.
struct Handshaking(Rc<WorkerCtx>, Shard);

impl Handshaking {
    fn new(w: &Rc<WorkerCtx>, shard: &Shard) -> Handshaking {
        w.handshaking.set(w.handshaking.get() + 1);
        shard.with(|s| s.handshaking += 1);
        Handshaking(w.clone(), shard.clone())
    }
}

impl Drop for Handshaking {
    fn drop(&mut self) {
        self.0.handshaking.set(self.0.handshaking.get() - 1);
        self.1.with(|s| s.handshaking -= 1);
    }
}

pub fn log_refused(w: &WorkerCtx, listener: &str, addr: SocketAddr, o: Outcome, detail: &str) {
    if o == Outcome::PeerClosed {
        // TCP health checks connect and close without a byte: not worth a warning.
        tracing::debug!(listener, %addr, reason = %o, "connection closed before the handshake completed");
        return;
    }
    if let Some(suppressed) = w.log_limit.borrow_mut().allow() {
        tracing::warn!(listener, %addr, reason = %o, side = o.side().label(), detail, suppressed, "handshake refused");
    }
}

/// Our FIN, then the peer's unread bytes drained: the close is not a reset
/// that would eat the alert (or, before TLS, leave the peer guessing).
async fn close_cleanly(tcp: &TcpStream) {
    if tcp.shutdown(std::net::Shutdown::Write).is_ok() {
        crate::proxy::io::linger(tcp).await;
    }
}

/// Runs everything up to a verified partner; `None` when the connection ended
/// (counted and logged here).
pub async fn run(stream: TcpStream, a: &Accepted, w: &Rc<WorkerCtx>) -> Option<Handshaken> {
    let Accepted {
        addr,
        gen,
        idx,
        shard,
        run,
        name,
        ..
    } = a;
    let (addr, idx, run) = (*addr, *idx, *run);
    let start = Instant::now();
    let lc = &gen.view.plan.listeners[idx]; // ok: the accept loop found idx in this plan
    let live = &gen.live[idx]; // ok: live is indexed like the plan's listeners
    let refuse = |o: Outcome, partner: Option<&str>, addr: SocketAddr, detail: &str| {
        shard.failure(o, partner);
        log_refused(w, &lc.cfg.name, addr, o, detail);
    };
    let handshaking = Handshaking::new(w, shard);
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
    // One deadline for everything before the partner is known: the PROXY
    // header and the TLS handshake together.
    let deadline = tokio::time::Instant::now() + lc.cfg.handshake_timeout;
    let (addr, local) = if lc.cfg.proxy_protocol {
        // Only the balancers may name the client.
        let peer = addr.ip().to_canonical();
        if !lc.cfg.proxy_protocol_from.iter().any(|n| n.contains(&peer)) {
            let why = "a PROXY header is accepted only from proxy_protocol_from";
            refuse(Outcome::BadProxyHeader, None, addr, why);
            return None; // nothing read: a plain close
        }
        match timeout_at(deadline, super::proxied::read(&stream)).await {
            Ok(Ok(relayed)) => relayed.unwrap_or((addr, local)),
            Ok(Err(Refused::Silent)) => {
                // A balancer's TCP health check.
                refuse(
                    Outcome::PeerClosed,
                    None,
                    addr,
                    "closed before a PROXY header",
                );
                return None;
            }
            Ok(Err(Refused::Bad(why))) => {
                refuse(Outcome::BadProxyHeader, None, addr, &why);
                drop(handshaking); // counted as failed now: not also as handshaking
                close_cleanly(&stream).await;
                return None;
            }
            Err(_) => {
                let why = "no complete PROXY header within handshake_timeout";
                refuse(Outcome::BadProxyHeader, None, addr, why);
                // The timed-out read is still in the ring, holding the fd:
                // shutting the socket down completes it, so the fd closes.
                let _ = stream.shutdown(std::net::Shutdown::Both);
                return None;
            }
        }
    } else {
        (addr, local)
    };
    // Per source address while there is no identity yet; held through the handshake.
    let Ok(source_permit) = live.state.limits.handshake(addr.ip()) else {
        shard.limited("source_handshakes");
        refuse(
            Outcome::SourceLimit,
            None,
            addr,
            "too many handshakes from this source",
        );
        return None;
    };
    let tls = match tls::accept(stream, live.config.clone()) {
        Ok(t) => t,
        Err(e) => {
            refuse(Outcome::Internal, None, addr, &e);
            return None;
        }
    };
    // Listed from before the handshake, so a reload that lands during it
    // still finds the connection (drain deadlines, close_revoked).
    let listed = super::open::register(w, run, name.clone(), tls.tcp().as_raw_fd());
    // Boxed so the connection's long-lived future doesn't reserve room for it.
    let hs = timeout_at(deadline, Box::pin(tls.handshake())).await;
    drop(handshaking);
    drop(source_permit);
    // Version and group: a failed handshake's as far as it got, a completed
    // one's from its HandshakeInfo (not read twice).
    let so_far = || tls.with_conn(|c| tls::version_group(c));
    let record = |ok: bool, kind: Kind, (version, group), partner: Option<&str>, extra_cpu| {
        let key = SeriesKey {
            kind,
            ok,
            version,
            group,
        };
        shard.handshake(
            key,
            start.elapsed(),
            tls.handshake_cpu() + extra_cpu,
            partner,
        );
    };
    let failed = match hs {
        Err(_) => {
            tls.abort();
            let d = "no complete handshake within handshake_timeout";
            Some((Outcome::HandshakeTimeout, d.to_string()))
        }
        Ok(Err(e)) => Some((tls::reason(&e), e.to_string())),
        Ok(Ok(())) => None,
    };
    if let Some((o, detail)) = failed {
        let partner = tls.refused_partner();
        record(false, Kind::Full, so_far(), None, Duration::ZERO);
        refuse(o, partner.as_deref(), addr, &detail);
        if o != Outcome::HandshakeTimeout && o != Outcome::PeerClosed {
            // The alert is sent; a client still sending would get a reset in
            // its place if we closed with its bytes unread.
            close_cleanly(tls.tcp()).await;
        }
        return None;
    }
    // The re-verification of a resumed chain is the gateway's own work too.
    let t = Instant::now();
    let sni = tls.take_server_name();
    let checked = tls.with_conn(|c| {
        tls::session(
            c,
            sni,
            &live.state.tls,
            &mut live.state.verified.borrow_mut(),
        )
    });
    let check_cpu = t.elapsed();
    let info = match checked {
        Ok(s) => s,
        Err((o, partner, kind)) => {
            // A resumed session whose certificate no longer verifies (revoked, expired).
            record(false, kind, so_far(), None, check_cpu);
            let detail = "resumed session's client certificate no longer verifies";
            refuse(o, partner.as_deref(), addr, detail);
            super::conn::close_tls(&tls, lc.cfg.handshake_timeout).await;
            return None;
        }
    };
    let partner = info.peer.as_ref().map(|v| v.peer.label());
    record(
        true,
        info.kind,
        (info.version, info.group),
        partner,
        check_cpu,
    );
    if let Some(v) = &info.peer {
        shard.cert_seen(v, crate::tls::material::now_secs());
    }
    listed.set_peer(info.peer.clone());
    Some(Handshaken {
        _listed: listed,
        tls,
        info,
        addr,
        local,
        took: start.elapsed(),
    })
}
