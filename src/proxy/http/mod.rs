//! HTTP/1.1 reverse proxy for one partner connection: the keep-alive request
//! loop, routing, per-route policy, upstream exchange and error statuses.

pub mod body;
pub mod chunked;
pub mod head;
mod respond;

use super::io::Io;
use super::ConnCtx;
use crate::authz::{self, Decision};
use crate::bufpool;
use body::BodyError;
use head::{BodyKind, HeadError, RequestHead};
use respond::{respond, upstream_failed};
use std::time::Duration;
use tokio::time::{timeout, timeout_at, Instant};

/// How a request ended for the downstream connection.
pub(super) enum Next {
    KeepAlive,
    Close,
}

/// Serves requests on one verified connection until it closes or must close.
pub async fn serve<D: Io>(down: &D, cx: &ConnCtx<'_>) {
    let mut inbuf = Vec::new();
    let mut deadline = Instant::now() + cx.listener.cfg.header_timeout;
    let mut first = true;
    loop {
        let req = match read_head(down, cx, &mut inbuf, first, &mut deadline).await {
            Some(r) => r,
            None => break,
        };
        first = false;
        // Boxed: a request's state lives only while it runs, so a connection
        // waiting for its next request keeps a small future (memory per idle connection).
        let next = Box::pin(handle(down, cx, req, &mut inbuf)).await;
        if matches!(next, Next::Close) || *cx.draining.borrow() {
            close(down).await;
            break;
        }
        deadline = Instant::now() + cx.listener.cfg.header_timeout;
    }
    bufpool::give(inbuf);
}

/// Reads until a full request head is buffered. `None`: the connection is done
/// (closed, timed out, drained, or answered with an error that closes it).
async fn read_head<D: Io>(
    down: &D,
    cx: &ConnCtx<'_>,
    inbuf: &mut Vec<u8>,
    first: bool,
    deadline: &mut Instant,
) -> Option<(RequestHead, usize)> {
    let l = &cx.listener.cfg;
    loop {
        if !inbuf.is_empty() {
            match head::parse_request(inbuf, l.max_header_bytes) {
                Ok(Some(r)) => return Some(r),
                Ok(None) => {}
                Err(e) => {
                    let code = if matches!(e, HeadError::TooLarge(_)) {
                        431
                    } else {
                        400
                    };
                    reject(down, cx, code, &e.to_string()).await;
                    close(down).await;
                    return None;
                }
            }
        }
        let idle = inbuf.is_empty() && !first;
        if inbuf.is_empty() {
            // Nothing buffered: let the read take a buffer only when bytes arrive.
            bufpool::give(std::mem::take(inbuf));
        } else if inbuf.capacity() - inbuf.len() < 512 {
            let want = (inbuf.capacity() * 2).min(l.max_header_bytes + 1024);
            inbuf.reserve(want.saturating_sub(inbuf.len()).max(512));
        }
        let buf = std::mem::take(inbuf);
        let read = async {
            if idle {
                // Between requests: wait up to idle_timeout, or until drain starts.
                let mut drain = cx.draining.clone();
                tokio::select! {
                    r = timeout(l.idle_timeout, down.read(buf)) => r.ok(),
                    _ = drain.wait_for(|d| *d) => None,
                }
            } else {
                timeout_at(*deadline, down.read(buf)).await.ok()
            }
        };
        match read.await {
            None => {
                // Timed out or draining: shutting the socket down completes the pending read.
                down.abort();
                if !idle && !inbuf.is_empty() {
                    cx.shard.request(408);
                }
                return None;
            }
            Some((res, b)) => {
                *inbuf = b;
                match res {
                    Ok(0) | Err(_) => return None,
                    Ok(_) => {}
                }
            }
        }
        if idle {
            *deadline = Instant::now() + l.header_timeout;
        }
    }
}

/// Sends a gateway-generated error and counts it; the connection then closes.
/// How long a closing connection may keep draining what the partner still sends.
const LINGER: Duration = Duration::from_secs(2);
/// How much of it we read before giving up on a clean close.
const LINGER_BYTES: usize = 4 * 1024 * 1024;

/// Closes our side, then reads and discards what the partner is still sending
/// (a request we refused mid-way) for a moment: closing a socket with unread
/// data makes the kernel send a reset, which can destroy the error response
/// before the partner reads it (nginx's lingering close).
async fn close<D: Io>(down: &D) {
    let _ = down.shutdown_write().await;
    let deadline = Instant::now() + LINGER;
    let mut drained = 0;
    let mut buf = bufpool::small();
    while drained < LINGER_BYTES {
        buf.clear();
        match timeout_at(deadline, down.read(buf)).await {
            Ok((Ok(n), b)) if n > 0 => {
                drained += n;
                buf = b;
            }
            Ok((_, b)) => {
                buf = b;
                break;
            }
            Err(_) => {
                down.abort();
                return;
            }
        }
    }
    bufpool::give(buf);
}

