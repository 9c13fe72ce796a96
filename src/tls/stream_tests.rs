//! The TLS driver pumped through an in-memory pipe: a real rustls client and
//! server (mTLS, test PKI from rcgen), reads cut at random sizes.

use super::*;
use crate::demo::pki::{Ca, ClientSpec};
use rustls::client::UnbufferedClientConnection as ClientConnection;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use rustls::server::UnbufferedServerConnection as ServerConnection;
use std::collections::VecDeque;
use std::rc::Rc;
use std::sync::Arc;

/// One direction of the pipe.
#[derive(Default)]
pub(super) struct Half {
    pub(super) data: RefCell<VecDeque<u8>>,
    closed: Cell<bool>,
    notify: tokio::sync::Notify,
}

/// One end: reads `rx`, writes `tx`; each read returns 1..=`max_read` bytes
/// (of what is there), chosen by a seeded xorshift.
pub(super) struct End {
    pub(super) rx: Rc<Half>,
    pub(super) tx: Rc<Half>,
    seed: Cell<u64>,
    max_read: usize,
    /// Bytes written so far, and one (offset, xor mask) to corrupt on the way.
    written: Cell<usize>,
    pub(super) tamper: Cell<Option<(usize, u8)>>,
}

fn pipe(seed: u64, max_read: usize) -> (End, End) {
    let (a, b) = (Rc::new(Half::default()), Rc::new(Half::default()));
    let end = |rx: &Rc<Half>, tx: &Rc<Half>, s: u64| End {
        rx: rx.clone(),
        tx: tx.clone(),
        seed: Cell::new(s | 1),
        max_read,
        written: Cell::new(0),
        tamper: Cell::new(None),
    };
    (end(&a, &b, seed), end(&b, &a, seed.rotate_left(17)))
}

impl End {
    fn next(&self, upto: usize) -> usize {
        let mut x = self.seed.get();
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.seed.set(x);
        1 + (x as usize) % upto
    }

    pub(super) fn close(h: &Half) {
        h.closed.set(true);
        h.notify.notify_one();
    }
}

impl Transport for End {
    async fn read(&self, mut buf: Pooled, cap: usize) -> (io::Result<usize>, Pooled) {
        loop {
            {
                let mut d = self.rx.data.borrow_mut();
                if !d.is_empty() {
                    let n = self.next(cap.min(self.max_read).min(d.len()));
                    buf.extend(d.drain(..n));
                    return (Ok(n), buf);
                }
                if self.rx.closed.get() {
                    return (Ok(0), buf);
                }
            }
            self.rx.notify.notified().await;
        }
    }

    async fn write_all(&self, buf: Pooled, len: usize) -> (io::Result<()>, Pooled) {
        if self.tx.closed.get() {
            return (Err(io::ErrorKind::BrokenPipe.into()), buf);
        }
        let at = self.written.get();
        self.written.set(at + len);
        let flip = |(i, b): (usize, &u8)| match self.tamper.get() {
            Some((o, mask)) if o == at + i => *b ^ mask,
            _ => *b,
        };
        self.tx
            .data
            .borrow_mut()
            .extend(buf[..len].iter().enumerate().map(flip));
        self.tx.notify.notify_one();
        (Ok(()), buf)
    }

    fn shutdown(&self, how: Shutdown) -> io::Result<()> {
        if how != Shutdown::Read {
            End::close(&self.tx);
        }
        if how != Shutdown::Write {
            End::close(&self.rx);
        }
        Ok(())
    }
}

pub(super) type Server = TlsStream<ServerConnection, End>;
pub(super) type Client = TlsStream<ClientConnection, End>;

