//! One byte-stream interface over plain TCP and TLS, in io_uring's owned-buffer style.

use crate::tls::TlsStream;
use rustls::{ConnectionCommon, SideData};
use std::io;
use std::net::Shutdown;
use std::ops::DerefMut;
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
}

impl Io for TcpStream {
    async fn read(&self, mut buf: Vec<u8>) -> (io::Result<usize>, Vec<u8>) {
        if buf.capacity() == 0 {
            buf = crate::bufpool::small();
        } else if buf.capacity() == buf.len() {
            buf.reserve(crate::bufpool::SMALL);
        }
        TcpStream::read(self, buf).await
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
}

impl<C, S> Io for TlsStream<C>
where
    C: DerefMut<Target = ConnectionCommon<S>>,
    S: SideData,
{
    async fn read(&self, buf: Vec<u8>) -> (io::Result<usize>, Vec<u8>) {
        TlsStream::read(self, buf).await
    }
    async fn write_all(&self, buf: Vec<u8>) -> (io::Result<()>, Vec<u8>) {
        TlsStream::write_all(self, buf).await
    }
    async fn shutdown_write(&self) -> io::Result<()> {
        TlsStream::shutdown_write(self).await
    }
    fn abort(&self) {
        TlsStream::abort(self)
    }
}
