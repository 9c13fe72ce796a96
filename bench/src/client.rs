//! The benchmark's TLS client: rustls configs from the command line and one
//! operation per mode (full or resumed handshake, keep-alive request).
//!
//! A TLS 1.3 handshake counts only once the server has confirmed it (its
//! NewSessionTicket arrived), since the client finishes before the server has
//! checked the client certificate; the session store counts tickets per thread.

use rustls::client::{ClientSessionMemoryCache, ClientSessionStore};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use rustls::{ClientConfig, ClientConnection, HandshakeKind, NamedGroup, RootCertStore};
use std::cell::Cell;
use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::Arc;
use std::time::Duration;

thread_local! {
    static TICKETS: Cell<u64> = const { Cell::new(0) };
}

/// Counts tickets for this thread; keeps them only when `keep` (resume mode).
#[derive(Debug)]
struct CountingStore {
    keep: bool,
    inner: ClientSessionMemoryCache,
}

impl ClientSessionStore for CountingStore {
    fn set_kx_hint(&self, n: ServerName<'static>, g: NamedGroup) {
        self.inner.set_kx_hint(n, g)
    }
    fn kx_hint(&self, n: &ServerName<'_>) -> Option<NamedGroup> {
        self.inner.kx_hint(n)
    }
    fn set_tls12_session(
        &self,
        n: ServerName<'static>,
        v: rustls::client::Tls12ClientSessionValue,
    ) {
        TICKETS.with(|t| t.set(t.get() + 1));
        if self.keep {
            self.inner.set_tls12_session(n, v)
        }
    }
    fn tls12_session(&self, n: &ServerName<'_>) -> Option<rustls::client::Tls12ClientSessionValue> {
        self.inner.tls12_session(n)
    }
    fn remove_tls12_session(&self, n: &ServerName<'static>) {
        self.inner.remove_tls12_session(n)
    }
    fn insert_tls13_ticket(
        &self,
        n: ServerName<'static>,
        v: rustls::client::Tls13ClientSessionValue,
    ) {
        TICKETS.with(|t| t.set(t.get() + 1));
        if self.keep {
            self.inner.insert_tls13_ticket(n, v)
        }
    }
    fn take_tls13_ticket(
        &self,
        n: &ServerName<'static>,
    ) -> Option<rustls::client::Tls13ClientSessionValue> {
        self.inner.take_tls13_ticket(n)
    }
}

pub struct ClientOpts {
    pub ca: String,
    pub cert: Option<String>,
    pub key: Option<String>,
    pub tls12: bool,
    pub kx: String,
    pub suite: Option<String>,
}

/// A client config; `keep_sessions` for resume mode (one per thread: no shared store).
pub fn config(o: &ClientOpts, keep_sessions: bool) -> anyhow::Result<Arc<ClientConfig>> {
    let mut roots = RootCertStore::empty();
    for c in CertificateDer::pem_file_iter(&o.ca)? {
        roots.add(c?)?;
    }
    let mut p = rustls::crypto::aws_lc_rs::default_provider();
    let group = match o.kx.as_str() {
        "x25519" => rustls::crypto::aws_lc_rs::kx_group::X25519,
        "hybrid" => rustls::crypto::aws_lc_rs::kx_group::X25519MLKEM768,
        "p256" => rustls::crypto::aws_lc_rs::kx_group::SECP256R1,
        other => anyhow::bail!("--kx {other}: use x25519, hybrid or p256"),
    };
    p.kx_groups = vec![group];
    if let Some(s) = &o.suite {
        p.cipher_suites.retain(|c| {
            c.suite()
                .as_str()
                .is_some_and(|n| n.eq_ignore_ascii_case(s))
        });
        anyhow::ensure!(!p.cipher_suites.is_empty(), "--suite {s}: unknown");
    }
    let versions: &[&rustls::SupportedProtocolVersion] = if o.tls12 {
        &[&rustls::version::TLS12]
    } else {
        &[&rustls::version::TLS13]
    };
    let b = ClientConfig::builder_with_provider(Arc::new(p))
        .with_protocol_versions(versions)?
        .with_root_certificates(roots);
    let mut cfg = match (&o.cert, &o.key) {
        (Some(c), Some(k)) => {
            let chain = CertificateDer::pem_file_iter(c)?.collect::<Result<Vec<_>, _>>()?;
            b.with_client_auth_cert(chain, PrivateKeyDer::from_pem_file(k)?)?
        }
        _ => b.with_no_client_auth(),
    };
    let store = CountingStore {
        keep: keep_sessions,
        inner: ClientSessionMemoryCache::new(64),
    };
    cfg.resumption = rustls::client::Resumption::store(Arc::new(store));
    Ok(Arc::new(cfg))
}

