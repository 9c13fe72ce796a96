//! The one place that drives a rustls connection over io_uring's owned buffers.
//!
//! Ciphertext is read into pooled buffers (small while idle, big while busy),
//! fed to `read_tls`/`process_new_packets`; outgoing records are collected with
//! `write_tls` into a pooled buffer and written with `write_all`. Methods take
//! `&self` so the two directions of a tcp-mode pipe can run at once; socket
//! writes are serialised by a per-connection lock so records never interleave.
//! Generic over its `Transport` (a tokio-uring socket in production, an
//! in-memory pipe in the tests), so the driver is tested without sockets.

use crate::bufpool::{self, Pooled};
use rustls::{ConnectionCommon, SideData};
use std::cell::{Cell, RefCell};
use std::io::{self, Read, Write};
use std::net::Shutdown;
use std::ops::DerefMut;
use std::time::{Duration, Instant};
use tokio_uring::buf::BoundedBuf;
use tokio_uring::net::TcpStream;

/// What the driver needs of a byte transport, in io_uring's owned-buffer style.
#[allow(async_fn_in_trait)]
pub trait Transport {
    /// Reads at most `cap` bytes into the empty `buf`.
    async fn read(&self, buf: Pooled, cap: usize) -> (io::Result<usize>, Pooled);
    async fn write_all(&self, buf: Pooled) -> (io::Result<()>, Pooled);
    fn shutdown(&self, how: Shutdown) -> io::Result<()>;
}

impl Transport for TcpStream {
    async fn read(&self, buf: Pooled, cap: usize) -> (io::Result<usize>, Pooled) {
        let (res, slice) = TcpStream::read(self, buf.slice(0..cap)).await;
        (res, slice.into_inner())
    }
    async fn write_all(&self, buf: Pooled) -> (io::Result<()>, Pooled) {
        TcpStream::write_all(self, buf).await
    }
    fn shutdown(&self, how: Shutdown) -> io::Result<()> {
        TcpStream::shutdown(self, how)
    }
}

/// rustls's fixed limit on buffered received plaintext.
const MAX_CIPHERTEXT_READ: usize = 16 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("{0}")]
    Io(#[from] io::Error),
    #[error("{0}")]
    Tls(rustls::Error),
    #[error("peer closed the connection")]
    PeerClosed,
}

pub struct TlsStream<C, T = TcpStream> {
    tcp: T,
    conn: RefCell<C>,
    write_lock: tokio::sync::Mutex<()>,
    /// The last read filled its buffer: the next one uses a big buffer.
    want_big: Cell<bool>,
    /// Time spent in rustls during the handshake (processing received
    /// records, producing ours): the gateway's own cost, network waits aside.
    cpu: Cell<Duration>,
    /// The partner a refused handshake was for, when the verifier could name it.
    refused: RefCell<Option<String>>,
    /// The peer ended its side with close_notify (not a bare TCP close).
    close_notify: Cell<bool>,
}

