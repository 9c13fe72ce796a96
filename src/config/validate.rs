//! Turns the raw file structs into a typed `Config`, naming the key at fault.

use super::raw::{RawConfig, RawListener, RawUpstream};
use super::types::*;
use crate::authz::AllowList;
use crate::tune::profile::Knobs;
use std::collections::{BTreeMap, HashSet};
use std::net::{SocketAddr, ToSocketAddrs};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

pub(super) struct Validator<'a> {
    pub(super) file: &'a Path,
    pub(super) base: PathBuf,
    pub(super) knobs: &'a Knobs,
}

impl Validator<'_> {
    pub(super) fn err(&self, key: impl Into<String>, msg: impl Into<String>) -> ConfigError {
        ConfigError::new(self.file, key, msg)
    }

    pub(super) fn path(&self, p: &str) -> PathBuf {
        let p = Path::new(p);
        if p.is_absolute() {
            p.to_path_buf()
        } else {
            self.base.join(p)
        }
    }

    fn addr(&self, key: &str, s: &str) -> Result<SocketAddr, ConfigError> {
        if let Ok(a) = s.parse() {
            return Ok(a);
        }
        s.to_socket_addrs()
            .map_err(|e| self.err(key, format!("bad address {s:?}: {e}")))?
            .next()
            .ok_or_else(|| self.err(key, format!("address {s:?} resolves to nothing")))
    }

    pub(super) fn config(&self, raw: RawConfig) -> Result<Config, ConfigError> {
        let workers = match raw.workers.or(self.knobs.workers).unwrap_or(0) {
            0 => std::thread::available_parallelism().map_or(1, |n| n.get()),
            n if n > 1024 => return Err(self.err("workers", "must be at most 1024")),
            n => n,
        };
        let admin_bind = match raw.admin.and_then(|a| a.bind) {
            None => Some(self.addr("admin.bind", DEFAULT_ADMIN)?),
            Some(s) if s.is_empty() || s == "off" => None,
            Some(s) => Some(self.addr("admin.bind", &s)?),
        };
        let log_format = match raw.log_format.as_deref() {
            None | Some("text") => LogFormat::Text,
            Some("json") => LogFormat::Json,
            Some(o) => {
                return Err(self.err("log_format", format!("{o:?}: use \"text\" or \"json\"")))
            }
        };
        let mut upstreams = BTreeMap::new();
        for (name, u) in raw.upstream {
            let u = self.upstream(&name, u)?;
            upstreams.insert(name, Arc::new(u));
        }
        if raw.listener.is_empty() {
            return Err(self.err("listener", "at least one [[listener]] is required"));
        }
        let mut listeners = Vec::new();
        let mut binds = HashSet::new();
        let mut names = HashSet::new();
        if let Some(a) = admin_bind {
            binds.insert(a);
        }
        for (i, l) in raw.listener.into_iter().enumerate() {
            let l = self.listener(i, l, &upstreams)?;
            if !binds.insert(l.bind) {
                return Err(self.err(
                    format!("listener[{i}].bind"),
                    format!(
                        "duplicate bind address {} (used by another listener or admin)",
                        l.bind
                    ),
                ));
            }
            if !names.insert(l.name.clone()) {
                return Err(self.err(
                    format!("listener[{i}].name"),
                    format!("duplicate listener name {:?}", l.name),
                ));
            }
            listeners.push(l);
        }
        let lifetime = nonzero(
            self,
            "ticket_lifetime",
            raw.ticket_lifetime,
            DEFAULT_TICKET_LIFETIME.as_secs(),
        )?;
        if lifetime > Duration::from_secs(7 * 24 * 3600) {
            return Err(self.err("ticket_lifetime", "TLS allows at most 7 days"));
        }
        let tickets = TicketConfig {
            key_file: raw.ticket_keys.as_deref().map(|p| self.path(p)),
            lifetime,
            rotation: nonzero(
                self,
                "ticket_rotation",
                raw.ticket_rotation,
                lifetime.as_secs(),
            )?,
        };
        let partner_cap = raw.partner_cap.unwrap_or(1000);
        if partner_cap == 0 {
            return Err(self.err("partner_cap", "must be at least 1"));
        }
        let access_log = match raw.access_log {
            None => None,
            Some(a) => Some(AccessLogConfig {
                path: self.path(&a.path),
                format: match a.format.as_deref() {
                    None | Some("json") => AccessLogFormat::Json,
                    Some("text") => AccessLogFormat::Text,
                    Some(o) => {
                        return Err(self.err(
                            "access_log.format",
                            format!("{o:?}: use \"json\" or \"text\""),
                        ))
                    }
                },
            }),
        };
        let hdr_log = match raw.hdr_log {
            None => None,
            Some(h) => Some(HdrLogConfig {
                path: self.path(&h.path),
                interval: nonzero(self, "hdr_log.interval", h.interval, 60)?,
            }),
        };
        Ok(Config {
            hdr_log,
            access_log,
            partner_cap,
            drain_timeout: nonzero(self, "drain_timeout", raw.drain_timeout, 10)?,
            path: self.file.to_path_buf(),
            workers,
            admin_bind,
            log_format,
            log_requests: raw.log_requests.unwrap_or(true),
            ring_entries: raw
                .ring_entries
                .or(self.knobs.ring_entries)
                .unwrap_or(256)
                .clamp(8, 32768),
            sqpoll_idle_ms: raw
                .sqpoll_idle_ms
                .or(self.knobs.sqpoll_idle_ms)
                .unwrap_or(0),
            nofile: raw.nofile.or(self.knobs.nofile),
            tickets,
            listeners,
            upstreams,
        })
    }

    fn upstream(&self, name: &str, u: RawUpstream) -> Result<UpstreamConfig, ConfigError> {
        let key = |k: &str| format!("upstream.{name}.{k}");
        if u.addrs.is_empty() {
            return Err(self.err(key("addrs"), "needs at least one address"));
        }
        let addrs = u
            .addrs
            .iter()
            .map(|a| self.addr(&key("addrs"), a))
            .collect::<Result<Vec<_>, _>>()?;
        let tls = match u.tls {
            None => None,
            Some(t) => {
                if t.cert.is_some() != t.key.is_some() {
                    return Err(self.err(key("tls"), "cert and key must be given together"));
                }
                if t.server_name.is_empty() {
                    return Err(self.err(key("tls.server_name"), "must not be empty"));
                }
                Some(UpstreamTlsConfig {
                    ca: self.path(&t.ca),
                    cert: t.cert.as_deref().map(|p| self.path(p)),
                    key: t.key.as_deref().map(|p| self.path(p)),
                    server_name: t.server_name,
                })
            }
        };
        let pool_size = u.pool_size.unwrap_or(64);
        if pool_size == 0 {
            return Err(self.err(key("pool_size"), "must be at least 1"));
        }
        Ok(UpstreamConfig {
            name: name.to_string(),
            addrs,
            connect_timeout: nonzero(self, &key("connect_timeout"), u.connect_timeout, 2)?,
            response_timeout: nonzero(self, &key("response_timeout"), u.response_timeout, 30)?,
            pool_size,
            proxy_protocol: u.proxy_protocol.unwrap_or(false),
            tls,
        })
    }

    fn listener(
        &self,
        i: usize,
        l: RawListener,
        ups: &BTreeMap<String, Arc<UpstreamConfig>>,
    ) -> Result<ListenerConfig, ConfigError> {
        let key = |k: &str| format!("listener[{i}].{k}");
        // Unnamed: named by its address, which (unlike its position) stays
        // when other listeners come and go across reloads.
        let name = l.name.unwrap_or_else(|| l.bind.clone());
        let mode = match l.mode.as_deref() {
            None | Some("http") => Mode::Http,
            Some("tcp") => Mode::Tcp,
            Some(o) => return Err(self.err(key("mode"), format!("{o:?}: use \"http\" or \"tcp\""))),
        };
        let known = |k: String, u: &str| -> Result<String, ConfigError> {
            if ups.contains_key(u) {
                Ok(u.to_string())
            } else {
                Err(self.err(
                    k,
                    format!("unknown upstream {u:?} (no [upstream.{u}] section)"),
                ))
            }
        };
        let upstream = l
            .upstream
            .as_deref()
            .map(|u| known(key("upstream"), u))
            .transpose()?;
        let allow = self.allow(&key("allow"), l.allow)?;
        let mut routes = Vec::new();
        for (j, r) in l.route.into_iter().enumerate() {
            let rk = |k: &str| format!("listener[{i}].route[{j}].{k}");
            if mode == Mode::Tcp {
                return Err(self.err(rk("path_prefix"), "routes only apply to mode = \"http\""));
            }
            if !r.path_prefix.starts_with('/') {
                return Err(self.err(rk("path_prefix"), "must start with '/'"));
            }
            // Requests are routed on their canonical path, where only unreserved
            // characters appear decoded: a prefix with any other character (`:`,
            // `,`…) could be dodged by its escape, which a backend decodes.
            if !crate::proxy::http::path::valid_prefix(&r.path_prefix) {
                return Err(self.err(
                    rk("path_prefix"),
                    format!(
                        "{:?}: use only letters, digits, '-', '.', '_', '~' and '/', without dot or empty segments",
                        r.path_prefix
                    ),
                ));
            }
            let up = match r.upstream.as_deref() {
                Some(u) => known(rk("upstream"), u)?,
                None => upstream.clone().ok_or_else(|| {
                    self.err(rk("upstream"), "no upstream here and none on the listener")
                })?,
            };
            let trimmed = r.path_prefix.trim_end_matches('/');
            let ci = r.case_insensitive.unwrap_or(false);
            if let Some(k) = routes.iter().position(|o: &RouteConfig| {
                if ci || o.case_insensitive {
                    o.path_prefix.eq_ignore_ascii_case(trimmed)
                } else {
                    o.path_prefix == trimmed
                }
            }) {
                // Only one of two equal prefixes could ever be chosen: the
                // other's allow-list would silently never apply.
                return Err(self.err(
                    rk("path_prefix"),
                    format!("{:?} is the same prefix as route[{k}]", r.path_prefix),
                ));
            }
            routes.push(RouteConfig {
                path_prefix: r.path_prefix.trim_end_matches('/').to_string(),
                case_insensitive: r.case_insensitive.unwrap_or(false),
                upstream: up,
                allow: self.allow(&rk("allow"), r.allow)?,
            });
        }
        for (k, u) in std::iter::once((key("upstream"), upstream.as_ref())).chain(
            routes.iter().enumerate().map(|(j, r)| {
                (
                    format!("listener[{i}].route[{j}].upstream"),
                    Some(&r.upstream),
                )
            }),
        ) {
            if mode == Mode::Http && u.and_then(|u| ups.get(u)).is_some_and(|u| u.proxy_protocol) {
                return Err(self.err(
                    k,
                    "an upstream with proxy_protocol = true needs a tcp-mode listener: pooled http connections carry many partners (http gets the identity in x-forwarded-client-cert)",
                ));
            }
        }
        if upstream.is_none() && (mode == Mode::Tcp || routes.is_empty()) {
            return Err(self.err(
                key("upstream"),
                "missing: this listener needs a default upstream",
            ));
        }
        let max_connections = l
            .max_connections
            .or(self.knobs.max_connections)
            .unwrap_or(10_000);
        if max_connections == 0 {
            return Err(self.err(key("max_connections"), "must be at least 1"));
        }
        let max_header_bytes = l.max_header_bytes.unwrap_or(64 * 1024);
        if !(1024..=16 * 1024 * 1024).contains(&max_header_bytes) {
            return Err(self.err(key("max_header_bytes"), "must be between 1024 and 16777216"));
        }
        let request_buffer_bytes = l.request_buffer_bytes.unwrap_or(64 * 1024);
        if request_buffer_bytes > 16 * 1024 * 1024 {
            return Err(self.err(key("request_buffer_bytes"), "must be at most 16777216"));
        }
        let min_body_rate = l.min_body_rate.unwrap_or(4096);
        if min_body_rate == 0 {
            return Err(self.err(
                key("min_body_rate"),
                "must be at least 1 (bytes per second)",
            ));
        }
        let http = HttpRules {
            allow_path_params: l.allow_path_params.unwrap_or(false),
            request_buffer_bytes,
            max_body_bytes: l.max_body_bytes,
            body_timeout: nonzero(self, &key("body_timeout"), l.body_timeout, 30)?,
            min_body_rate,
            send_timeout: nonzero(self, &key("send_timeout"), l.send_timeout, 30)?,
        };
        Ok(ListenerConfig {
            bind: self.addr(&key("bind"), &l.bind)?,
            name,
            mode,
            upstream,
            allow,
            backlog: l.backlog.or(self.knobs.backlog).unwrap_or(4096),
            nodelay: l.nodelay.unwrap_or(true),
            handshake_timeout: nonzero(self, &key("handshake_timeout"), l.handshake_timeout, 10)?,
            header_timeout: nonzero(self, &key("header_timeout"), l.header_timeout, 10)?,
            idle_timeout: nonzero(self, &key("idle_timeout"), l.idle_timeout, 60)?,
            max_header_bytes,
            max_connections,
            max_handshakes: l
                .max_handshakes
                .or(self.knobs.max_handshakes)
                .unwrap_or(1024)
                .max(1),
            http,
            tls: self.server_tls(i, l.tls)?,
            routes,
            proxy_protocol: l.proxy_protocol.unwrap_or(false),
            proxy_protocol_from: self.proxy_from(
                i,
                l.proxy_protocol.unwrap_or(false),
                l.proxy_protocol_from,
            )?,
            limits: self.limits(i, l.limits)?,
        })
    }

    /// A PROXY header names the client: only the balancers may send one.
    fn proxy_from(
        &self,
        i: usize,
        on: bool,
        v: Option<Vec<String>>,
    ) -> Result<Vec<ipnet::IpNet>, ConfigError> {
        let key = format!("listener[{i}].proxy_protocol_from");
        let Some(v) = v else {
            if on {
                return Err(self.err(key, "required with proxy_protocol = true: the balancers' addresses (e.g. [\"10.0.0.0/8\"]); a header from anyone else would let them name any client address"));
            }
            return Ok(Vec::new());
        };
        if !on {
            return Err(self.err(key, "only with proxy_protocol = true"));
        }
        v.iter()
            .map(|s| {
                s.parse::<ipnet::IpNet>()
                    .or_else(|_| s.parse::<std::net::IpAddr>().map(ipnet::IpNet::from))
                    .map_err(|e| {
                        self.err(
                            &key,
                            format!("{s:?}: {e} (an address or CIDR, e.g. 10.0.0.0/8)"),
                        )
                    })
            })
            .collect()
    }

    fn allow(&self, key: &str, v: Option<Vec<String>>) -> Result<Option<AllowList>, ConfigError> {
        v.map(|v| AllowList::parse(&v).map_err(|e| self.err(key, e)))
            .transpose()
    }
}

fn nonzero(
    v: &Validator<'_>,
    key: &str,
    d: Option<Duration>,
    default_secs: u64,
) -> Result<Duration, ConfigError> {
    match d {
        None => Ok(Duration::from_secs(default_secs)),
        Some(d) if d.is_zero() => Err(v.err(key, "must be greater than zero")),
        Some(d) => Ok(d),
    }
}
