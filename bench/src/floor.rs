//! `floor` mode: rustls server and client shuttling bytes in memory, no
//! sockets. The server side's CPU per handshake is what no gateway on this
//! machine can beat; the gap to it is the gateway's own overhead. The server
//! config is built by mtlsgate's own code, so suite, groups, tickets and the
//! client verifier are exactly the gateway's.

use crate::client::{self, ClientOpts};
use rustls::pki_types::ServerName;
use rustls::{ClientConnection, HandshakeKind, ServerConnection};
use std::io::Read;
use std::sync::Arc;
use std::time::Duration;

fn thread_cpu() -> Duration {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes into the timespec we own.
    unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32)
}

pub struct FloorOpts {
    pub server_cert: String,
    pub server_key: String,
    pub client_ca: String,
    pub tickets: usize,
    pub suites: Option<String>,
    pub groups: Option<String>,
}

fn server_config(o: &FloorOpts, tls12: bool) -> anyhow::Result<Arc<rustls::ServerConfig>> {
    let mut toml = format!(
        "workers = 1\n[admin]\nbind = \"off\"\n[[listener]]\nbind = \"127.0.0.1:1\"\nupstream = \"u\"\n[listener.tls]\ncert = {:?}\nkey = {:?}\nclient_ca = {:?}\ntickets = {}\nversions = [{:?}]\n",
        o.server_cert,
        o.server_key,
        o.client_ca,
        o.tickets,
        if tls12 { "1.2" } else { "1.3" }
    );
    if let Some(s) = &o.suites {
        toml.push_str(&format!("suites = [{s:?}]\n"));
    }
    if let Some(g) = &o.groups {
        toml.push_str(&format!("groups = [{g:?}]\n"));
    }
    toml.push_str("[upstream.u]\naddrs = [\"127.0.0.1:1\"]\n");
    let path = std::path::Path::new("floor.toml");
    let cfg = mtlsgate::config::parse(path, &toml)?;
    let files = mtlsgate::plan::files::Files::default();
    let l = mtlsgate::tls::server::build(&files, path, 0, &cfg.listeners[0])?; // ok: parse requires a listener
                                                                               // The gateway's own ticket sealer, as a worker would have it.
    let keys = mtlsgate::tls::tickets::KeySet::generate().map_err(anyhow::Error::msg)?;
    Ok(mtlsgate::tls::server::with_tickets(
        &l,
        &l,
        &keys,
        "floor",
        cfg.tickets.lifetime,
        Arc::default(),
    ))
}

/// Moves all pending TLS bytes from one side to the other.
fn pump(from: &mut dyn FnMut(&mut Vec<u8>) -> usize, to: &mut dyn FnMut(&[u8])) -> bool {
    let mut buf = Vec::new();
    let n = from(&mut buf);
    if n > 0 {
        to(&buf);
    }
    n > 0
}

/// Server CPU per handshake (µs) over `count` handshakes, full or resumed.
pub fn run(
    o: &FloorOpts,
    c: &ClientOpts,
    resume: bool,
    count: usize,
) -> anyhow::Result<(f64, u64)> {
    let scfg = server_config(o, c.tls12)?;
    let ccfg = client::config(c, resume)?;
    let sni = ServerName::try_from("localhost")?;
    let mut server_time = Duration::ZERO;
    let mut resumed = 0u64;
    for i in 0..count + 1 {
        let t0 = thread_cpu();
        let mut server = ServerConnection::new(scfg.clone())?;
        let mut st = thread_cpu() - t0;
        let mut cl = ClientConnection::new(ccfg.clone(), sni.clone())?;
        let mut app = [0u8; 64];
        for _round in 0..16 {
            let mut moved = pump(&mut |b| cl.write_tls(b).unwrap_or(0), &mut |d| {
                let t = thread_cpu();
                let _ = server.read_tls(&mut &d[..]);
                let _ = server.process_new_packets();
                st += thread_cpu() - t;
            });
            let t = thread_cpu();
            let mut out = Vec::new();
            while server.wants_write() {
                if server.write_tls(&mut out).is_err() {
                    break;
                }
            }
            st += thread_cpu() - t;
            if !out.is_empty() {
                moved = true;
                let _ = cl.read_tls(&mut &out[..]);
                cl.process_new_packets()?;
                let _ = cl.reader().read(&mut app);
            }
            if !moved && !server.is_handshaking() && !cl.is_handshaking() {
                break;
            }
        }
        anyhow::ensure!(
            !server.is_handshaking(),
            "in-memory handshake did not finish"
        );
        if i == 0 {
            continue; // warm-up (and, for resume, the priming full handshake)
        }
        server_time += st;
        resumed += (server.handshake_kind() == Some(HandshakeKind::Resumed)) as u64;
    }
    Ok((server_time.as_secs_f64() * 1e6 / count as f64, resumed))
}
