//! The baseline for bench/compare: the mTLS proxy a Rust team would write on
//! epoll — one current-thread tokio runtime, tokio-rustls with aws-lc-rs
//! (client certificates required, TLS 1.3 tickets, one per handshake, the
//! server's order preferring AES-128-GCM like mtlsgate), hyper 1 for HTTP/1.1
//! both ways with a pooled upstream, and an identity header per request;
//! mimalloc, as mtlsgate uses. With TCP_LISTEN, also a tcp mode: TLS
//! terminated, bytes copied to a new upstream connection both ways.
//!
//! mtlsgate-baseline LISTEN UPSTREAM CERT KEY CLIENT_CA [TCP_LISTEN]

use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper::{Request, Response};
use hyper_util::client::legacy::{connect::HttpConnector, Client};
use hyper_util::rt::{TokioExecutor, TokioIo};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::WebPkiClientVerifier;
use std::sync::Arc;

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

type Body = http_body_util::combinators::BoxBody<bytes::Bytes, hyper::Error>;

fn config(cert: &str, key: &str, ca: &str) -> Result<rustls::ServerConfig, String> {
    let mut provider = rustls::crypto::aws_lc_rs::default_provider();
    provider
        .cipher_suites
        .sort_by_key(|c| !c.suite().as_str().is_some_and(|n| n.contains("AES_128")));
    let provider = Arc::new(provider);
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert)
        .map_err(|e| format!("{cert}: {e}"))?
        .collect::<Result<_, _>>()
        .map_err(|e| format!("{cert}: {e}"))?;
    let key = PrivateKeyDer::from_pem_file(key).map_err(|e| format!("{key}: {e}"))?;
    let mut roots = rustls::RootCertStore::empty();
    for c in CertificateDer::pem_file_iter(ca).map_err(|e| format!("{ca}: {e}"))? {
        roots
            .add(c.map_err(|e| format!("{ca}: {e}"))?)
            .map_err(|e| format!("{ca}: {e}"))?;
    }
    let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider.clone())
        .build()
        .map_err(|e| e.to_string())?;
    let mut cfg = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_client_cert_verifier(verifier)
        .with_single_cert(chain, key)
        .map_err(|e| e.to_string())?;
    cfg.ticketer = rustls::crypto::aws_lc_rs::Ticketer::new().map_err(|e| e.to_string())?;
    cfg.send_tls13_tickets = 1;
    cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(cfg)
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

async fn proxy(
    mut req: Request<Incoming>,
    client: Client<HttpConnector, Body>,
    upstream: Arc<str>,
    identity: hyper::header::HeaderValue,
) -> Result<Response<Body>, hyper::Error> {
    let path = req.uri().path_and_query().map_or("/", |p| p.as_str());
    let uri: hyper::Uri = match format!("http://{upstream}{path}").parse() {
        Ok(u) => u,
        Err(_) => return Ok(status(400)),
    };
    *req.uri_mut() = uri;
    req.headers_mut()
        .insert("x-forwarded-client-cert", identity);
    let req = req.map(|b| b.boxed());
    match client.request(req).await {
        Ok(resp) => Ok(resp.map(|b| b.boxed())),
        Err(_) => Ok(status(502)),
    }
}

fn status(code: u16) -> Response<Body> {
    let mut r = Response::new(
        http_body_util::Empty::new()
            .map_err(|never| match never {})
            .boxed(),
    );
    *r.status_mut() = hyper::StatusCode::from_u16(code).unwrap_or(hyper::StatusCode::BAD_GATEWAY);
    r
}

/// tcp mode: TLS terminated, then bytes both ways with a fresh upstream connection.
async fn tcp_mode(
    l: tokio::net::TcpListener,
    acceptor: tokio_rustls::TlsAcceptor,
    upstream: Arc<str>,
) {
    loop {
        let Ok((tcp, _)) = l.accept().await else {
            continue;
        };
        let _ = tcp.set_nodelay(true);
        let (acceptor, upstream) = (acceptor.clone(), upstream.clone());
        tokio::spawn(async move {
            let Ok(mut tls) = acceptor.accept(tcp).await else {
                return;
            };
            let Ok(mut up) = tokio::net::TcpStream::connect(&*upstream).await else {
                return;
            };
            let _ = up.set_nodelay(true);
            let _ = tokio::io::copy_bidirectional(&mut tls, &mut up).await;
        });
    }
}

fn main() -> Result<(), String> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (listen, upstream, cert, key, ca, tcp_listen) = match &args[..] {
        [l, u, c, k, a] => (l, u, c, k, a, None),
        [l, u, c, k, a, t] => (l, u, c, k, a, Some(t.clone())),
        _ => {
            return Err(
                "usage: mtlsgate-baseline LISTEN UPSTREAM CERT KEY CLIENT_CA [TCP_LISTEN]".into(),
            )
        }
    };
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config(cert, key, ca)?));
    let upstream: Arc<str> = upstream.as_str().into();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| e.to_string())?;
    rt.block_on(async move {
        let listener = tokio::net::TcpListener::bind(listen.as_str())
            .await
            .map_err(|e| e.to_string())?;
        if let Some(t) = tcp_listen {
            let l = tokio::net::TcpListener::bind(t.as_str())
                .await
                .map_err(|e| e.to_string())?;
            tokio::spawn(tcp_mode(l, acceptor.clone(), upstream.clone()));
        }
        let mut http = HttpConnector::new();
        http.set_nodelay(true);
        let client: Client<HttpConnector, Body> = Client::builder(TokioExecutor::new())
            .pool_max_idle_per_host(1024)
            .build(http);
        loop {
            let Ok((tcp, _)) = listener.accept().await else {
                continue;
            };
            let _ = tcp.set_nodelay(true);
            let (acceptor, client, upstream) = (acceptor.clone(), client.clone(), upstream.clone());
            tokio::spawn(async move {
                let Ok(tls) = acceptor.accept(tcp).await else {
                    return;
                };
                // The identity, once per connection: the leaf's SHA-256.
                let leaf = tls
                    .get_ref()
                    .1
                    .peer_certificates()
                    .and_then(|c| c.first().cloned());
                let Some(leaf) = leaf else { return };
                let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, &leaf);
                let Ok(identity) = format!("Hash={}", hex(digest.as_ref())).parse() else {
                    return;
                };
                let svc = hyper::service::service_fn(move |req| {
                    proxy(
                        req,
                        client.clone(),
                        upstream.clone(),
                        hyper::header::HeaderValue::clone(&identity),
                    )
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(tls), svc)
                    .await;
            });
        }
    })
}
