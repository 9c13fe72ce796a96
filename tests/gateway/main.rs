//! Integration tests: the gateway as a process, real sockets, a real rustls
//! client, curl and openssl where a partner would use them. PKI made at run time.

mod common;

mod accounting;
mod bench_tool;
mod config_check;
mod drain;
mod fleet;
mod framing;
mod fuzz_corpus;
mod http_proxy;
mod limits;
mod observability;
mod partner_limits;
mod proxy_protocol;
mod reload;
mod resumption;
mod smuggling_table;
mod systemd;
mod tcp_mode;
mod tls_auth;
mod trust_http;
mod trust_identity;
mod trust_tls;
mod tune;
mod upgrade;
mod upstreams;
