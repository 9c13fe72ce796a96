//! The one place that drives a rustls connection over io_uring's owned buffers.
//!
//! rustls's unbuffered API (`engine`): ciphertext is read into pooled buffers
//! and decrypted there, with no rustls-owned deframer buffer (4 KiB that every
//! connection kept once it had read anything) and no copy into it; records are
//! encoded and encrypted into a pooled out buffer written with one
//! `write_all`. Methods take `&self` so the two directions of a tcp-mode pipe
//! can run at once: the rustls state is touched only between awaits, and
//! socket writes are serialised by a per-connection lock so records never
//! interleave. Generic over its `Transport` (a tokio-uring socket in
//! production, an in-memory pipe in the tests), so the driver is tested
//! without sockets.

use super::engine::{Act, Engine, Out, Side, Step};
use crate::bufpool::{self, Pooled};
use std::cell::{Cell, RefCell};
use std::io;
use std::net::Shutdown;
use std::time::{Duration, Instant};
use tokio_uring::buf::BoundedBuf;
use tokio_uring::net::TcpStream;

/// What the driver needs of a byte transport, in io_uring's owned-buffer style.
#[allow(async_fn_in_trait)]
pub trait Transport {
    /// Reads into `buf`'s spare capacity, up to `cap` bytes in all (appends).
    async fn read(&self, buf: Pooled, cap: usize) -> (io::Result<usize>, Pooled);
    /// Writes the first `len` bytes of `buf`.
    async fn write_all(&self, buf: Pooled, len: usize) -> (io::Result<()>, Pooled);
    fn shutdown(&self, how: Shutdown) -> io::Result<()>;
}

impl Transport for TcpStream {
    async fn read(&self, buf: Pooled, cap: usize) -> (io::Result<usize>, Pooled) {
        let start = buf.len();
        let (res, slice) = TcpStream::read(self, buf.slice(start..cap)).await;
        (res, slice.into_inner())
    }
    async fn write_all(&self, buf: Pooled, len: usize) -> (io::Result<()>, Pooled) {
        let (res, slice) = TcpStream::write_all(self, buf.slice(..len)).await;
        (res, slice.into_inner())
    }
    fn shutdown(&self, how: Shutdown) -> io::Result<()> {
        TcpStream::shutdown(self, how)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("{0}")]
    Io(#[from] io::Error),
    #[error("{0}")]
    Tls(rustls::Error),
    #[error("peer closed the connection")]
    PeerClosed,
}

fn invalid(e: rustls::Error) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, e)
}

pub struct TlsStream<C, T = TcpStream> {
    tcp: T,
    engine: RefCell<Engine<C>>,
    /// Records encoded and not yet written. One queue for both directions:
    /// a record the reader's step produced (an alert) takes its sequence
    /// number then, so it must go out before anything encrypted after it.
    queued: RefCell<Out>,
    /// Taken by whoever writes `queued` out, so writes never interleave.
    write_lock: tokio::sync::Mutex<()>,
    /// We sent close_notify: nothing more may be encrypted.
    write_closed: Cell<bool>,
    /// A write of records failed or was abandoned mid-way: what follows it
    /// would not decrypt at the peer, so nothing more is written.
    broken: Cell<bool>,
    /// The last read filled its buffer: the next one uses a big buffer.
    want_big: Cell<bool>,
    /// Time spent in rustls during the handshake (processing received
    /// records, producing ours): the gateway's own cost, network waits aside.
    cpu: Cell<Duration>,
    /// The partner a refused handshake was for, when the verifier could name it.
    refused: RefCell<Option<String>>,
    /// The server name the client asked for (seen by the certificate resolver:
    /// rustls's unbuffered connection does not keep it).
    sni: RefCell<Option<String>>,
}

impl<C: Side, T: Transport> TlsStream<C, T> {
    pub fn new(tcp: T, conn: C) -> Self {
        TlsStream {
            tcp,
            engine: RefCell::new(Engine::new(conn)),
            queued: RefCell::new(Out::default()),
            write_lock: tokio::sync::Mutex::new(()),
            write_closed: Cell::new(false),
            broken: Cell::new(false),
            want_big: Cell::new(false),
            cpu: Cell::new(Duration::ZERO),
            refused: RefCell::new(None),
            sni: RefCell::new(None),
        }
    }

    /// Whether the end of stream a read returned came with close_notify.
    pub fn closed_cleanly(&self) -> bool {
        self.engine.borrow().peer_closed
    }

