//! The response half of an exchange: read the upstream's response, relay it
//! to the partner, decide keep-alive on both sides; upstream failure statuses
//! and the per-request log line.

use super::body::{self, BodyError, Chunks, Pace};
use super::head::{self, BodyKind, RequestHead};
use super::Next;
use crate::bufpool;
use crate::outcome::Outcome;
use crate::proxy::io::{self as pio, Io};
use crate::proxy::upstream::Lease;
use crate::proxy::{ConnCtx, Finished};
use tokio::time::{timeout_at, Instant};

/// Response bodies up to this size are read whole before they are relayed.
const RESPONSE_BUFFER: usize = 64 * 1024;

/// One more read of the upstream's response into `buf`'s spare room, by
/// `deadline`; the error is the status and label of the failure.
async fn read_more(
    lease: &Lease,
    mut buf: Vec<u8>,
    deadline: Instant,
) -> Result<Vec<u8>, (u16, &'static str)> {
    if buf.capacity() - buf.len() < 1024 {
        buf.reserve(buf.capacity());
    }
    match timeout_at(deadline, lease.io().read(buf)).await {
        Err(_) => Err((504, "response_timeout")),
        Ok((Ok(n), b)) if n > 0 => Ok(b),
        Ok((_, b)) => {
            bufpool::give(b);
            Err((502, "response_failed"))
        }
    }
}

/// Reads the upstream's response and relays it; decides keep-alive on both
/// sides. With `may_resend`, a connection that ends before any response byte
/// is `Next::Stale` (closed here; the caller resends the request).
pub(super) async fn respond<D: Io>(
    down: &D,
    cx: &ConnCtx<'_>,
    req: &RequestHead,
    lease: Lease,
    started: std::time::Instant,
    may_resend: bool,
) -> Next {
    let l = cx.listener;
    let rt = lease.response_timeout();
    let mut upbuf = bufpool::big();
    let deadline = Instant::now() + rt;
    let is_head = req.method == "HEAD";
    let mut received = false;
    let resp = loop {
        match head::parse_response(&upbuf, 64 * 1024, is_head) {
            Ok(Some((h, n))) if (100..200).contains(&h.code) && h.code != 101 => {
                upbuf.drain(..n);
                // RFC 9110 §15.2: an HTTP/1.0 client gets no 1xx.
                if h.code != 100 && !req.http10 {
                    let mut o = Vec::with_capacity(256);
                    head::write_response(&mut o, &h, false);
                    if pio::send(down, o, cx.send_timeout()).await.is_err() {
                        return Next::Close;
                    }
                }
                continue;
            }
            Ok(Some((h, n))) if h.code == 101 || h.code < 100 => {
                let _ = n;
                return upstream_failed(down, cx, req, 502, "bad_response", started, Some(lease))
                    .await;
            }
            Ok(Some((h, n))) => {
                upbuf.drain(..n);
                break h;
            }
            Ok(None) => {}
            Err(_) => {
                return upstream_failed(down, cx, req, 502, "bad_response", started, Some(lease))
                    .await
            }
        }
        upbuf = match read_more(&lease, upbuf, deadline).await {
            Ok(b) => {
                received = true;
                b
            }
            Err((502, _)) if may_resend && !received => return Next::Stale,
            Err((code, kind)) => {
                return upstream_failed(down, cx, req, code, kind, started, Some(lease)).await
            }
        };
    };
    // A small body is read whole before the partner gets anything, so the
    // upstream connection is back in the pool however slowly the partner reads.
    if let BodyKind::Length(n) = resp.body {
        while n <= RESPONSE_BUFFER as u64 && (upbuf.len() as u64) < n {
            upbuf = match read_more(&lease, upbuf, deadline).await {
                Ok(b) => b,
                Err((code, kind)) => {
                    return upstream_failed(down, cx, req, code, kind, started, Some(lease)).await
                }
            };
        }
    }
    // An HTTP/1.0 partner can't read chunked framing: send the data, then close.
    let dechunk = req.http10 && resp.body == BodyKind::Chunked;
    let close =
        !req.keep_alive || resp.body == BodyKind::Close || dechunk || cx.draining.borrow().active();
    let mut o = bufpool::big();
    let resp_rest = if dechunk {
        let mut h = resp.clone();
        h.body = BodyKind::Close;
        head::write_response(&mut o, &h, close);
        resp.body
    } else {
        head::write_response(&mut o, &resp, close);
        body::take_buffered(resp.body, &mut upbuf, &mut o)
    };
    let upstream = lease.upstream();
    let upstream_name = upstream.ctx.cfg.name.as_str();
    if matches!(resp_rest, BodyKind::None | BodyKind::Length(0)) {
        // Nothing more to read from the upstream: free it before the partner reads.
        let clean_end = upbuf.is_empty();
        bufpool::give(upbuf);
        if resp.reusable && clean_end {
            lease.release();
        } else {
            drop(lease); // closed now, not after the partner's write
        }
        let out_len = o.len() as u64;
        let sent = pio::send(down, o, cx.send_timeout()).await;
        let outcome = sent.is_err().then_some(Outcome::PeerClosed);
        finish(cx, req, resp.code, upstream_name, started, out_len, outcome);
        return match sent {
            Ok(o) => {
                bufpool::give(o);
                if close {
                    Next::Close
                } else {
                    Next::KeepAlive
                }
            }
            Err(_) => Next::Close,
        };
    }
    let head_len = o.len() as u64;
    match pio::send(down, o, cx.send_timeout()).await {
        Ok(o) => bufpool::give(o),
        Err(_) => {
            finish(
                cx,
                req,
                resp.code,
                upstream_name,
                started,
                0,
                Some(Outcome::PeerClosed),
            );
            return Next::Close;
        }
    }
    let mut pending = upbuf;
    let copied = body::copy(
        lease.io(),
        down,
        resp_rest,
        None,
        &mut pending,
        Pace::PerRead(rt),
        cx.send_timeout(),
        if dechunk {
            Chunks::Dechunk
        } else {
            Chunks::Pass
        },
    )
    .await;
    // Bytes past the end of the body mean the upstream's framing is off: don't reuse it.
    let clean_end = pending.is_empty();
    bufpool::give(pending);
    let (sent, outcome) = match &copied {
        Ok(n) => (head_len + n, None),
        Err(BodyError::SrcFraming(_)) => (head_len, Some(Outcome::UpstreamBadResponse)),
        Err(BodyError::SrcTimeout) => (head_len, Some(Outcome::UpstreamTimeout)),
        Err(_) => (head_len, Some(Outcome::PeerClosed)),
    };
    finish(cx, req, resp.code, upstream_name, started, sent, outcome);
    match copied {
        Ok(_) => {
            if resp.reusable && clean_end {
                lease.release();
            }
            if close {
                Next::Close
            } else {
                Next::KeepAlive
            }
        }
        Err(BodyError::SrcFraming(why)) => {
            cx.shard.upstream_error("bad_response_body");
            tracing::warn!(listener = %l.cfg.name, upstream = %upstream_name, why, "invalid upstream response body; closing");
            down.abort();
            Next::Close
        }
        Err(_) => {
            down.abort();
            Next::Close
        }
    }
}