/// A connected, not yet handshaken client and server over a pipe.
pub(super) fn pair(seed: u64, max_read: usize) -> (Client, Server) {
    let ca = Ca::new("pipe CA").expect("test CA"); // ok: test set-up
    let server = ca.server(&["localhost"], false).expect("server cert"); // ok: test set-up
    let client = ca
        .client(&ClientSpec::named("Pipe Partner").uri("spiffe://partner.example/pipe"))
        .expect("client cert"); // ok: test set-up
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let chain = |pem: &str| -> Vec<CertificateDer<'static>> {
        CertificateDer::pem_slice_iter(pem.as_bytes())
            .collect::<Result<_, _>>()
            .expect("chain") // ok: test set-up
    };
    let key = |pem: &str| PrivateKeyDer::from_pem_slice(pem.as_bytes()).expect("key"); // ok: test set-up
    let mut roots = rustls::RootCertStore::empty();
    roots
        .add(CertificateDer::from(ca.der.clone()))
        .expect("root"); // ok: test set-up
    let roots = Arc::new(roots);
    let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
        roots.clone(),
        provider.clone(),
    )
    .build()
    .expect("verifier"); // ok: test set-up
    let scfg = rustls::ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .expect("versions") // ok: test set-up
        .with_client_cert_verifier(verifier)
        .with_single_cert(chain(&server.cert_pem), key(&server.key_pem))
        .expect("server config"); // ok: test set-up
    let ccfg = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("versions") // ok: test set-up
        .with_root_certificates(roots)
        .with_client_auth_cert(chain(&client.cert_pem), key(&client.key_pem))
        .expect("client config"); // ok: test set-up
    let name = ServerName::try_from("localhost").expect("name"); // ok: constant
    let (c_end, s_end) = pipe(seed, max_read);
    let c = ClientConnection::new(Arc::new(ccfg), name).expect("client conn"); // ok: test set-up
    let s = ServerConnection::new(Arc::new(scfg)).expect("server conn"); // ok: test set-up
    (TlsStream::new(c_end, c), TlsStream::new(s_end, s))
}

/// Runs a test's exchange; a driver that stalls fails the test instead of hanging it.
pub(super) fn block_on<F: std::future::Future>(f: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .expect("runtime") // ok: test set-up
        .block_on(async { tokio::time::timeout(std::time::Duration::from_secs(30), f).await })
        .expect("the exchange stalled") // ok: test assertion
}

/// Reads until `want` bytes arrived (or end of stream).
pub(super) async fn read_exactly<C: Side>(s: &TlsStream<C, End>, want: usize) -> Vec<u8> {
    let mut got = Vec::new();
    while got.len() < want {
        let (r, b) = s.read(Vec::new()).await;
        match r {
            Ok(0) | Err(_) => break,
            Ok(_) => got.extend_from_slice(&b),
        }
        bufpool::give(b); // as the proxy does with what it read
    }
    got
}

pub(super) fn payload(len: usize, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u8).wrapping_mul(31) ^ seed)
        .collect()
}

#[test]
fn handshake_and_data_both_ways_survive_reads_of_any_size() {
    for (seed, max_read) in [
        (1, 1),
        (2, 7),
        (3, 100),
        (4, 1500),
        (5, 5000),
        (6, 16 * 1024),
    ] {
        let (client, server) = pair(seed, max_read);
        block_on(async {
            let (c, s) = tokio::join!(client.handshake(), server.handshake());
            assert!(c.is_ok() && s.is_ok(), "seed {seed}: {c:?} {s:?}");
            let up = payload(100 * 1024 + 13, 1);
            let down = payload(300 * 1024 + 7, 2);
            let (w, got) = tokio::join!(
                client.write_all(up.clone()),
                read_exactly(&server, up.len())
            );
            assert!(w.0.is_ok());
            assert!(got == up, "seed {seed}: request bytes differ");
            let (w, got) = tokio::join!(
                server.write_all(down.clone()),
                read_exactly(&client, down.len())
            );
            assert!(w.0.is_ok());
            assert!(got == down, "seed {seed}: response bytes differ");
        });
    }
}

