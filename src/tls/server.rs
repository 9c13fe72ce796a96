//! Per-listener `ServerConfig`: certificates by SNI and signature scheme, the
//! client verifier (CA + CRLs), versions, groups, suites and tickets.

use super::material::{self, CertInfo, CrlInfo, Ctx};
use super::tickets::{KeySet, Sealer, TicketCounters};
use crate::config::{ConfigError, CrlCheck, ListenerConfig};
use crate::plan::files::Files;
use rustls::crypto::CryptoProvider;
use rustls::server::danger::ClientCertVerifier;
use rustls::server::{
    ClientHello, NoServerSessionStorage, ResolvesServerCert, WebPkiClientVerifier,
};
use rustls::sign::CertifiedKey;
use rustls::ServerConfig;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// Everything a worker needs to terminate TLS on one listener; shared by all
/// workers of the listener (so a ticket issued by one resumes on another).
pub struct ListenerTls {
    pub config: Arc<ServerConfig>,
    /// Re-run on resumed handshakes: rustls restores the chain without re-verifying it.
    pub verifier: Arc<dyn ClientCertVerifier>,
    /// Whether session tickets are on for this listener.
    pub tickets: bool,
    /// When a verification stops being valid because a CRL goes stale (only when
    /// stale CRLs are refused): bounds how long a cached verification holds.
    pub crl_valid_until: Option<i64>,
    pub summary: Vec<String>,
    /// Server certificates and client CAs as loaded (for `/stats`).
    pub certs: Vec<Material>,
    /// Each CRL as loaded: its file, issuer and nextUpdate.
    pub crls: Vec<(PathBuf, CrlInfo)>,
}

/// One loaded certificate: what it is, where it came from.
#[derive(Debug, Clone)]
pub struct Material {
    pub kind: &'static str,
    pub path: PathBuf,
    pub info: CertInfo,
}

#[derive(Debug)]
struct Entry {
    key: Arc<CertifiedKey>,
    sni: Vec<String>,
}

/// Picks a certificate by SNI, then by what the client can verify (ECDSA or RSA);
/// the first configured certificate is the default.
#[derive(Debug)]
struct CertResolver {
    entries: Vec<Entry>,
}

fn sni_matches(pattern: &str, name: &str) -> bool {
    match pattern.strip_prefix("*.") {
        Some(suffix) => name
            .split_once('.')
            .is_some_and(|(_, rest)| rest.eq_ignore_ascii_case(suffix)),
        None => pattern.eq_ignore_ascii_case(name),
    }
}

thread_local! {
    /// The SNI of the ClientHello this thread resolved last: rustls's
    /// unbuffered connection does not expose it, so the TLS driver takes it
    /// right after the step that ran the resolver.
    static SNI: std::cell::RefCell<Option<String>> = const { std::cell::RefCell::new(None) };
}

/// The SNI noted by the last resolve on this thread, if not taken yet.
pub fn take_sni() -> Option<String> {
    SNI.with(|s| s.borrow_mut().take())
}

impl ResolvesServerCert for CertResolver {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        SNI.with(|s| *s.borrow_mut() = hello.server_name().map(str::to_string));
        let schemes = hello.signature_schemes();
        let named: Vec<&Entry> = match hello.server_name() {
            Some(name) => self
                .entries
                .iter()
                .filter(|e| e.sni.iter().any(|p| sni_matches(p, name)))
                .collect(),
            None => Vec::new(),
        };
        let pool: Vec<&Entry> = if named.is_empty() {
            self.entries.iter().collect()
        } else {
            named
        };
        if pool.len() == 1 {
            return Some(pool[0].key.clone()); // ok: len checked just above
        }
        pool.iter()
            .find(|e| e.key.key.choose_scheme(schemes).is_some())
            .or(pool.first())
            .map(|e| e.key.clone())
    }
}