    /// Time the handshake spent in rustls (see the field).
    pub fn handshake_cpu(&self) -> Duration {
        self.cpu.get()
    }

    /// The partner a refused handshake was for, if the verifier named one.
    pub fn refused_partner(&self) -> Option<String> {
        self.refused.borrow_mut().take()
    }

    /// The SNI of a server-side handshake, handed over once (to its
    /// `HandshakeInfo`).
    pub fn take_server_name(&self) -> Option<String> {
        self.sni.borrow_mut().take()
    }

    pub fn tcp(&self) -> &T {
        &self.tcp
    }

    /// Runs `f` on the rustls connection (never across an await).
    pub fn with_conn<R>(&self, f: impl FnOnce(&mut C) -> R) -> R {
        f(&mut self.engine.borrow_mut().conn)
    }

    /// One engine step; during the handshake its time is the gateway's CPU,
    /// and what the verifier and resolver noted is taken now, before any
    /// other connection's handshake runs on this thread.
    fn step(&self, sink: Option<&mut Vec<u8>>, act: Act<'_>) -> Result<Step, rustls::Error> {
        let mut e = self.engine.borrow_mut();
        let out = &mut *self.queued.borrow_mut();
        if !e.conn.is_handshaking() {
            return e.step(out, sink, act);
        }
        let _ = super::peer_verifier::take_refused(); // nothing stale
        let _ = super::server::take_sni();
        let t = Instant::now();
        let r = e.step(out, sink, act);
        self.cpu.set(self.cpu.get() + t.elapsed());
        if r.is_err() {
            *self.refused.borrow_mut() = super::peer_verifier::take_refused();
        }
        if let Some(name) = super::server::take_sni() {
            *self.sni.borrow_mut() = Some(name);
        }
        r
    }

    /// Writes the queued records, if any.
    async fn send(&self) -> io::Result<()> {
        if self.queued.borrow().is_empty() {
            return Ok(());
        }
        let _guard = self.write_lock.lock().await;
        self.write_queued().await
    }

    /// `send` for a caller that holds the write lock already.
    async fn write_queued(&self) -> io::Result<()> {
        if self.broken.get() {
            return Err(io::ErrorKind::BrokenPipe.into());
        }
        let Some((b, len)) = self.queued.borrow_mut().take() else {
            return Ok(());
        };
        // Marks the stream broken unless the write completes: a failed write,
        // or this future dropped (a timeout) while the ring still writes.
        let mut guard = Broken(Some(&self.broken));
        let r = self.tcp.write_all(b, len).await.0;
        if r.is_ok() {
            guard.0 = None;
        }
        r
    }

    /// Drives the handshake to completion, flushing the server's last flight
    /// (and TLS 1.3 tickets). On a TLS error the alert rustls queued is sent.
    pub async fn handshake(&self) -> Result<(), TlsError> {
        loop {
            let r = self.step(None, Act::Nothing);
            let sent = self.send().await;
            let done = match r {
                Err(e) => return Err(TlsError::Tls(e)),
                Ok(s) => s != Step::Blocked && !self.engine.borrow().conn.is_handshaking(),
            };
            sent?;
            if done {
                return Ok(());
            }
            if !self.fill().await? {
                return Err(TlsError::PeerClosed);
            }
        }
    }

    /// Reads from the socket once, after what is already pending. `Ok(false)` on EOF.
    async fn fill(&self) -> Result<bool, TlsError> {
        let big = self.want_big.get();
        let (buf, copied, generation) = self
            .engine
            .borrow_mut()
            .read_buffer(big)
            .map_err(TlsError::Tls)?;
        let cap = buf.capacity();
        let (res, buf) = self.tcp.read(buf, cap).await;
        let n = res?;
        self.want_big.set(copied + n == cap);
        self.engine.borrow_mut().received(buf, copied, generation);
        Ok(n > 0)
    }

    /// Whether decrypted or received bytes wait here, or the stream failed:
    /// a pooled connection either way is not idle (a peek at the socket
    /// can't see any of it).
    pub fn has_buffered_plaintext(&self) -> bool {
        let e = self.engine.borrow();
        e.holds_data() || e.is_failed() || !self.queued.borrow().is_empty() || self.broken.get()
    }

