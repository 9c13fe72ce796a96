//! tcp mode: after the handshake and policy check, a byte pipe to the upstream
//! in both directions at once, passing half-closes through.

use super::io::Io;
use super::ConnCtx;
use crate::bufpool;
use crate::outcome::Outcome;
use crate::proxy_protocol as pp2;
use std::cell::Cell;
use std::time::Duration;
use tokio::time::{timeout, Instant};

/// Copies `src` to `dst` until end of stream, then half-closes `dst`.
/// Counts the bytes delivered to `dst` in `moved` as they go (so a broken or
/// cancelled pipe still reports them); returns whether the direction ended
/// cleanly (end of stream, not an error or a deadline).
/// Which side of a pipe broke first (the other then only sees the abort).
#[derive(Clone, Copy)]
enum Broke {
    Partner,
    Upstream,
}

struct Ends<'a> {
    /// `src` is the partner's side.
    from_partner: bool,
    first: &'a Cell<Option<Broke>>,
}

impl Ends<'_> {
    fn blame(&self, src: bool) {
        let partner = src == self.from_partner;
        if self.first.get().is_none() {
            self.first.set(Some(if partner {
                Broke::Partner
            } else {
                Broke::Upstream
            }));
        }
    }
}

async fn pump<S: Io, D: Io>(
    src: &S,
    dst: &D,
    last: &Cell<Instant>,
    idle: Duration,
    moved: &Cell<u64>,
    ends: Ends<'_>,
) -> bool {
    let mut buf = bufpool::small();
    loop {
        let (res, b) = src.read(buf).await;
        buf = b;
        last.set(Instant::now());
        match res {
            Ok(0) => {
                bufpool::give(buf);
                let _ = timeout(idle, dst.shutdown_write()).await;
                let clean = src.closed_cleanly();
                if !clean {
                    ends.blame(true);
                }
                return clean;
            }
            Ok(_) => {}
            Err(_) => {
                bufpool::give(buf);
                ends.blame(true);
                dst.abort();
                return false;
            }
        }
        let full = buf.len() == buf.capacity();
        let n = buf.len() as u64;
        // Its own deadline: the idle watch alone would let a partner that sends a
        // byte now and then, but never reads, hold the upstream side.
        let (res, b) = match timeout(idle, dst.write_all(buf)).await {
            Ok(r) => r,
            Err(_) => {
                ends.blame(false);
                dst.abort();
                src.abort();
                return false;
            }
        };
        last.set(Instant::now());
        buf = b;
        buf.clear();
        if res.is_err() {
            bufpool::give(buf);
            ends.blame(false);
            src.abort();
            return false;
        }
        moved.set(moved.get() + n);
        if full && buf.capacity() < bufpool::BIG {
            // Busy stream: move up to a big buffer.
            bufpool::give(std::mem::replace(&mut buf, bufpool::big()));
        }
    }
}

/// Resolves once neither direction has moved a byte for `idle`.
async fn idle_watch(last: &Cell<Instant>, idle: Duration) {
    loop {
        let due = last.get() + idle;
        if Instant::now() >= due {
            return;
        }
        tokio::time::sleep_until(due).await;
    }
}

/// The PROXY v2 header for the upstream: the partner's and the listener's
/// addresses, and an SSL TLV with the TLS version, suite, the verified
/// identity's CN and the client certificate (the L4 equivalent of XFCC).
pub fn proxy_header(cx: &ConnCtx<'_>) -> Result<Vec<u8>, pp2::Error> {
    // verify 0 means "presented a certificate and it verified": without one
    // (client_auth = "optional") it is 1.
    let mut ssl = pp2::Ssl {
        client: pp2::PP2_CLIENT_SSL,
        verify: u32::from(cx.peer.is_none()),
        version: Some(format!("TLSv{}", cx.tls.version)),
        cipher: cx.tls.cipher.map(str::to_string),
        ..Default::default()
    };
    if let Some(v) = &cx.peer {
        // A resumed session presented its certificate in an earlier handshake.
        ssl.client |= pp2::PP2_CLIENT_CERT_SESS;
        if !cx.tls.resumed {
            ssl.client |= pp2::PP2_CLIENT_CERT_CONN;
        }
        ssl.cn = v.peer.cns.first().cloned();
        ssl.client_cert = Some(v.leaf().to_vec());
    }
    pp2::encode(cx.peer_addr, cx.local_addr, &[pp2::ssl_tlv(&ssl)?])
}