/// The crypto provider for a listener: aws-lc-rs with the configured groups and suites.
pub fn provider(
    file: &Path,
    key: &str,
    groups: Option<&[String]>,
    suites: Option<&[String]>,
) -> Result<CryptoProvider, ConfigError> {
    let mut p = rustls::crypto::aws_lc_rs::default_provider();
    if let Some(groups) = groups {
        let all = rustls::crypto::aws_lc_rs::ALL_KX_GROUPS;
        let mut chosen = Vec::new();
        for g in groups {
            let found = all.iter().find(|k| {
                let n = format!("{:?}", k.name());
                n.eq_ignore_ascii_case(g)
                    || (g.eq_ignore_ascii_case("p-256") && n == "secp256r1")
                    || (g.eq_ignore_ascii_case("p-384") && n == "secp384r1")
            });
            match found {
                Some(k) => chosen.push(*k),
                None => {
                    let names: Vec<String> =
                        all.iter().map(|k| format!("{:?}", k.name())).collect();
                    return Err(ConfigError::new(
                        file,
                        format!("{key}.groups"),
                        format!("unknown group {g:?}; known: {}", names.join(", ")),
                    ));
                }
            }
        }
        if chosen.is_empty() {
            return Err(ConfigError::new(
                file,
                format!("{key}.groups"),
                "must not be empty",
            ));
        }
        p.kx_groups = chosen;
    }
    if suites.is_none() {
        // Default: prefer AES-128-GCM (SHA-256 transcript). aws-lc's SHA-384 has no
        // fast path on many CPUs, and X25519/P-256 already cap security at 128 bits.
        p.cipher_suites
            .sort_by_key(|c| !c.suite().as_str().is_some_and(|n| n.contains("AES_128")));
    }
    if let Some(suites) = suites {
        let all = rustls::crypto::aws_lc_rs::ALL_CIPHER_SUITES;
        let mut chosen = Vec::new();
        for s in suites {
            match all.iter().find(|c| {
                c.suite()
                    .as_str()
                    .is_some_and(|n| n.eq_ignore_ascii_case(s))
            }) {
                Some(c) => chosen.push(*c),
                None => {
                    let names: Vec<&str> = all.iter().filter_map(|c| c.suite().as_str()).collect();
                    return Err(ConfigError::new(
                        file,
                        format!("{key}.suites"),
                        format!("unknown suite {s:?}; known: {}", names.join(", ")),
                    ));
                }
            }
        }
        if chosen.is_empty() {
            return Err(ConfigError::new(
                file,
                format!("{key}.suites"),
                "must not be empty",
            ));
        }
        p.cipher_suites = chosen;
    }
    Ok(p)
}

fn describe(kind: &str, path: &Path, info: &CertInfo) -> String {
    format!(
        "{kind} {}: {} (valid until {})",
        path.display(),
        info.subject,
        material::fmt_time(info.not_after)
    )
}

