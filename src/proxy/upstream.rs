//! Upstream connections: connect (optionally with mTLS to the origin) and a
//! per-worker keep-alive pool per upstream, bounded in size.

use super::io::Io;
use crate::plan::Upstream;
use crate::tls::ClientStream;
use std::cell::{Cell, RefCell};
use std::io;
use std::os::fd::AsRawFd;
use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;
use tokio::time::{timeout, Instant};
use tokio_uring::net::TcpStream;

pub enum UpConn {
    Plain(TcpStream),
    Tls(Box<ClientStream>),
}

impl UpConn {
    fn fd(&self) -> i32 {
        match self {
            UpConn::Plain(s) => s.as_raw_fd(),
            UpConn::Tls(t) => t.tcp().as_raw_fd(),
        }
    }

    /// An idle pooled connection is usable only if the origin has neither closed
    /// it nor sent anything: no decrypted bytes wait in rustls, and a
    /// non-blocking peek finds no data yet.
    fn looks_alive(&self) -> bool {
        if let UpConn::Tls(t) = self {
            if t.has_buffered_plaintext() {
                return false;
            }
        }
        let mut b = [0u8; 1];
        // SAFETY: fd is a valid open socket owned by `self`; `b` is a live 1-byte buffer.
        let n = unsafe {
            libc::recv(
                self.fd(),
                b.as_mut_ptr().cast(),
                1,
                libc::MSG_PEEK | libc::MSG_DONTWAIT,
            )
        };
        n < 0 && io::Error::last_os_error().kind() == io::ErrorKind::WouldBlock
    }
}

