//! One byte-stream interface over plain TCP and TLS, in io_uring's owned-buffer style.

use crate::bufpool;
use crate::tls::{ClientStream, ServerStream};
use std::io;
use std::net::Shutdown;
use std::time::Duration;
use tokio::time::{timeout, timeout_at, Instant};
use tokio_uring::buf::BoundedBuf;
use tokio_uring::net::TcpStream;

/// Futures here are `!Send` on purpose: every connection lives on one worker.
#[allow(async_fn_in_trait)]
pub trait Io {
    /// Appends bytes to `buf`'s spare capacity; `Ok(0)` is end of stream.
    async fn read(&self, buf: Vec<u8>) -> (io::Result<usize>, Vec<u8>);
    async fn write_all(&self, buf: Vec<u8>) -> (io::Result<()>, Vec<u8>);
    /// Half-close: the peer reads end of stream, we can still read.
    async fn shutdown_write(&self) -> io::Result<()>;
    /// Ends the connection now so pending operations complete.
    fn abort(&self);
    /// Ends only our reading: a pending read completes (end of stream) and we
    /// can still write, e.g. a 408 after a body read timed out.
    fn stop_reading(&self);
    /// After a read saw end of stream: did the peer end it properly (TLS:
    /// with close_notify, not a bare TCP close that may be a truncation)?
    fn closed_cleanly(&self) -> bool {
        true
    }
}

impl Io for TcpStream {
    async fn read(&self, mut buf: Vec<u8>) -> (io::Result<usize>, Vec<u8>) {
        if buf.capacity() == 0 {
            buf = bufpool::small();
        } else if buf.capacity() == buf.len() {
            buf.reserve(bufpool::SMALL);
        }
        // tokio-uring reads a `Vec` at offset 0, over what it holds: read into
        // the spare capacity so bytes already buffered stay (DESIGN.md).
        let start = buf.len();
        let end = buf.capacity();
        let (res, slice) = TcpStream::read(self, buf.slice(start..end)).await;
        (res, slice.into_inner())
    }
    async fn write_all(&self, buf: Vec<u8>) -> (io::Result<()>, Vec<u8>) {
        TcpStream::write_all(self, buf).await
    }
    async fn shutdown_write(&self) -> io::Result<()> {
        self.shutdown(Shutdown::Write)
    }
    fn abort(&self) {
        let _ = self.shutdown(Shutdown::Both);
    }
    fn stop_reading(&self) {
        let _ = self.shutdown(Shutdown::Read);
    }
}

/// Both ends' TLS streams, named through `tls` (the one module that knows rustls).
macro_rules! tls_io {
    ($t:ty) => {
        impl Io for $t {
            async fn read(&self, buf: Vec<u8>) -> (io::Result<usize>, Vec<u8>) {
                <$t>::read(self, buf).await
            }
            async fn write_all(&self, buf: Vec<u8>) -> (io::Result<()>, Vec<u8>) {
                <$t>::write_all(self, buf).await
            }
            async fn shutdown_write(&self) -> io::Result<()> {
                <$t>::shutdown_write(self).await
            }
            fn abort(&self) {
                <$t>::abort(self)
            }
            fn stop_reading(&self) {
                let _ = self.tcp().shutdown(Shutdown::Read);
            }
            fn closed_cleanly(&self) -> bool {
                <$t>::closed_cleanly(self)
            }
        }
    };
}

tls_io!(ServerStream);
tls_io!(ClientStream);

/// Writes all of `buf` within `t`; on expiry the connection is aborted (so the
/// pending write completes) and the result is an error. Every write the proxy
/// makes to a peer goes through here or carries its own deadline.
pub async fn send<D: Io>(d: &D, buf: Vec<u8>, t: Duration) -> io::Result<Vec<u8>> {
    match timeout(t, d.write_all(buf)).await {
        Ok((Ok(()), b)) => Ok(b),
        Ok((Err(e), b)) => {
            bufpool::give(b);
            Err(e)
        }
        Err(_) => {
            d.abort();
            Err(io::ErrorKind::TimedOut.into())
        }
    }
}

/// How long a closing connection may keep draining what the peer still sends.
const LINGER: Duration = Duration::from_secs(2);
/// How much of it we read before giving up on a clean close.
const LINGER_BYTES: usize = 4 * 1024 * 1024;

/// After our side is shut for writing: reads and discards what the peer is
/// still sending, briefly. Closing a socket with unread data makes the kernel
/// send a reset, which can destroy the error response or TLS alert we just
/// sent before the peer reads it (nginx's lingering close).
pub async fn linger<D: Io>(d: &D) {
    let deadline = Instant::now() + LINGER;
    let mut drained = 0;
    let mut buf = bufpool::small();
    while drained < LINGER_BYTES {
        buf.clear();
        match timeout_at(deadline, d.read(buf)).await {
            Ok((Ok(n), b)) if n > 0 => {
                drained += n;
                buf = b;
            }
            Ok((_, b)) => {
                buf = b;
                break;
            }
            Err(_) => {
                d.abort();
                return;
            }
        }
    }
    bufpool::give(buf);
}