/// Loads and checks all of a listener's TLS material and builds its config.
pub fn build(
    files: &Files,
    file: &Path,
    idx: usize,
    l: &ListenerConfig,
) -> Result<ListenerTls, ConfigError> {
    let t = &l.tls;
    let key = format!("listener[{idx}].tls");
    let provider = Arc::new(provider(
        file,
        &key,
        t.groups.as_deref(),
        t.suites.as_deref(),
    )?);
    let mut summary = Vec::new();
    let mut certs = Vec::new();
    let mut entries = Vec::new();
    for (i, c) in t.certs.iter().enumerate() {
        let ctx = Ctx {
            files,
            file,
            key: if t.certs.len() == 1 {
                format!("{key}.cert")
            } else {
                format!("{key}.certs[{i}]")
            },
        };
        let (ck, info) = material::certified_key(&ctx, &provider, &c.cert, &c.key)?;
        summary.push(describe("server cert", &c.cert, &info));
        certs.push(Material {
            kind: "server",
            path: c.cert.clone(),
            info,
        });
        entries.push(Entry {
            key: ck,
            sni: c.sni.clone(),
        });
    }
    let ca_path = t
        .client_ca
        .as_ref()
        .ok_or_else(|| ConfigError::new(file, format!("{key}.client_ca"), "missing"))?;
    let ctx = Ctx {
        files,
        file,
        key: format!("{key}.client_ca"),
    };
    let (roots, infos) = material::roots(&ctx, ca_path)?;
    for info in infos {
        summary.push(describe("client CA", ca_path, &info));
        certs.push(Material {
            kind: "client_ca",
            path: ca_path.clone(),
            info,
        });
    }
    let mut crls = Vec::new();
    let mut crl_infos = Vec::new();
    for (i, p) in t.crls.iter().enumerate() {
        let ctx = Ctx {
            files,
            file,
            key: format!("{key}.crl[{i}]"),
        };
        let list = material::crls(&ctx, p)?;
        summary.push(format!("crl {}: {} list(s)", p.display(), list.len()));
        crl_infos.extend(
            material::crl_facts(&list)
                .into_iter()
                .map(|c| (p.clone(), c)),
        );
        crls.extend(list);
    }
    let crl_valid_until = if t.crl_allow_stale {
        None
    } else {
        material::crls_next_update(&crls)
    };
    let mut vb =
        WebPkiClientVerifier::builder_with_provider(roots, provider.clone()).with_crls(crls);
    if t.crl_check == CrlCheck::Leaf {
        vb = vb.only_check_end_entity_revocation();
    }
    if !t.crl_allow_stale {
        vb = vb.enforce_revocation_expiration();
    }
    if t.crl_allow_unknown {
        vb = vb.allow_unknown_revocation_status();
    }
    if !t.client_auth_required {
        vb = vb.allow_unauthenticated();
    }
    let webpki = vb.build().map_err(|e| {
        ConfigError::new(
            file,
            format!("{key}.client_ca"),
            format!("cannot build client verifier: {e}"),
        )
    })?;
    let verifier: Arc<dyn ClientCertVerifier> =
        Arc::new(super::peer_verifier::PeerVerifier { inner: webpki });
    let mut versions: Vec<&'static rustls::SupportedProtocolVersion> = Vec::new();
    if t.tls13 {
        versions.push(&rustls::version::TLS13);
    }
    if t.tls12 {
        versions.push(&rustls::version::TLS12);
    }
    let mut cfg = ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&versions)
        .map_err(|e| ConfigError::new(file, format!("{key}.versions"), e.to_string()))?
        .with_client_cert_verifier(verifier.clone())
        .with_cert_resolver(Arc::new(CertResolver { entries }));
    // rustls's default 256-entry cache sits behind one global mutex: tickets instead.
    cfg.session_storage = Arc::new(NoServerSessionStorage {});
    if t.session_cache > 0 {
        // Shared by the listener's workers (configs cloned per worker share the Arc).
        cfg.session_storage = Arc::new(super::session_cache::ShardedCache::new(t.session_cache));
    }
    // The ticketer is set per worker (`with_tickets`): no lock shared on the hot path.
    cfg.send_tls13_tickets = if t.session_tickets { t.tickets } else { 0 };
    if l.mode == crate::config::Mode::Http {
        // Say what we speak: an h2-only client fails cleanly instead of mis-framing.
        cfg.alpn_protocols = vec![b"http/1.1".to_vec(), b"http/1.0".to_vec()];
    }
    // The server's order (the default above, or `suites`) wins unless told otherwise.
    cfg.ignore_client_order = !t.prefer_client_suites;
    cfg.max_early_data_size = 0;
    Ok(ListenerTls {
        config: Arc::new(cfg),
        verifier,
        tickets: t.session_tickets,
        crl_valid_until,
        summary,
        certs,
        crls: crl_infos,
    })
}

/// A worker's config for a listener: built from the worker's own `ListenerTls`
/// (so certificates, keys and verifier are not shared between cores), with its
/// own ticket sealer (keys derived for this listener) and the listener-wide
/// session cache from `shared`.
pub fn with_tickets(
    tls: &ListenerTls,
    shared: &ListenerTls,
    keys: &KeySet,
    listener: &str,
    lifetime: std::time::Duration,
    counters: Arc<TicketCounters>,
) -> Arc<ServerConfig> {
    let mut cfg = (*tls.config).clone();
    cfg.session_storage = shared.config.session_storage.clone();
    if tls.tickets {
        let secs = lifetime.as_secs().min(u64::from(u32::MAX)) as u32;
        match Sealer::new(keys, listener, secs, counters) {
            Some(s) => cfg.ticketer = Arc::new(s),
            None => tracing::error!(
                listener,
                "cannot derive ticket keys; resumption by ticket is off"
            ),
        }
    }
    Arc::new(cfg)
}

#[cfg(test)]
mod tests {
    use super::sni_matches;

    #[test]
    fn wildcard_sni_covers_exactly_one_label() {
        assert!(sni_matches("*.example.com", "a.example.com"));
        assert!(!sni_matches("*.example.com", "a.b.example.com"));
        assert!(sni_matches("API.example.com", "api.example.com"));
    }
}