async fn send_proxy_header<U: Io>(up: &U, cx: &ConnCtx<'_>) -> Result<(), String> {
    let header = proxy_header(cx).map_err(|e| e.to_string())?;
    let (res, _) = match timeout(cx.listener.cfg.idle_timeout, up.write_all(header)).await {
        Ok(r) => r,
        Err(_) => return Err("timed out".into()),
    };
    res.map_err(|e| e.to_string())
}

pub async fn serve<D: Io>(down: &D, cx: &ConnCtx<'_>) {
    let l = cx.listener;
    // The upstream as planned now (a reload may have changed it).
    let (view, now, _) = cx.now();
    let up = view.plan.listeners[now].default_upstream; // ok: `now` indexes this plan
    let Some(pool) = up.and_then(|u| view.pools.get(u)) else {
        return; // ok: config validation requires an upstream for tcp listeners
    };
    let started = std::time::Instant::now();
    let failed = |o: Outcome| {
        cx.finish(super::Finished {
            method: "-",
            path: "-",
            status: 0,
            upstream: &pool.ctx.cfg.name,
            bytes_in: 0,
            bytes_out: 0,
            started,
            outcome: Some(o),
        })
    };
    let lease = match pool.get(true).await {
        Ok(l) => l,
        Err(e) => {
            cx.shard.upstream_error(e.label());
            tracing::warn!(listener = %l.cfg.name, peer = cx.peer_label(), kind = e.label(), "upstream connect failed; closing");
            down.abort();
            failed(e.outcome());
            return;
        }
    };
    let up = lease.io();
    if pool.ctx.cfg.proxy_protocol {
        if let Err(why) = send_proxy_header(up, cx).await {
            cx.shard.upstream_error("proxy_header_failed");
            tracing::warn!(listener = %l.cfg.name, peer = cx.peer_label(), why, "cannot send the PROXY header upstream; closing");
            down.abort();
            failed(Outcome::UpstreamProxyHeader);
            return;
        }
    }
    let last = Cell::new(Instant::now());
    let (moved_in, moved_out) = (Cell::new(0), Cell::new(0));
    let first = Cell::new(None);
    let ends = |from_partner| Ends {
        from_partner,
        first: &first,
    };
    let both = async {
        tokio::join!(
            pump(down, up, &last, l.cfg.idle_timeout, &moved_in, ends(true)),
            pump(up, down, &last, l.cfg.idle_timeout, &moved_out, ends(false))
        )
    };
    let idle = tokio::select! {
        _ = both => false,
        _ = idle_watch(&last, l.cfg.idle_timeout) => {
            // Shutting both sockets down completes the reads the pumps left pending.
            down.abort();
            up.abort();
            true
        }
    };
    let (a, b) = (moved_in.get(), moved_out.get());
    // Not clean: a side broke, or ended without close_notify (a truncation
    // the partner may not have meant); the side that went first is blamed.
    let outcome = match (idle, first.get()) {
        (true, _) => Some(Outcome::IdleTimeout),
        (false, None) => None,
        (false, Some(Broke::Partner)) => Some(Outcome::PeerClosed),
        (false, Some(Broke::Upstream)) => Some(Outcome::UpstreamReset),
    };
    cx.finish(super::Finished {
        method: "-",
        path: "-",
        status: 0,
        upstream: &lease.upstream().ctx.cfg.name,
        bytes_in: a,
        bytes_out: b,
        started,
        outcome,
    });
    // `lease` drops here: a tcp-mode upstream connection is never reused.
}
