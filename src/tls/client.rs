//! Upstream (origin) TLS: verify the origin against a CA and name, present our
//! own client certificate when configured.

use super::material::{self, Ctx};
use super::server::Material;
use crate::config::{ConfigError, UpstreamTlsConfig};
use crate::plan::files::Files;
use rustls::pki_types::ServerName;
use rustls::ClientConfig;
use std::path::Path;
use std::sync::Arc;

pub struct UpstreamTls {
    pub config: Arc<ClientConfig>,
    pub server_name: ServerName<'static>,
    pub summary: Vec<String>,
    /// The origin CAs and our client certificate, as loaded (for `/stats`).
    pub certs: Vec<Material>,
}

impl UpstreamTls {
    /// Starts a client-side TLS connection to the origin on `tcp`.
    pub fn connect(
        &self,
        tcp: tokio_uring::net::TcpStream,
    ) -> Result<super::ClientStream, rustls::Error> {
        let conn = rustls::client::UnbufferedClientConnection::new(
            self.config.clone(),
            self.server_name.clone(),
        )?;
        Ok(super::TlsStream::new(tcp, conn))
    }
}

pub fn build(
    files: &Files,
    file: &Path,
    name: &str,
    t: &UpstreamTlsConfig,
) -> Result<UpstreamTls, ConfigError> {
    let key = format!("upstream.{name}.tls");
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let (roots, infos) = material::roots(
        &Ctx {
            files,
            file,
            key: format!("{key}.ca"),
        },
        &t.ca,
    )?;
    let mut summary: Vec<String> = infos
        .iter()
        .map(|i| {
            format!(
                "origin CA {}: {} (valid until {})",
                t.ca.display(),
                i.subject,
                material::fmt_time(i.not_after)
            )
        })
        .collect();
    let mut certs: Vec<Material> = infos
        .into_iter()
        .map(|info| Material {
            kind: "origin_ca",
            path: t.ca.clone(),
            info,
        })
        .collect();
    let builder = ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| ConfigError::new(file, &key, e.to_string()))?
        .with_root_certificates(roots);
    let mut config = match (&t.cert, &t.key) {
        (Some(c), Some(k)) => {
            let ctx = Ctx {
                files,
                file,
                key: format!("{key}.cert"),
            };
            let (ck, info) = material::certified_key(&ctx, &provider, c, k)?;
            summary.push(format!(
                "gateway client cert {}: {} (valid until {})",
                c.display(),
                info.subject,
                material::fmt_time(info.not_after)
            ));
            certs.push(Material {
                kind: "gateway_client",
                path: c.clone(),
                info,
            });
            builder.with_client_cert_resolver(Arc::new(rustls::sign::SingleCertAndKey::from(ck)))
        }
        _ => builder.with_no_client_auth(),
    };
    config.resumption = rustls::client::Resumption::in_memory_sessions(256);
    let server_name = ServerName::try_from(t.server_name.clone()).map_err(|e| {
        ConfigError::new(
            file,
            format!("{key}.server_name"),
            format!("{:?}: {e}", t.server_name),
        )
    })?;
    Ok(UpstreamTls {
        config: Arc::new(config),
        server_name,
        summary,
        certs,
    })
}
