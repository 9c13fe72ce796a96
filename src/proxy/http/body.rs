//! Streams a message body from one side to the other in pooled buffers,
//! never holding more than one buffer of it (no full buffering).

use super::chunked::ChunkedDecoder;
use super::head::BodyKind;
use crate::bufpool;
use crate::proxy::io::Io;
use std::time::Duration;
use tokio::time::timeout;

/// Which side failed, and how: the reader (source) or the writer (sink).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodyError {
    SrcTimeout,
    SrcIo,
    /// The source closed before the body's declared end.
    SrcTruncated,
    SrcFraming(&'static str),
    DstTimeout,
    DstIo,
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

/// Copies one body. `pending` holds bytes already read from `src`; on success
/// it holds whatever was read past the end of this body (a pipelined request).
/// `dechunk`: a chunked body is sent as its plain data (for HTTP/1.0 partners,
/// who get it close-delimited).
pub async fn copy<S: Io, D: Io>(
    src: &S,
    dst: &D,
    kind: BodyKind,
    pending: &mut Vec<u8>,
    read_timeout: Duration,
    write_timeout: Duration,
    dechunk: bool,
) -> Result<u64, BodyError> {
    let mut remaining = match kind {
        BodyKind::None => return Ok(0),
        BodyKind::Length(n) => n,
        BodyKind::Chunked | BodyKind::Close => u64::MAX,
    };
    let mut chunked = (kind == BodyKind::Chunked).then(ChunkedDecoder::new);
    let mut total = 0u64;
    let mut buf = std::mem::take(pending);
    loop {
        // `buf` holds unforwarded source bytes; decide how many belong to the body.
        let take = match &mut chunked {
            Some(d) if dechunk => {
                let mut data = Vec::with_capacity(buf.len());
                let used = d
                    .advance_with(&buf, |x| data.extend_from_slice(x))
                    .map_err(|e| BodyError::SrcFraming(e.0))?;
                pending.extend_from_slice(&buf[used..]);
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
        if kind != BodyKind::Close {
            remaining -= take as u64;
        }
        total += take as u64;
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
        let (res, b) = match timeout(read_timeout, src.read(buf)).await {
            Err(_) => {
                src.abort();
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
