//! Streams a message body from one side to the other in pooled buffers,
//! never holding more than one buffer of it, with a deadline on every read
//! and write.

use super::chunked::ChunkedDecoder;
use super::head::BodyKind;
use crate::bufpool;
use crate::proxy::io::Io;
use std::time::Duration;
use tokio::time::{timeout, timeout_at, Instant};

/// Which side failed, and how: the reader (source) or the writer (sink).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodyError {
    SrcTimeout,
    SrcIo,
    /// The source closed before the body's declared end.
    SrcTruncated,
    SrcFraming(&'static str),
    /// The source sent more than the body limit allows (413).
    SrcTooLarge,
    DstTimeout,
    DstIo,
}

/// What happens to chunked framing on the way through.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Chunks {
    /// Forwarded as received (validated).
    Pass,
    /// Only the data (for HTTP/1.0 partners, who get it close-delimited).
    Dechunk,
    /// Re-framed from the data alone: chunk extensions and trailers dropped
    /// (request bodies, so a partner can't pass fields the head would refuse).
    Rechunk,
}

/// How long the source may take.
#[derive(Debug, Clone, Copy)]
pub enum Pace {
    /// Each read within this time.
    PerRead(Duration),
    /// At least `rate * window` bytes in every `window` (from the start of the
    /// copy: no credit is banked beyond one window), so a slow sender can't hold
    /// the other side for long, and each read within `idle`.
    Rate {
        window: Duration,
        rate: u64,
        idle: Duration,
        /// At most this many body bytes in all (`max_body_bytes`).
        limit: Option<u64>,
    },
}

/// Where a `Pace::Rate` window stands: when it began, and the bytes by then.
struct Window {
    start: Instant,
    at: u64,
}

impl Pace {
    fn deadline(&self, w: &mut Window, received: u64) -> Instant {
        let now = Instant::now();
        match *self {
            Pace::PerRead(t) => now + t,
            Pace::Rate {
                window, rate, idle, ..
            } => {
                let quota = (rate as f64 * window.as_secs_f64()) as u64;
                if received - w.at >= quota {
                    // This window's quota is met: the next one starts now.
                    *w = Window {
                        start: now,
                        at: received,
                    };
                }
                (w.start + window).min(now + idle)
            }
        }
    }
}

async fn write<D: Io>(dst: &D, buf: Vec<u8>, t: Duration) -> Result<Vec<u8>, BodyError> {
    match timeout(t, dst.write_all(buf)).await {
        Err(_) => {
            dst.abort();
            Err(BodyError::DstTimeout)
        }
        Ok((Err(_), b)) => {
            bufpool::give(b);
            Err(BodyError::DstIo)
        }
        Ok((Ok(()), b)) => Ok(b),
    }
}

/// Appends one chunk of `data` in chunked framing.
pub fn push_chunk(out: &mut Vec<u8>, data: &[u8]) {
    if !data.is_empty() {
        out.extend_from_slice(format!("{:x}\r\n", data.len()).as_bytes());
        out.extend_from_slice(data);
        out.extend_from_slice(b"\r\n");
    }
}

/// Copies one body. `pending` holds bytes already read from `src`; on success
/// it holds whatever was read past the end of this body (a pipelined request).
/// `decoder`: a chunked body's state when part of it was already consumed.
#[allow(clippy::too_many_arguments)]
pub async fn copy<S: Io, D: Io>(
    src: &S,
    dst: &D,
    kind: BodyKind,
    decoder: Option<ChunkedDecoder>,
    pending: &mut Vec<u8>,
    pace: Pace,
    write_timeout: Duration,
    chunks: Chunks,
) -> Result<u64, BodyError> {
    let mut remaining = match kind {
        BodyKind::None => return Ok(0),
        BodyKind::Length(n) => n,
        BodyKind::Chunked | BodyKind::Close => u64::MAX,
    };
    let mut chunked = match kind {
        BodyKind::Chunked => Some(decoder.unwrap_or_default()),
        _ => None,
    };
    let mut total = 0u64;
    let mut window = Window {
        start: Instant::now(),
        at: 0,
    };
    let mut buf = std::mem::take(pending);
    loop {
        // `buf` holds unforwarded source bytes; decide how many belong to the body.
        let take = match &mut chunked {
            Some(d) if chunks != Chunks::Pass => {
                let mut data = bufpool::big();
                let used = d
                    .advance_with(&buf, |x| match chunks {
                        Chunks::Rechunk => push_chunk(&mut data, x),
                        _ => data.extend_from_slice(x),
                    })
                    .map_err(|e| BodyError::SrcFraming(e.0))?;
                if chunks == Chunks::Rechunk && d.is_done() {
                    data.extend_from_slice(b"0\r\n\r\n");
                }
                pending.extend_from_slice(&buf[used..]);
                total += used as u64;
                bufpool::give(std::mem::replace(&mut buf, data));
                buf.len()
            }
            Some(d) => d.advance(&buf).map_err(|e| BodyError::SrcFraming(e.0))?,
            None => buf.len().min(remaining.min(usize::MAX as u64) as usize),
        };
        if take < buf.len() {
            pending.extend_from_slice(&buf[take..]);
            buf.truncate(take);
        }
        if chunked.is_none() || chunks == Chunks::Pass {
            total += take as u64;
        }
        if chunked.is_none() && kind != BodyKind::Close {
            remaining -= take as u64;
        }
        if let Pace::Rate { limit: Some(m), .. } = pace {
            if total > m {
                bufpool::give(buf);
                return Err(BodyError::SrcTooLarge);
            }
        }
        if !buf.is_empty() {
            buf = write(dst, buf, write_timeout).await?;
        }
        let done = match &chunked {
            Some(d) => d.is_done(),
            None => remaining == 0,
        };
        if done {
            bufpool::give(buf);
            return Ok(total);
        }
        buf.clear();
        if buf.capacity() < bufpool::BIG {
            bufpool::give(buf);
            buf = bufpool::big();
        }
        let (res, b) = match timeout_at(pace.deadline(&mut window, total), src.read(buf)).await {
            Err(_) => {
                // Completes the pending read; the other side decides what to say.
                src.stop_reading();
                return Err(BodyError::SrcTimeout);
            }
            Ok(r) => r,
        };
        buf = b;
        match res {
            Err(_) => {
                bufpool::give(buf);
                return Err(BodyError::SrcIo);
            }
            Ok(0) if kind == BodyKind::Close => {
                bufpool::give(buf);
                return Ok(total);
            }
            Ok(0) => {
                bufpool::give(buf);
                return Err(BodyError::SrcTruncated);
            }
            Ok(_) => {}
        }
    }
}

/// Moves the part of a body already buffered in `pending` into `out`, so it
/// leaves together with the head in one write (one TLS record, one wake-up of
/// the peer); returns what is left to stream with `copy`.
pub fn take_buffered(kind: BodyKind, pending: &mut Vec<u8>, out: &mut Vec<u8>) -> BodyKind {
    match kind {
        BodyKind::Length(n) => {
            let take = (pending.len() as u64).min(n) as usize;
            out.extend_from_slice(&pending[..take]);
            pending.drain(..take);
            BodyKind::Length(n - take as u64)
        }
        BodyKind::Chunked => {
            let mut d = ChunkedDecoder::new();
            match d.advance(pending) {
                Ok(used) if d.is_done() => {
                    out.extend_from_slice(&pending[..used]);
                    pending.drain(..used);
                    BodyKind::None
                }
                // Not all here (or invalid): stream it; errors surface in `copy`.
                _ => kind,
            }
        }
        BodyKind::None | BodyKind::Close => kind,
    }
}
