//! A real rustls client (blocking std sockets) and an HTTP/1.1 response reader.

use super::pki::Pki;
use mtlsgate::proxy::http::chunked::ChunkedDecoder;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use rustls::{ClientConfig, ClientConnection, HandshakeKind, RootCertStore, StreamOwned};
use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::Arc;
use std::time::Duration;

pub struct Opts<'a> {
    pub cert: Option<&'a str>,
    pub tls12_only: bool,
    pub tls13_only: bool,
    pub ca: &'a str,
    /// Restrict the signature schemes offered (e.g. RSA only).
    pub rsa_only: bool,
}

impl Default for Opts<'_> {
    fn default() -> Self {
        Opts {
            cert: Some("good"),
            tls12_only: false,
            tls13_only: false,
            ca: "ca.crt",
            rsa_only: false,
        }
    }
}

pub fn config(pki: &Pki, o: &Opts<'_>) -> Arc<ClientConfig> {
    let mut roots = RootCertStore::empty();
    for c in CertificateDer::pem_file_iter(pki.dir.join(o.ca)).unwrap() {
        roots.add(c.unwrap()).unwrap();
    }
    let mut provider = rustls::crypto::aws_lc_rs::default_provider();
    if o.rsa_only {
        provider.signature_verification_algorithms.mapping = provider
            .signature_verification_algorithms
            .mapping
            .iter()
            .copied()
            .filter(|(s, _)| format!("{s:?}").contains("RSA"))
            .collect::<Vec<_>>()
            .leak();
    }
    let versions: Vec<&'static rustls::SupportedProtocolVersion> = if o.tls12_only {
        vec![&rustls::version::TLS12]
    } else if o.tls13_only {
        vec![&rustls::version::TLS13]
    } else {
        vec![&rustls::version::TLS13, &rustls::version::TLS12]
    };
    let b = ClientConfig::builder_with_provider(Arc::new(provider))
        .with_protocol_versions(&versions)
        .unwrap()
        .with_root_certificates(roots);
    let cfg = match o.cert {
        Some(name) => {
            let chain: Vec<_> = CertificateDer::pem_file_iter(pki.dir.join(format!("{name}.crt")))
                .unwrap()
                .map(|c| c.unwrap())
                .collect();
            let key = PrivateKeyDer::from_pem_file(pki.dir.join(format!("{name}.key"))).unwrap();
            b.with_client_auth_cert(chain, key).unwrap()
        }
        None => b.with_no_client_auth(),
    };
    Arc::new(cfg)
}

pub type Tls = StreamOwned<ClientConnection, TcpStream>;

/// Connects and completes the handshake (and, for TLS 1.3, waits for the
/// server's first flight after it so a late refusal surfaces as an error).
pub fn connect(addr: SocketAddr, cfg: &Arc<ClientConfig>, sni: &str) -> io::Result<Tls> {
    let tcp = TcpStream::connect(addr)?;
    tcp.set_nodelay(true)?;
    tcp.set_read_timeout(Some(Duration::from_secs(10)))?;
    tcp.set_write_timeout(Some(Duration::from_secs(10)))?;
    let name =
        ServerName::try_from(sni.to_string()).map_err(|e| io::Error::other(e.to_string()))?;
    let conn = ClientConnection::new(cfg.clone(), name).map_err(io::Error::other)?;
    let mut s = StreamOwned::new(conn, tcp);
    while s.conn.is_handshaking() {
        s.conn.complete_io(&mut s.sock)?;
    }
    Ok(s)
}

/// A connected, handshaken session as the default partner ("good").
pub fn partner(pki: &Pki, addr: SocketAddr) -> Tls {
    connect(addr, &config(pki, &Opts::default()), "localhost").expect("partner handshake")
}

pub fn resumed(s: &Tls) -> bool {
    s.conn.handshake_kind() == Some(HandshakeKind::Resumed)
}

#[derive(Debug)]
pub struct Response {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Response {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).to_string()
    }
}

/// Reads one response; `head_request` means no body follows.
pub fn read_response<R: Read>(
    r: &mut R,
    buf: &mut Vec<u8>,
    head_request: bool,
) -> io::Result<Response> {
    let mut chunk = vec![0u8; 64 * 1024];
    loop {
        let mut hs = [httparse::EMPTY_HEADER; 128];
        let mut resp = httparse::Response::new(&mut hs);
        if let httparse::Status::Complete(n) = resp.parse(buf).map_err(io::Error::other)? {
            let status = resp.code.unwrap();
            let headers = super::owned_headers(resp.headers);
            buf.drain(..n);
            if (100..200).contains(&status) {
                continue;
            }
            let mut res = Response {
                status,
                headers,
                body: Vec::new(),
            };
            let no_body = head_request || status == 204 || status == 304;
            if no_body {
                return Ok(res);
            }
            if let Some(cl) = res.header("content-length") {
                let cl: usize = cl.trim().parse().unwrap();
                while buf.len() < cl {
                    let k = r.read(&mut chunk)?;
                    if k == 0 {
                        return Err(io::ErrorKind::UnexpectedEof.into());
                    }
                    buf.extend_from_slice(&chunk[..k]);
                }
                res.body = buf.drain(..cl).collect();
            } else if res.header("transfer-encoding").is_some() {
                let mut d = ChunkedDecoder::new();
                loop {
                    let mut data = Vec::new();
                    let used = d
                        .advance_with(buf, |b| data.extend_from_slice(b))
                        .map_err(|e| io::Error::other(e.0))?;
                    res.body.extend_from_slice(&data);
                    buf.drain(..used);
                    if d.is_done() {
                        break;
                    }
                    let k = r.read(&mut chunk)?;
                    if k == 0 {
                        return Err(io::ErrorKind::UnexpectedEof.into());
                    }
                    buf.extend_from_slice(&chunk[..k]);
                }
            } else {
                res.body.append(buf);
                loop {
                    match r.read(&mut chunk) {
                        Ok(0) => break,
                        Ok(k) => res.body.extend_from_slice(&chunk[..k]),
                        Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => break,
                        Err(e) => return Err(e),
                    }
                }
            }
            return Ok(res);
        }
        let k = r.read(&mut chunk)?;
        if k == 0 {
            return Err(io::ErrorKind::UnexpectedEof.into());
        }
        buf.extend_from_slice(&chunk[..k]);
    }
}

/// One request on a new connection: connect, send `raw`, read the response.
pub fn exchange(addr: SocketAddr, cfg: &Arc<ClientConfig>, raw: &[u8]) -> io::Result<Response> {
    let mut s = connect(addr, cfg, "localhost")?;
    s.write_all(raw)?;
    let mut buf = Vec::new();
    read_response(&mut s, &mut buf, raw.starts_with(b"HEAD "))
}

pub fn get(addr: SocketAddr, cfg: &Arc<ClientConfig>, path: &str) -> io::Result<Response> {
    exchange(
        addr,
        cfg,
        format!("GET {path} HTTP/1.1\r\nHost: localhost\r\n\r\n").as_bytes(),
    )
}