async fn reject<D: Io>(down: &D, cx: &ConnCtx<'_>, code: u16, detail: &str) {
    cx.shard.request(code);
    tracing::info!(listener = %cx.listener.cfg.name, peer = cx.peer_label(), addr = %cx.peer_addr, status = code, detail, "request rejected");
    let _ = timeout(
        cx.listener.cfg.header_timeout,
        down.write_all(head::error_response(code, true, detail)),
    )
    .await;
}

/// The longest route prefix matching `path` on a segment boundary.
fn route<'a>(cx: &'a ConnCtx<'_>, path: &str) -> Option<&'a crate::runtime::Route> {
    cx.listener
        .routes
        .iter()
        .filter(|r| {
            // Indexing is in bounds: `starts_with` holds and the lengths differ.
            let p = r.prefix.as_str();
            path.starts_with(p)
                && (path.len() == p.len() || path.as_bytes()[p.len()] == b'/' || p.is_empty())
        })
        .max_by_key(|r| r.prefix.len())
}

async fn handle<D: Io>(
    down: &D,
    cx: &ConnCtx<'_>,
    (req, n): (RequestHead, usize),
    inbuf: &mut Vec<u8>,
) -> Next {
    let started = std::time::Instant::now();
    inbuf.drain(..n);
    let l = cx.listener;
    let r = route(cx, req.path());
    let mut decision = authz::decide(l.cfg.allow.as_ref(), cx.peer_id(), || "listener".into());
    if decision == Decision::Allow {
        if let Some(r) = r {
            decision = authz::decide(r.allow.as_ref(), cx.peer_id(), || {
                format!(
                    "route {}",
                    if r.prefix.is_empty() { "/" } else { &r.prefix }
                )
            });
        }
    }
    if let Decision::Deny(why) = decision {
        cx.shard.with(|s| s.denied += 1);
        cx.shard.request(403);
        tracing::warn!(listener = %l.cfg.name, peer = cx.peer_label(), subject = cx.peer_id().map_or("-", |p| p.subject.as_str()), method = %req.method, path = %req.path(), reason = %why, "request denied by policy");
        let close = req.body != BodyKind::None || !req.keep_alive;
        let _ = timeout(
            l.cfg.header_timeout,
            down.write_all(head::error_response(403, close, "access denied")),
        )
        .await;
        return if close { Next::Close } else { Next::KeepAlive };
    }
    let Some(up_idx) = r.map(|r| r.upstream).or(l.default_upstream) else {
        let close = req.body != BodyKind::None || !req.keep_alive;
        cx.shard.request(404);
        let _ = down
            .write_all(head::error_response(404, close, "no route"))
            .await;
        return if close { Next::Close } else { Next::KeepAlive };
    };
    let pool = &cx.pools[up_idx];
    let ucfg = &pool.ctx.cfg;
    if req.expect_continue && req.body != BodyKind::None {
        let (res, _) = down
            .write_all(b"HTTP/1.1 100 Continue\r\n\r\n".to_vec())
            .await;
        if res.is_err() {
            return Next::Close;
        }
    }
    let mut out = bufpool::big();
    head::write_request(&mut out, &req, cx.peer.as_ref().map(|v| v.xfcc.as_str()));
    let req_rest = body::take_buffered(req.body, inbuf, &mut out);
    // Send the head; a reused connection that fails before any byte of it was
    // accepted is retried once on a fresh one.
    let mut fresh = false;
    let (lease, out) = loop {
        let lease = match pool.get(fresh).await {
            Ok(l) => l,
            Err(e) => return upstream_failed(down, cx, &req, e.status(), e.label(), started).await,
        };
        let (res, o) = match timeout(ucfg.response_timeout, lease.io().write_all(out)).await {
            Ok(r) => r,
            Err(_) => return upstream_failed(down, cx, &req, 504, "write_timeout", started).await,
        };
        out = o;
        match res {
            Ok(()) => break (lease, out),
            Err(_) if lease.reused && !fresh => {
                fresh = true;
                continue;
            }
            Err(_) => return upstream_failed(down, cx, &req, 502, "write_failed", started).await,
        }
    };
    bufpool::give(out);
    match body::copy(
        down,
        lease.io(),
        req_rest,
        inbuf,
        l.cfg.idle_timeout,
        ucfg.response_timeout,
        false,
    )
    .await
    {
        Ok(_) => {}
        Err(BodyError::DstTimeout) | Err(BodyError::DstIo) => {
            return upstream_failed(down, cx, &req, 502, "request_body_failed", started).await;
        }
        Err(BodyError::SrcFraming(why)) => {
            drop(lease);
            reject(down, cx, 400, why).await;
            return Next::Close;
        }
        Err(_) => return Next::Close, // the partner went away or stalled mid-body
    }
    respond(down, cx, &req, lease, started).await
}