impl<C, S, T> TlsStream<C, T>
where
    C: DerefMut<Target = ConnectionCommon<S>>,
    S: SideData,
    T: Transport,
{
    pub fn new(tcp: T, conn: C) -> Self {
        TlsStream {
            tcp,
            conn: RefCell::new(conn),
            write_lock: tokio::sync::Mutex::new(()),
            want_big: Cell::new(false),
            cpu: Cell::new(Duration::ZERO),
            refused: RefCell::new(None),
            close_notify: Cell::new(false),
        }
    }

    /// Whether the end of stream a read returned came with close_notify.
    pub fn closed_cleanly(&self) -> bool {
        self.close_notify.get()
    }

    /// Time the handshake spent in rustls (see the field).
    pub fn handshake_cpu(&self) -> Duration {
        self.cpu.get()
    }

    /// The partner a refused handshake was for, if the verifier named one.
    pub fn refused_partner(&self) -> Option<String> {
        self.refused.borrow_mut().take()
    }

    pub fn tcp(&self) -> &T {
        &self.tcp
    }

    /// Runs `f` on the rustls connection (never across an await).
    pub fn with_conn<R>(&self, f: impl FnOnce(&mut C) -> R) -> R {
        f(&mut self.conn.borrow_mut())
    }

    /// Drives the handshake to completion, flushing the server's last flight
    /// (and TLS 1.3 tickets). On a TLS error the alert rustls queued is sent.
    pub async fn handshake(&self) -> Result<(), TlsError> {
        loop {
            if self.conn.borrow().wants_write() {
                self.flush().await?;
            }
            if !self.conn.borrow().is_handshaking() {
                break;
            }
            if !self.fill().await? {
                return Err(TlsError::PeerClosed);
            }
        }
        if self.conn.borrow().wants_write() {
            self.flush().await?;
        }
        Ok(())
    }

    /// Reads ciphertext once and processes it. `Ok(false)` on EOF.
    async fn fill(&self) -> Result<bool, TlsError> {
        let buf = if self.want_big.get() {
            Pooled::big()
        } else {
            Pooled::small()
        };
        // rustls refuses ciphertext once more than 16 KiB of plaintext waits to be
        // read; callers drain plaintext before filling, so never read more than that.
        let cap = buf.capacity().min(MAX_CIPHERTEXT_READ);
        let (res, buf) = self.tcp.read(buf, cap).await;
        let n = res?;
        self.want_big.set(n == cap);
        let result = self.feed(&buf[..n]);
        drop(buf); // back to the pool before any await
        if let Err(e) = result {
            // rustls queued a fatal alert: try to send it, the error wins anyway.
            let _ = self.flush().await;
            return Err(e);
        }
        Ok(n > 0)
    }

    fn feed(&self, data: &[u8]) -> Result<(), TlsError> {
        let handshaking = self.conn.borrow().is_handshaking();
        if !handshaking {
            return self.process(data);
        }
        let _ = super::peer_verifier::take_refused(); // nothing stale
        let t = Instant::now();
        let r = self.process(data);
        self.cpu.set(self.cpu.get() + t.elapsed());
        if r.is_err() {
            // Taken now: no other connection's handshake has run since.
            *self.refused.borrow_mut() = super::peer_verifier::take_refused();
        }
        r
    }

    fn process(&self, mut data: &[u8]) -> Result<(), TlsError> {
        let mut conn = self.conn.borrow_mut();
        let data_was_empty = data.is_empty();
        if data_was_empty {
            conn.read_tls(&mut io::empty())?;
        }
        while !data.is_empty() {
            let n = conn.read_tls(&mut data)?;
            conn.process_new_packets().map_err(TlsError::Tls)?;
            if n == 0 {
                break;
            }
        }
        if data_was_empty {
            conn.process_new_packets().map_err(TlsError::Tls)?;
        }
        Ok(())
    }

    /// Whether rustls holds decrypted bytes nobody has read: a pooled
    /// connection with some is not idle (a peek at the socket can't see them).
    pub fn has_buffered_plaintext(&self) -> bool {
        self.conn
            .borrow_mut()
            .process_new_packets()
            .map_or(true, |s| s.plaintext_bytes_to_read() > 0)
    }

    /// Writes every pending TLS record to the socket.
    pub async fn flush(&self) -> io::Result<()> {
        let _guard = self.write_lock.lock().await;
        loop {
            let mut out = Pooled::out();
            {
                let mut conn = self.conn.borrow_mut();
                let t = conn.is_handshaking().then(Instant::now);
                // Bounded by the pooled buffer's capacity: a grown Vec would be
                // a realloc and a copy of everything already in it.
                while conn.wants_write() && out.len() < out.capacity() {
                    conn.write_tls(&mut Bounded(&mut out))?;
                }
                if let Some(t) = t {
                    self.cpu.set(self.cpu.get() + t.elapsed());
                }
            }
            if out.is_empty() {
                return Ok(());
            }
            self.tcp.write_all(out).await.0?;
        }
    }

    /// Appends decrypted bytes to `buf`'s spare capacity. `Ok(0)` is end of
    /// stream (close_notify, or TCP EOF without it: many clients skip it).
    /// A `buf` without capacity gets a pooled one only once plaintext is there,
    /// so a connection waiting for its next request holds just the read buffer.
    pub async fn read(&self, mut buf: Vec<u8>) -> (io::Result<usize>, Vec<u8>) {
        let mut eof = false;
        loop {
            let state = self.conn.borrow_mut().process_new_packets();
            let state = match state {
                Ok(s) => s,
                Err(e) => return (Err(io::Error::new(io::ErrorKind::InvalidData, e)), buf),
            };
            if state.plaintext_bytes_to_read() > 0 {
                if buf.capacity() == 0 {
                    buf = bufpool::small();
                } else if buf.capacity() == buf.len() {
                    buf.reserve(bufpool::SMALL);
                }
                let start = buf.len();
                let mut conn = self.conn.borrow_mut();
                buf.resize(buf.capacity(), 0);
                let r = conn.reader().read(&mut buf[start..]);
                buf.truncate(start + *r.as_ref().unwrap_or(&0));
                return (r, buf);
            }
            if state.peer_has_closed() || eof {
                self.close_notify.set(state.peer_has_closed());
                return (Ok(0), buf);
            }
            if self.conn.borrow().wants_write() {
                if let Err(e) = self.flush().await {
                    return (Err(e), buf);
                }
            }
            match self.fill().await {
                Ok(more) => eof = !more,
                Err(TlsError::Io(e)) => return (Err(e), buf),
                Err(e) => {
                    return (
                        Err(io::Error::new(io::ErrorKind::InvalidData, e.to_string())),
                        buf,
                    )
                }
            }
        }
    }

    /// Encrypts and sends all of `buf`.
    pub async fn write_all(&self, buf: Vec<u8>) -> (io::Result<()>, Vec<u8>) {
        let mut off = 0;
        let mut took_nothing = false;
        while off < buf.len() {
            let end = (off + bufpool::BIG).min(buf.len());
            // rustls takes what fits its outgoing limit, less when records it
            // queued itself wait (a KeyUpdate answer): flush, then the rest.
            let n = match self.conn.borrow_mut().writer().write(&buf[off..end]) {
                Ok(n) => n,
                Err(e) => return (Err(e), buf),
            };
            if n == 0 && took_nothing {
                return (Err(io::ErrorKind::WriteZero.into()), buf);
            }
            took_nothing = n == 0;
            off += n;
            if let Err(e) = self.flush().await {
                return (Err(e), buf);
            }
        }
        (Ok(()), buf)
    }

    /// Sends close_notify and half-closes the socket.
    pub async fn shutdown_write(&self) -> io::Result<()> {
        self.conn.borrow_mut().send_close_notify();
        self.flush().await?;
        self.tcp.shutdown(Shutdown::Write)
    }

    /// Ends the connection now: a pending read or write on it completes, so a
    /// timed-out operation does not pin the socket (see DESIGN.md).
    pub fn abort(&self) {
        let _ = self.tcp.shutdown(Shutdown::Both);
    }
}

#[cfg(test)]
#[path = "stream_tests.rs"]
mod tests;

/// Appends to a Vec up to its capacity, never growing it (rustls keeps what
/// did not fit and hands it over on the next call).
struct Bounded<'a>(&'a mut Vec<u8>);

impl Write for Bounded<'_> {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        let n = data.len().min(self.0.capacity() - self.0.len());
        self.0.extend_from_slice(&data[..n]);
        Ok(n)
    }

    fn write_vectored(&mut self, bufs: &[io::IoSlice<'_>]) -> io::Result<usize> {
        let mut total = 0;
        for b in bufs {
            let n = self.write(b)?;
            total += n;
            if n < b.len() {
                break;
            }
        }
        Ok(total)
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}