impl Io for UpConn {
    async fn read(&self, buf: Vec<u8>) -> (io::Result<usize>, Vec<u8>) {
        match self {
            UpConn::Plain(s) => Io::read(s, buf).await,
            UpConn::Tls(t) => Io::read(&**t, buf).await,
        }
    }
    async fn write_all(&self, buf: Vec<u8>) -> (io::Result<()>, Vec<u8>) {
        match self {
            UpConn::Plain(s) => Io::write_all(s, buf).await,
            UpConn::Tls(t) => Io::write_all(&**t, buf).await,
        }
    }
    async fn shutdown_write(&self) -> io::Result<()> {
        match self {
            UpConn::Plain(s) => Io::shutdown_write(s).await,
            UpConn::Tls(t) => Io::shutdown_write(&**t).await,
        }
    }
    fn abort(&self) {
        match self {
            UpConn::Plain(s) => s.abort(),
            UpConn::Tls(t) => t.abort(),
        }
    }
    fn stop_reading(&self) {
        match self {
            UpConn::Plain(s) => s.stop_reading(),
            UpConn::Tls(t) => Io::stop_reading(&**t),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UpError {
    Refused,
    ConnectTimeout,
    Tls,
    PoolExhausted,
}

impl UpError {
    pub fn status(self) -> u16 {
        match self {
            UpError::Refused | UpError::Tls => 502,
            UpError::ConnectTimeout => 504,
            UpError::PoolExhausted => 503,
        }
    }
    pub fn outcome(self) -> crate::outcome::Outcome {
        use crate::outcome::Outcome;
        match self {
            UpError::Refused => Outcome::UpstreamRefused,
            UpError::ConnectTimeout => Outcome::UpstreamTimeout,
            UpError::Tls => Outcome::UpstreamTls,
            UpError::PoolExhausted => Outcome::PoolExhausted,
        }
    }
    pub fn label(self) -> &'static str {
        match self {
            UpError::Refused => "connect_failed",
            UpError::ConnectTimeout => "connect_timeout",
            UpError::Tls => "tls_failed",
            UpError::PoolExhausted => "pool_exhausted",
        }
    }
}

/// Connects to one of the upstream's addresses (round-robin, next on failure).
/// The TCP connect runs until the kernel finishes it: dropping an io_uring
/// connect early would leave its socket behind, so callers bound their own
/// wait instead (see `Pool::get`). The TLS handshake is bounded here.
pub async fn connect(ctx: &Upstream, start: usize) -> Result<UpConn, UpError> {
    let cfg = &ctx.cfg;
    let mut last = UpError::Refused;
    for i in 0..cfg.addrs.len() {
        let addr = cfg.addrs[(start + i) % cfg.addrs.len()];
        let tcp = match TcpStream::connect(addr).await {
            Err(e) => {
                tracing::debug!(upstream = %cfg.name, %addr, error = %e, "upstream connect failed");
                last = UpError::Refused;
                continue;
            }
            Ok(s) => s,
        };
        let _ = tcp.set_nodelay(true);
        let Some(tls) = &ctx.tls else {
            return Ok(UpConn::Plain(tcp));
        };
        let Ok(stream) = tls.connect(tcp) else {
            return Err(UpError::Tls);
        };
        match timeout(cfg.connect_timeout, stream.handshake()).await {
            Err(_) => {
                stream.abort();
                return Err(UpError::ConnectTimeout);
            }
            Ok(Err(e)) => {
                tracing::warn!(upstream = %cfg.name, %addr, error = %e, "upstream TLS handshake failed");
                last = UpError::Tls;
                continue;
            }
            Ok(Ok(())) => return Ok(UpConn::Tls(Box::new(stream))),
        }
    }
    Err(last)
}

/// Idle connections and a count of all open ones, for one upstream on one worker.
pub struct Pool {
    pub ctx: Arc<Upstream>,
    idle: RefCell<Vec<UpConn>>,
    open: Cell<usize>,
    next_addr: Cell<usize>,
    freed: tokio::sync::Notify,
    /// A reload replaced this upstream: keep no idle connection.
    retired: Cell<bool>,
}

/// A connection taken from the pool; dropping it closes it and frees its slot.
pub struct Lease {
    pool: Rc<Pool>,
    pub conn: Option<UpConn>,
    pub reused: bool,
}

impl Lease {
    pub fn io(&self) -> &UpConn {
        self.conn.as_ref().unwrap_or_else(|| unreachable!()) // ok: conn is Some until Drop/release
    }

    /// The pool this lease belongs to (outlives a released lease, for logs).
    pub fn upstream(&self) -> Rc<Pool> {
        self.pool.clone()
    }

    pub fn response_timeout(&self) -> Duration {
        self.pool.ctx.cfg.response_timeout
    }

    /// Puts a clean, idle connection back for the next request.
    pub fn release(mut self) {
        if self.pool.retired.get() {
            return; // dropped: closed
        }
        if let Some(c) = self.conn.take() {
            self.pool.idle.borrow_mut().push(c);
            self.pool.freed.notify_one();
        }
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        if let Some(c) = self.conn.take() {
            c.abort();
            self.pool.open.set(self.pool.open.get() - 1);
            self.pool.freed.notify_one();
        }
    }
}

impl Pool {
    /// Keeps a fresh connection nobody waits for any more (its slot is already counted).
    fn park(&self, c: UpConn) {
        self.idle.borrow_mut().push(c);
        self.freed.notify_one();
    }

    pub fn new(ctx: Arc<Upstream>) -> Rc<Pool> {
        Rc::new(Pool {
            ctx,
            idle: RefCell::new(Vec::new()),
            open: Cell::new(0),
            next_addr: Cell::new(0),
            retired: Cell::new(false),
            freed: tokio::sync::Notify::new(),
        })
    }

    /// After a reload replaced this upstream: closes its idle connections;
    /// leases still out close when returned.
    pub fn retire(&self) {
        self.retired.set(true);
        while let Some(c) = self.idle.borrow_mut().pop() {
            c.abort();
            self.open.set(self.open.get() - 1);
        }
    }

    /// A live idle connection, or a new one if the pool has room; otherwise waits
    /// up to `connect_timeout` for one to be freed.
    pub async fn get(self: &Rc<Self>, fresh: bool) -> Result<Lease, UpError> {
        let wait_until = Instant::now() + self.ctx.cfg.connect_timeout;
        loop {
            if !fresh {
                while let Some(c) = self.idle.borrow_mut().pop() {
                    if c.looks_alive() {
                        return Ok(Lease {
                            pool: self.clone(),
                            conn: Some(c),
                            reused: true,
                        });
                    }
                    c.abort();
                    self.open.set(self.open.get() - 1);
                }
            }
            if fresh {
                // A retry must not wait behind idle ones it will not use: drop one.
                if self.open.get() >= self.ctx.cfg.pool_size {
                    if let Some(c) = self.idle.borrow_mut().pop() {
                        c.abort();
                        self.open.set(self.open.get() - 1);
                    }
                }
            }
            if self.open.get() < self.ctx.cfg.pool_size {
                self.open.set(self.open.get() + 1);
                let start = self.next_addr.get();
                self.next_addr.set(start.wrapping_add(1));
                // The attempt runs in its own task and keeps its pool slot until
                // the kernel answers; we wait for it at most until `wait_until`.
                // A connection that arrives after we gave up is kept as idle.
                let (tx, rx) = tokio::sync::oneshot::channel();
                let pool = self.clone();
                tokio_uring::spawn(async move {
                    match connect(&pool.ctx, start).await {
                        Ok(c) => {
                            if let Err(Ok(c)) = tx.send(Ok(c)) {
                                pool.park(c);
                            }
                        }
                        Err(e) => {
                            pool.open.set(pool.open.get() - 1);
                            pool.freed.notify_one();
                            let _ = tx.send(Err(e));
                        }
                    }
                });
                return match tokio::time::timeout_at(wait_until, rx).await {
                    Ok(Ok(Ok(c))) => Ok(Lease {
                        pool: self.clone(),
                        conn: Some(c),
                        reused: false,
                    }),
                    Ok(Ok(Err(e))) => Err(e),
                    Ok(Err(_)) => Err(UpError::Refused),
                    Err(_) => Err(UpError::ConnectTimeout),
                };
            }
            let left = wait_until.saturating_duration_since(Instant::now());
            if left == Duration::ZERO || timeout(left, self.freed.notified()).await.is_err() {
                return Err(UpError::PoolExhausted);
            }
        }
    }
}