/// Why an operation failed: the error table's row.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Fail {
    Connect,
    Handshake,
    NotResumed,
    Timeout,
    Io,
    Http,
}

impl Fail {
    pub fn name(self) -> &'static str {
        match self {
            Fail::Connect => "connect",
            Fail::Handshake => "handshake",
            Fail::NotResumed => "not_resumed",
            Fail::Timeout => "timeout",
            Fail::Io => "io",
            Fail::Http => "http_status",
        }
    }
}

fn io_fail(e: &io::Error) -> Fail {
    match e.kind() {
        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut => Fail::Timeout,
        io::ErrorKind::InvalidData => Fail::Handshake,
        _ => Fail::Io,
    }
}

pub struct Conn {
    pub tls: ClientConnection,
    pub sock: TcpStream,
}

/// Connects and completes a handshake confirmed by the server.
pub fn handshake(
    addr: SocketAddr,
    sni: &ServerName<'static>,
    cfg: &Arc<ClientConfig>,
) -> Result<(Conn, bool), Fail> {
    let sock =
        TcpStream::connect_timeout(&addr, Duration::from_secs(10)).map_err(|_| Fail::Connect)?;
    let _ = sock.set_nodelay(true);
    let _ = sock.set_read_timeout(Some(Duration::from_secs(10)));
    let tls = ClientConnection::new(cfg.clone(), sni.clone()).map_err(|_| Fail::Handshake)?;
    let mut c = Conn { tls, sock };
    let before = TICKETS.with(Cell::get);
    while c.tls.is_handshaking() {
        c.tls.complete_io(&mut c.sock).map_err(|e| io_fail(&e))?;
    }
    let resumed = c.tls.handshake_kind() == Some(HandshakeKind::Resumed);
    if c.tls.protocol_version() == Some(rustls::ProtocolVersion::TLSv1_3) {
        // Wait for the server's ticket: it is sent only after the server accepted us.
        while TICKETS.with(Cell::get) == before {
            match c.tls.complete_io(&mut c.sock) {
                Ok((0, 0)) => return Err(Fail::Handshake), // closed without confirming
                Ok(_) => {}
                Err(e) => return Err(io_fail(&e)),
            }
        }
    }
    Ok((c, resumed))
}

/// Sends `req` and reads one Content-Length or chunked response; `buf` carries leftovers.
pub fn request(c: &mut Conn, req: &[u8], buf: &mut Vec<u8>) -> Result<(), Fail> {
    let mut s = rustls::Stream::new(&mut c.tls, &mut c.sock);
    s.write_all(req).map_err(|e| io_fail(&e))?;
    let mut chunk = [0u8; 16384];
    loop {
        let mut hs = [httparse::EMPTY_HEADER; 64];
        let mut r = httparse::Response::new(&mut hs);
        if let Ok(httparse::Status::Complete(n)) = r.parse(buf) {
            let code = r.code.unwrap_or(0);
            let len = r
                .headers
                .iter()
                .find(|h| h.name.eq_ignore_ascii_case("content-length"))
                .and_then(|h| {
                    std::str::from_utf8(h.value)
                        .ok()?
                        .trim()
                        .parse::<usize>()
                        .ok()
                })
                .ok_or(Fail::Http)?;
            while buf.len() < n + len {
                let k = s.read(&mut chunk).map_err(|e| io_fail(&e))?;
                if k == 0 {
                    return Err(Fail::Io);
                }
                buf.extend_from_slice(&chunk[..k]);
            }
            buf.drain(..n + len);
            return if (200..400).contains(&code) {
                Ok(())
            } else {
                Err(Fail::Http)
            };
        }
        let k = s.read(&mut chunk).map_err(|e| io_fail(&e))?;
        if k == 0 {
            return Err(Fail::Io);
        }
        buf.extend_from_slice(&chunk[..k]);
    }
}