    /// Appends decrypted bytes to `buf`'s spare capacity. `Ok(0)` is end of
    /// stream (close_notify, or TCP EOF without it: many clients skip it).
    /// A `buf` without capacity gets a pooled one only once bytes arrived, so
    /// a connection waiting for its next request holds just the read buffer.
    pub async fn read(&self, mut buf: Vec<u8>) -> (io::Result<usize>, Vec<u8>) {
        let mut eof = false;
        loop {
            let start = buf.len();
            if self.engine.borrow().holds_data() {
                if buf.capacity() == 0 {
                    buf = bufpool::small();
                } else if buf.capacity() == buf.len() {
                    buf.reserve(bufpool::SMALL);
                }
            }
            let n = self.engine.borrow_mut().take_plain(&mut buf);
            if n > 0 {
                return (Ok(n), buf);
            }
            let sink = (buf.capacity() > buf.len()).then_some(&mut buf);
            let r = self.step(sink, Act::Nothing);
            // What the step queued (an alert; rustls keeps a KeyUpdate answer
            // for our next write) goes out before we wait again.
            let sent = self.send().await;
            match r {
                Err(e) => return (Err(invalid(e)), buf),
                Ok(_) if buf.len() > start => return (Ok(buf.len() - start), buf),
                Ok(_) if self.engine.borrow().has_plain() => continue,
                Ok(_) => {}
            }
            if let Err(e) = sent {
                return (Err(e), buf);
            }
            if self.engine.borrow().peer_closed || eof {
                return (Ok(0), buf);
            }
            match self.fill().await {
                Ok(more) => eof = !more,
                Err(TlsError::Io(e)) => return (Err(e), buf),
                Err(TlsError::Tls(e)) => return (Err(invalid(e)), buf),
                Err(e) => return (Err(io::Error::other(e.to_string())), buf),
            }
        }
    }

    /// Encrypts and sends all of `buf`.
    pub async fn write_all(&self, buf: Vec<u8>) -> (io::Result<()>, Vec<u8>) {
        let _guard = self.write_lock.lock().await;
        let mut off = 0;
        while off < buf.len() {
            if self.write_closed.get() || self.broken.get() {
                return (Err(io::ErrorKind::BrokenPipe.into()), buf);
            }
            let taken = match self.step(None, Act::Encrypt(&buf[off..])) {
                Ok(Step::Open { taken }) => taken,
                Ok(Step::Blocked) => return (Err(io::ErrorKind::NotConnected.into()), buf),
                Ok(Step::Closed) => return (Err(io::ErrorKind::BrokenPipe.into()), buf),
                Err(e) => {
                    let _ = self.write_queued().await; // the alert, if any
                    return (Err(invalid(e)), buf);
                }
            };
            if taken == 0 && self.queued.borrow().is_empty() {
                return (Err(io::ErrorKind::WriteZero.into()), buf);
            }
            off += taken;
            if let Err(e) = self.write_queued().await {
                return (Err(e), buf);
            }
        }
        (Ok(()), buf)
    }

    /// Sends close_notify and half-closes the socket.
    pub async fn shutdown_write(&self) -> io::Result<()> {
        {
            // Under the lock: close_notify comes after every record of a
            // write in progress, and nothing is encrypted after it.
            let _guard = self.write_lock.lock().await;
            if !self.write_closed.replace(true) {
                // A failed or never-finished connection has no close_notify to send.
                let _ = self.step(None, Act::CloseNotify);
            }
            self.write_queued().await?;
        }
        self.tcp.shutdown(Shutdown::Write)
    }

    /// Ends the connection now: a pending read or write on it completes, so a
    /// timed-out operation does not pin the socket (see DESIGN.md).
    pub fn abort(&self) {
        let _ = self.tcp.shutdown(Shutdown::Both);
    }

    /// Whether any received or queued bytes are held (tests of what a
    /// failed or idle connection keeps).
    #[cfg(test)]
    fn holds_bytes(&self) -> bool {
        self.engine.borrow().holds_data() || !self.queued.borrow().is_empty()
    }

    /// Asks rustls to update our keys and the peer's (tests of the KeyUpdate path).
    #[cfg(test)]
    async fn request_key_update(&self) -> Result<(), TlsError> {
        self.step(None, Act::KeyUpdate).map_err(TlsError::Tls)?;
        Ok(self.send().await?)
    }
}

/// Sets its flag when dropped still armed (see `write_queued`).
struct Broken<'a>(Option<&'a Cell<bool>>);

impl Drop for Broken<'_> {
    fn drop(&mut self) {
        if let Some(flag) = self.0 {
            flag.set(true);
        }
    }
}

#[cfg(test)]
#[path = "stream_tests.rs"]
mod tests;

#[cfg(test)]
#[path = "stream_hostile_tests.rs"]
mod hostile_tests;