#[test]
fn a_large_write_after_the_peer_asked_for_a_key_update_is_sent_whole() {
    let (client, server) = pair(16, 9000);
    block_on(async {
        let (c, s) = tokio::join!(client.handshake(), server.handshake());
        assert!(c.is_ok() && s.is_ok());
        // The client updates its keys and asks the server to do the same: the
        // server's answer waits in rustls until the server next writes.
        assert!(client.request_key_update().await.is_ok());
        assert!(client.write_all(b"ping".to_vec()).await.0.is_ok());
        assert_eq!(read_exactly(&server, 4).await, b"ping");
        let big = payload(200 * 1024 + 5, 5);
        let (w, got) = tokio::join!(
            server.write_all(big.clone()),
            read_exactly(&client, big.len())
        );
        assert!(w.0.is_ok(), "{:?}", w.0);
        assert!(got == big, "response bytes differ after the key update");
    });
}

#[test]
fn close_notify_is_told_apart_from_a_bare_close() {
    let (client, server) = pair(9, 300);
    block_on(async {
        let (c, s) = tokio::join!(client.handshake(), server.handshake());
        assert!(c.is_ok() && s.is_ok());
        assert!(client.shutdown_write().await.is_ok());
        let (r, _) = server.read(Vec::new()).await;
        assert_eq!(r.ok(), Some(0));
        assert!(
            server.closed_cleanly(),
            "close_notify must count as a clean end"
        );
    });
    let (client, server) = pair(10, 300);
    block_on(async {
        let (c, s) = tokio::join!(client.handshake(), server.handshake());
        assert!(c.is_ok() && s.is_ok());
        assert!(client.tcp().shutdown(Shutdown::Write).is_ok()); // TCP FIN, no close_notify
        let (r, _) = server.read(Vec::new()).await;
        assert_eq!(r.ok(), Some(0));
        assert!(!server.closed_cleanly(), "a bare close may be a truncation");
    });
}

#[test]
fn the_driver_returns_its_buffers_to_the_pool_on_success_and_on_failure() {
    let (client, server) = pair(15, 4000);
    block_on(async {
        let (c, s) = tokio::join!(client.handshake(), server.handshake());
        assert!(c.is_ok() && s.is_ok());
        let data = payload(64 * 1024, 3);
        let (w, got) = tokio::join!(
            client.write_all(data.clone()),
            read_exactly(&server, data.len())
        );
        assert!(w.0.is_ok() && got == data);
        let idle = bufpool::free();
        assert!(
            idle.0 > 0 && idle.2 > 0,
            "read and write buffers came back: {idle:?}"
        );
        // The peer goes away mid-stream: the failing write hands its buffer back too.
        client.tcp().shutdown(Shutdown::Both).ok();
        let (w, _) = server.write_all(payload(40 * 1024, 4)).await;
        assert!(w.is_err());
        assert_eq!(bufpool::free(), idle, "nothing held, nothing lost");
    });
}

#[test]
fn an_idle_connection_holds_no_tls_buffer_between_requests() {
    let (client, server) = pair(17, 16 * 1024);
    block_on(async {
        let (c, s) = tokio::join!(client.handshake(), server.handshake());
        assert!(c.is_ok() && s.is_ok());
        for len in [10, 5000, 40 * 1024] {
            let req = payload(len, 6);
            let (w, got) = tokio::join!(client.write_all(req.clone()), read_exactly(&server, len));
            assert!(w.0.is_ok() && got == req);
            assert!(
                !server.has_buffered_plaintext(),
                "after a {len}-byte request everything was consumed: nothing may stay held"
            );
        }
    });
}

#[test]
fn nothing_is_sent_after_our_close_notify() {
    let (client, server) = pair(19, 2000);
    block_on(async {
        let (c, s) = tokio::join!(client.handshake(), server.handshake());
        assert!(c.is_ok() && s.is_ok());
        assert!(server.shutdown_write().await.is_ok());
        let (w, _) = server.write_all(b"late".to_vec()).await;
        assert!(w.is_err(), "a write after close_notify must fail");
        let (r, _) = client.read(Vec::new()).await;
        assert_eq!(r.ok(), Some(0));
        assert!(client.closed_cleanly());
    });
}
