//! Sending a request upstream: the head and buffered body on a pooled or new
//! connection, or a streamed body followed by the response.

use super::body::{self, BodyError, Chunks, Pace};
use super::chunked::ChunkedDecoder;
use super::head::{BodyKind, RequestHead};
use super::respond::{self, respond, upstream_failed};
use super::{reject, Next};
use crate::proxy::io::Io;
use crate::proxy::upstream::{Lease, Pool};
use crate::proxy::ConnCtx;
use std::rc::Rc;
use tokio::time::timeout;

/// RFC 9110 §9.2.2: methods whose intended effect of several identical
/// requests is that of one.
pub(super) fn idempotent(method: &str) -> bool {
    matches!(
        method,
        "GET" | "HEAD" | "OPTIONS" | "TRACE" | "PUT" | "DELETE"
    )
}

/// Why sending the request head upstream failed: status, label, lease.
pub(super) type SendFailure = (u16, &'static str, Option<Lease>);

/// Sends the request head (and buffered body) on a pooled or new connection;
/// a reused connection whose write fails is replaced by a fresh one, once.
pub(super) async fn send(
    pool: &Rc<Pool>,
    mut fresh: bool,
    mut out: Vec<u8>,
) -> Result<(Lease, Vec<u8>), SendFailure> {
    let response_timeout = pool.ctx.cfg.response_timeout;
    loop {
        let lease = match pool.get(fresh).await {
            Ok(l) => l,
            Err(e) => return Err((e.status(), e.label(), None)),
        };
        let (res, o) = match timeout(response_timeout, lease.io().write_all(out)).await {
            Ok(r) => r,
            Err(_) => return Err((504, "write_timeout", Some(lease))),
        };
        out = o;
        match res {
            Ok(()) => return Ok((lease, out)),
            Err(_) if lease.reused && !fresh => fresh = true,
            Err(_) => return Err((502, "write_failed", Some(lease))),
        }
    }
}

/// Streams the rest of a request body to the upstream, then relays the response.
pub(super) async fn stream_body<D: Io>(
    down: &D,
    cx: &ConnCtx<'_>,
    req: &RequestHead,
    lease: Lease,
    (kind, decoder, taken): (BodyKind, Option<ChunkedDecoder>, u64),
    inbuf: &mut Vec<u8>,
    started: std::time::Instant,
) -> Next {
    let l = cx.listener;
    let rules = &l.cfg.http;
    let pool = lease.upstream();
    let ucfg = &pool.ctx.cfg;
    {
        // Paced from now, when the upstream connection is held.
        let pace = Pace::Rate {
            window: rules.body_timeout,
            rate: rules.min_body_rate,
            idle: l.cfg.idle_timeout,
            limit: rules.max_body_bytes.map(|m| m.saturating_sub(taken)),
        };
        let copied = body::copy(
            down,
            lease.io(),
            kind,
            decoder,
            inbuf,
            pace,
            ucfg.response_timeout,
            Chunks::Rechunk,
        )
        .await;
        match copied {
            Ok(_) => {}
            Err(BodyError::DstTimeout) | Err(BodyError::DstIo) => {
                let kind = "request_body_failed";
                return upstream_failed(down, cx, req, 502, kind, started, Some(lease)).await;
            }
            Err(BodyError::SrcFraming(why)) => {
                drop(lease);
                reject(down, cx, 400, why).await;
                return Next::Close;
            }
            Err(BodyError::SrcTimeout) => {
                drop(lease);
                reject(down, cx, 408, "request body too slow").await;
                return Next::Close;
            }
            Err(BodyError::SrcTooLarge) => {
                drop(lease);
                reject(down, cx, 413, "request body too large").await;
                return Next::Close;
            }
            Err(_) => {
                // The partner went away mid-body; what reached the upstream is
                // counted and logged as nginx does: 499, client closed request.
                drop(lease);
                let o = Some(crate::outcome::Outcome::PeerClosed);
                respond::finish(cx, req, 499, &ucfg.name, started, 0, o);
                return Next::Close;
            }
        }
    }
    respond(down, cx, req, lease, started, false).await
}
