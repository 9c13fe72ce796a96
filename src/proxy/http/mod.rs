//! HTTP/1.1 reverse proxy for one partner connection: the keep-alive request
//! loop, routing, per-route policy, upstream exchange and error statuses.

pub mod body;
pub mod chunked;
mod fields;
mod forward;
pub mod head;
pub mod path;
mod request_body;
mod respond;
mod routing;
mod write;

use super::io::{self as pio, Io};
use super::{ConnCtx, Drain};
use crate::authz::Decision;
use crate::bufpool;
use body::BodyError;
use forward::{idempotent, send, stream_body};
use head::{BodyKind, RequestHead, RequestRules};
use request_body::Rest;
use respond::{respond, upstream_failed};
use tokio::time::{timeout, timeout_at, Instant};

/// How a request ended for the downstream connection.
pub(super) enum Next {
    KeepAlive,
    Close,
    /// A reused upstream connection ended before any response byte and the
    /// request may be resent (never leaves `handle`).
    Stale,
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
        if matches!(next, Next::Close) {
            close(down, cx).await;
            break;
        }
        if cx.draining.borrow().active() {
            // The request is done and nothing of the partner's is unread: say
            // close_notify and go, without lingering.
            let _ = timeout(cx.send_timeout(), down.shutdown_write()).await;
            down.abort();
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
    let rules = RequestRules {
        max_bytes: l.max_header_bytes,
        allow_params: l.http.allow_path_params,
    };
    loop {
        if !inbuf.is_empty() {
            match head::parse_request(inbuf, &rules) {
                Ok(Some(r)) => return Some(r),
                Ok(None) => {}
                Err(e) => {
                    reject(down, cx, e.status(), &e.to_string()).await;
                    close(down, cx).await;
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
        let partial = !buf.is_empty();
        // Between requests: up to idle_timeout; in a head: its deadline.
        let until = if idle {
            Instant::now() + l.idle_timeout
        } else {
            *deadline
        };
        // No request is in flight until its head is complete, so a drain
        // closes the connection at once; except in a handover (an upgrade, a
        // removed listener), where a new connection's first request is still
        // on its way and a successor would have served it: it is awaited
        // (within the head's deadline).
        let mut drain = cx.draining.clone();
        let mut read_op = std::pin::pin!(timeout_at(until, down.read(buf)));
        let mut awaiting_first = false;
        let read = loop {
            tokio::select! {
                r = &mut read_op => break r.ok(),
                d = drain.wait_for(|d| d.active()), if !awaiting_first => {
                    if first && d.is_ok_and(|d| *d == Drain::Handover) {
                        awaiting_first = true;
                        continue;
                    }
                    break None;
                }
            }
        };
        match read {
            None => {
                // Timed out or draining: shutting the socket down completes the pending read.
                down.abort();
                if partial && !cx.draining.borrow().active() {
                    cx.count_request(408);
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

/// Closes our side (within `send_timeout`), then lingers: see `io::linger`.
async fn close<D: Io>(down: &D, cx: &ConnCtx<'_>) {
    match timeout(cx.listener.cfg.http.send_timeout, down.shutdown_write()).await {
        Ok(Ok(())) => pio::linger(down).await,
        _ => down.abort(),
    }
}

/// Sends a gateway-generated error and counts it; the connection then closes.
async fn reject<D: Io>(down: &D, cx: &ConnCtx<'_>, code: u16, detail: &str) {
    cx.count_request(code);
    tracing::info!(listener = %cx.listener.cfg.name, peer = cx.peer_label(), addr = %cx.peer_addr, status = code, detail, "request rejected");
    let _ = pio::send(
        down,
        head::error_response(code, true, detail),
        cx.send_timeout(),
    )
    .await;
}

/// A gateway-generated answer that may keep the connection.
async fn answer<D: Io>(
    down: &D,
    cx: &ConnCtx<'_>,
    req: &RequestHead,
    code: u16,
    detail: &str,
) -> Next {
    answer_retry(down, cx, req, code, detail, None).await
}

/// `answer`, with a `Retry-After` when given (429).
async fn answer_retry<D: Io>(
    down: &D,
    cx: &ConnCtx<'_>,
    req: &RequestHead,
    code: u16,
    detail: &str,
    retry_after: Option<u64>,
) -> Next {
    let outcome = match code {
        403 => Some(crate::outcome::Outcome::DeniedByPolicy),
        429 => Some(crate::outcome::Outcome::PartnerRateLimit),
        _ => None,
    };
    respond::finish(cx, req, code, "-", std::time::Instant::now(), 0, outcome);
    let close = req.body != BodyKind::None || !req.keep_alive;
    let response = match retry_after {
        Some(secs) => head::too_many_requests(secs, close, detail),
        None => head::error_response(code, close, detail),
    };
    match pio::send(down, response, cx.send_timeout()).await {
        Ok(b) if !close => {
            bufpool::give(b);
            Next::KeepAlive
        }
        _ => Next::Close,
    }
}

async fn handle<D: Io>(
    down: &D,
    cx: &ConnCtx<'_>,
    (mut req, n): (RequestHead, usize),
    inbuf: &mut Vec<u8>,
) -> Next {
    let started = std::time::Instant::now();
    inbuf.drain(..n);
    let l = cx.listener;
    if let Some(p) = cx.peer_id() {
        if let Err(r) = cx.limits.request(p.label()) {
            cx.shard.limited("partner_request_rate");
            tracing::info!(listener = %l.cfg.name, peer = p.label(), retry_after = r.secs(), "request over the partner's rate limit");
            let detail = "over the partner's request rate";
            return answer_retry(down, cx, &req, 429, detail, Some(r.secs())).await;
        }
    }
    // Routes, allow-lists and upstreams come from the plan in force now; the
    // connection's own settings (timeouts, limits) from the one it started under.
    let (view, now, current) = cx.now();
    if !current {
        req.keep_alive = false;
    }
    let (r, decision) = routing::route(cx, &view.plan.listeners[now], req.path()); // ok: `now` indexes this plan
    if let Decision::Deny(why) = decision {
        cx.shard.with(|s| s.denied += 1);
        tracing::warn!(listener = %l.cfg.name, peer = cx.peer_label(), subject = cx.peer_id().map_or("-", |p| p.subject.as_str()), method = %req.method, path = %req.path(), reason = %why, "request denied by policy");
        return answer(down, cx, &req, 403, "access denied").await;
    }
    let default = view.plan.listeners[now].default_upstream; // ok: as above
    let Some(pool) = r
        .map(|r| r.upstream)
        .or(default)
        .and_then(|u| view.pools.get(u))
    else {
        return answer(down, cx, &req, 404, "no route").await;
    };
    let rules = &l.cfg.http;
    if let (BodyKind::Length(n), Some(max)) = (req.body, rules.max_body_bytes) {
        if n > max {
            // Before any 100 Continue: the partner need not send the body at all.
            reject(down, cx, 413, "request body too large").await;
            return Next::Close;
        }
    }
    // RFC 9110 §15.2: no 1xx to an HTTP/1.0 client (it would take it as the response).
    if req.expect_continue && req.body != BodyKind::None && !req.http10 {
        let sent = pio::send(
            down,
            b"HTTP/1.1 100 Continue\r\n\r\n".to_vec(),
            cx.send_timeout(),
        )
        .await;
        if sent.is_err() {
            return Next::Close;
        }
    }
    let mut body_start = Vec::new();
    let rest = match request_body::prepare(down, rules, &mut req, inbuf, &mut body_start).await {
        Ok(rest) => rest,
        Err(BodyError::SrcFraming(why)) => {
            reject(down, cx, 400, why).await;
            return Next::Close;
        }
        Err(BodyError::SrcTimeout) => {
            reject(down, cx, 408, "request body not received in time").await;
            return Next::Close;
        }
        Err(BodyError::SrcTooLarge) => {
            reject(down, cx, 413, "request body too large").await;
            return Next::Close;
        }
        Err(_) => {
            // The partner went away mid-body (before any upstream was used).
            let o = Some(crate::outcome::Outcome::PeerClosed);
            respond::finish(cx, &req, 499, "-", started, 0, o);
            return Next::Close;
        }
    };
    let mut out = bufpool::big();
    // Built only for an HTTP/1.0 request without Host: no allocation otherwise.
    let host = (!req.has_host).then(|| cx.fallback_host());
    head::write_request(
        &mut out,
        &req,
        cx.peer.as_ref().map(|v| &v.xfcc),
        host.as_ref(),
        Some(&cx.client_ip),
    );
    out.extend_from_slice(&body_start);
    drop(body_start); // held once, in `out`

    // A request whose bytes are all in `out` and whose method is idempotent
    // (RFC 9110 §9.2.2) may be sent twice: if the pooled connection it went out
    // on ends before any byte of the response (the origin closed it while the
    // request was on its way: a race the liveness peek can't see), it is resent
    // once on a fresh connection.
    let retriable = matches!(rest, Rest::Done) && idempotent(&req.method);
    let mut fresh = false;
    let mut rest = Some(rest);
    loop {
        let (lease, sent) = match send(pool, fresh, out).await {
            Ok(ok) => ok,
            Err((code, kind, lease)) => {
                return upstream_failed(down, cx, &req, code, kind, started, lease).await
            }
        };
        if let Some(Rest::Stream {
            kind,
            decoder,
            taken,
        }) = rest.take()
        {
            bufpool::give(sent);
            let body = (kind, decoder, taken);
            return stream_body(down, cx, &req, lease, body, inbuf, started).await;
        }
        if !(retriable && lease.reused) {
            bufpool::give(sent);
            return respond(down, cx, &req, lease, started, false).await;
        }
        match respond(down, cx, &req, lease, started, true).await {
            Next::Stale => {
                cx.shard.upstream_error("stale_connection_resent");
                fresh = true;
                out = sent; // the same bytes, on a new connection
            }
            next => {
                bufpool::give(sent);
                return next;
            }
        }
    }
}