/// Answers an upstream failure. The lease (if any) is closed first, so a
/// partner slow to take the error holds no upstream connection.
#[allow(clippy::too_many_arguments)]
pub(super) async fn upstream_failed<D: Io>(
    down: &D,
    cx: &ConnCtx<'_>,
    req: &RequestHead,
    code: u16,
    kind: &'static str,
    started: std::time::Instant,
    lease: Option<Lease>,
) -> Next {
    drop(lease);
    cx.shard.upstream_error(kind);
    tracing::warn!(listener = %cx.listener.cfg.name, peer = cx.peer_label(), method = %req.method, path = %req.path(), status = code, kind, "upstream failed");
    let outcome = match code {
        504 => Outcome::UpstreamTimeout,
        503 => Outcome::PoolExhausted,
        _ if kind == "tls_failed" => Outcome::UpstreamTls,
        _ if kind == "connect_failed" => Outcome::UpstreamRefused,
        _ if kind.starts_with("write") || kind.starts_with("request_body") => {
            Outcome::UpstreamWriteFailed
        }
        _ => Outcome::UpstreamBadResponse,
    };
    finish(cx, req, code, "-", started, 0, Some(outcome));
    // The request body may be partly unread: close rather than guess where the next request starts.
    let _ = pio::send(
        down,
        head::error_response(code, true, kind),
        cx.send_timeout(),
    )
    .await;
    Next::Close
}

/// Counts the request and writes its log line (see `ConnCtx::finish`).
pub(super) fn finish(
    cx: &ConnCtx<'_>,
    req: &RequestHead,
    status: u16,
    upstream: &str,
    started: std::time::Instant,
    bytes_out: u64,
    outcome: Option<Outcome>,
) {
    let bytes_in = match req.body {
        BodyKind::Length(n) => n,
        _ => 0,
    };
    cx.finish(Finished {
        method: &req.method,
        path: req.path(),
        status,
        upstream,
        bytes_in,
        bytes_out,
        started,
        outcome,
    });
}
