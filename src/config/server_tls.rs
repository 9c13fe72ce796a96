//! Validating a listener's `[listener.tls]` table into `ServerTlsConfig`.

use super::raw::RawServerTls;
use super::types::*;
use super::validate::Validator;

impl Validator<'_> {
    pub(super) fn server_tls(
        &self,
        i: usize,
        t: RawServerTls,
    ) -> Result<ServerTlsConfig, ConfigError> {
        let key = |k: &str| format!("listener[{i}].tls.{k}");
        let mut certs = Vec::new();
        match (t.cert, t.key) {
            (Some(c), Some(k)) => certs.push(CertEntry {
                cert: self.path(&c),
                key: self.path(&k),
                sni: vec![],
            }),
            (None, None) => {}
            _ => return Err(self.err(key("cert"), "cert and key must be given together")),
        }
        for c in t.certs {
            certs.push(CertEntry {
                cert: self.path(&c.cert),
                key: self.path(&c.key),
                sni: c.sni.iter().map(|s| s.to_ascii_lowercase()).collect(),
            });
        }
        if certs.is_empty() {
            return Err(self.err(
                key("cert"),
                "missing: give cert and key, or [[listener.tls.certs]]",
            ));
        }
        let client_auth_required = match t.client_auth.as_deref() {
            None | Some("required") => true,
            Some("optional") => false,
            Some(o) => {
                return Err(self.err(
                    key("client_auth"),
                    format!("{o:?}: use \"required\" or \"optional\""),
                ))
            }
        };
        if t.client_ca.is_none() {
            return Err(self.err(
                key("client_ca"),
                "missing: mTLS needs the CA bundle that signs partner certificates",
            ));
        }
        let crl_check = match t.crl_check.as_deref() {
            None | Some("chain") => CrlCheck::Chain,
            Some("leaf") => CrlCheck::Leaf,
            Some(o) => {
                return Err(self.err(
                    key("crl_check"),
                    format!("{o:?}: use \"chain\" or \"leaf\""),
                ))
            }
        };
        let (mut tls13, mut tls12) = (false, false);
        for v in t
            .versions
            .unwrap_or_else(|| vec!["1.3".into(), "1.2".into()])
        {
            match v.as_str() {
                "1.3" => tls13 = true,
                "1.2" => tls12 = true,
                o => {
                    return Err(self.err(
                        key("versions"),
                        format!("{o:?}: use \"1.3\" and/or \"1.2\""),
                    ))
                }
            }
        }
        if !tls13 && !tls12 {
            return Err(self.err(key("versions"), "must enable at least one version"));
        }
        Ok(ServerTlsConfig {
            certs,
            client_ca: t.client_ca.as_deref().map(|p| self.path(p)),
            client_auth_required,
            crls: t.crl.iter().map(|p| self.path(p)).collect(),
            crl_check,
            crl_allow_stale: t.crl_allow_stale.unwrap_or(false),
            crl_allow_unknown: t.crl_allow_unknown.unwrap_or(false),
            close_revoked: t.close_revoked.unwrap_or(false),
            tls13,
            tls12,
            groups: t.groups,
            suites: t.suites,
            prefer_client_suites: t
                .prefer_client_suites
                .or(self.knobs.prefer_client_suites)
                .unwrap_or(false),
            tickets: t
                .tickets
                .or(self.knobs.tickets)
                .unwrap_or(DEFAULT_TICKETS)
                .min(16),
            session_tickets: t.session_tickets.unwrap_or(true),
            session_cache: t.session_cache.unwrap_or(0),
        })
    }
}
