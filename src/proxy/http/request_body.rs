//! Request bodies read before an upstream connection is leased (as nginx's
//! request buffering does): a body up to `request_buffer_bytes` arrives and is
//! validated whole, so a slow or invalid sender holds no pooled upstream
//! connection and nothing of an invalid request reaches the upstream. Longer
//! bodies stream once their first `request_buffer_bytes` are in, paced
//! (`body::Pace::Rate`), chunked ones re-chunked.

use super::body::{self, BodyError};
use super::chunked::ChunkedDecoder;
use super::head::{BodyKind, RequestHead};
use crate::config::HttpRules;
use crate::proxy::io::Io;
use tokio::time::{timeout_at, Instant};

/// What is left to send after the head and the bytes `prepare` returned.
pub enum Rest {
    /// The body is complete in the returned bytes.
    Done,
    /// Stream the rest with `body::copy` (chunked: re-chunked, decoder state kept).
    Stream {
        kind: BodyKind,
        decoder: Option<ChunkedDecoder>,
        /// Body bytes (as received) already taken, for `max_body_bytes`.
        taken: u64,
    },
}

/// Reads one more time into `inbuf`'s spare room before `deadline`.
async fn read_more<D: Io>(
    down: &D,
    inbuf: &mut Vec<u8>,
    deadline: Instant,
) -> Result<(), BodyError> {
    if inbuf.capacity() - inbuf.len() < 4096 {
        inbuf.reserve(16 * 1024);
    }
    let buf = std::mem::take(inbuf);
    match timeout_at(deadline, down.read(buf)).await {
        Err(_) => {
            // Completes the pending read; the 408 can still be written.
            down.stop_reading();
            Err(BodyError::SrcTimeout)
        }
        Ok((res, b)) => {
            *inbuf = b;
            match res {
                Ok(0) => Err(BodyError::SrcTruncated),
                Ok(_) => Ok(()),
                Err(_) => Err(BodyError::SrcIo),
            }
        }
    }
}

/// Takes the start of `req`'s body from `inbuf` (reading more from `down` while
/// it fits the buffer), appends what goes upstream right after the head to
/// `out`, and sets `req.body` to the framing the upstream will get: a buffered
/// chunked body is sent as `Content-Length` data, without extensions or trailers.
pub async fn prepare<D: Io>(
    down: &D,
    rules: &HttpRules,
    req: &mut RequestHead,
    inbuf: &mut Vec<u8>,
    out: &mut Vec<u8>,
) -> Result<Rest, BodyError> {
    let deadline = Instant::now() + rules.body_timeout;
    let limit = rules.request_buffer_bytes;
    match req.body {
        BodyKind::None | BodyKind::Close => Ok(Rest::Done),
        BodyKind::Length(n) if n <= limit as u64 => {
            let n = n as usize; // ok: n <= limit, a usize
            while inbuf.len() < n {
                read_more(down, inbuf, deadline).await?;
            }
            out.extend_from_slice(&inbuf[..n]);
            inbuf.drain(..n);
            Ok(Rest::Done)
        }
        BodyKind::Length(_) => {
            // The first `limit` bytes before any upstream is leased, as for a
            // short body: a sender that never starts holds nothing upstream.
            while inbuf.len() < limit {
                read_more(down, inbuf, deadline).await?;
            }
            let before = out.len();
            let kind = body::take_buffered(req.body, inbuf, out);
            Ok(Rest::Stream {
                kind,
                decoder: None,
                taken: (out.len() - before) as u64,
            })
        }
        BodyKind::Chunked => {
            let mut d = ChunkedDecoder::new();
            let mut data = Vec::new();
            let mut consumed = 0;
            loop {
                let used = d
                    .advance_with(inbuf, |x| data.extend_from_slice(x))
                    .map_err(|e| BodyError::SrcFraming(e.0))?;
                inbuf.drain(..used);
                consumed += used;
                if rules.max_body_bytes.is_some_and(|m| data.len() as u64 > m) {
                    return Err(BodyError::SrcTooLarge);
                }
                if d.is_done() {
                    req.body = BodyKind::Length(data.len() as u64);
                    out.extend_from_slice(&data);
                    return Ok(Rest::Done);
                }
                if consumed > limit {
                    // Too long to hold: what we have leaves as the first chunk.
                    body::push_chunk(out, &data);
                    return Ok(Rest::Stream {
                        kind: BodyKind::Chunked,
                        decoder: Some(d),
                        taken: data.len() as u64,
                    });
                }
                read_more(down, inbuf, deadline).await?;
            }
        }
    }
}
