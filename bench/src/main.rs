//! mtlsgate-bench: an mTLS load generator that measures any TLS server the same
//! way (mtlsgate or nginx): handshakes, resumptions, keep-alive requests, idle
//! connections, and the in-memory rustls floor. See shared BENCHMARKING notes.

mod client;
mod floor;
mod load;
mod procstat;

use clap::{Parser, ValueEnum};
use rustls::pki_types::ServerName;
use serde_json::json;
use std::sync::{Arc, Mutex};
use std::time::Duration;

#[derive(Clone, Copy, ValueEnum, PartialEq, Eq, Debug)]
enum ModeArg {
    Full,
    Resume,
    Keepalive,
    Hold,
    Floor,
    /// Write a test PKI (CA, server, partner) into --out.
    Pki,
}

#[derive(Parser)]
#[command(
    name = "mtlsgate-bench",
    about = "mTLS load generator (measures any TLS server the same way)"
)]
struct Args {
    #[arg(long, value_enum)]
    mode: ModeArg,
    /// host:port of the server under test.
    #[arg(long, default_value = "127.0.0.1:8443")]
    target: String,
    #[arg(long, default_value = "localhost")]
    sni: String,
    #[arg(long)]
    ca: String,
    #[arg(long)]
    cert: Option<String>,
    #[arg(long)]
    key: Option<String>,
    /// Closed loop: connections/threads working back to back.
    #[arg(long, default_value_t = 8)]
    concurrency: usize,
    /// Open loop: Poisson arrivals per second (uses --threads workers).
    #[arg(long)]
    rate: Option<f64>,
    #[arg(long, default_value_t = 64)]
    threads: usize,
    #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
    duration: Duration,
    #[arg(long, default_value = "2s", value_parser = humantime::parse_duration)]
    warmup: Duration,
    #[arg(long)]
    tls12: bool,
    #[arg(long, default_value = "x25519")]
    kx: String,
    #[arg(long)]
    suite: Option<String>,
    /// Server process to sample CPU (utime+stime) and RSS from.
    #[arg(long)]
    server_pid: Option<u32>,
    /// Request path for keepalive and hold.
    #[arg(long, default_value = "/")]
    path: String,
    /// hold: connections to open; floor: handshakes.
    #[arg(long, default_value_t = 1000)]
    count: usize,
    /// floor: the server certificate, key and client CA to build the server side from.
    #[arg(long)]
    server_cert: Option<String>,
    #[arg(long)]
    server_key: Option<String>,
    #[arg(long, default_value_t = 2)]
    tickets: usize,
    /// floor: also measure resumed handshakes.
    #[arg(long, default_value_t = true)]
    floor_resume: bool,
    /// pki: output directory; --rsa for RSA-2048 server and partner keys.
    #[arg(long)]
    out: Option<std::path::PathBuf>,
    #[arg(long)]
    rsa: bool,
    /// A label carried into the JSON line (e.g. "mtlsgate", "nginx").
    #[arg(long, default_value = "")]
    label: String,
}

/// CPU at a window edge: (server utime+stime if known, our own CPU).
type Mark = (Option<Duration>, Duration);

fn main() -> anyhow::Result<()> {
    let a = Args::parse();
    // A report piped into `head` ends us quietly, like other command-line tools.
    // SAFETY: restoring the default disposition of SIGPIPE before any thread starts.
    unsafe { libc::signal(libc::SIGPIPE, libc::SIG_DFL) };
    procstat::raise_nofile();
    if a.mode == ModeArg::Pki {
        let out = a
            .out
            .clone()
            .ok_or_else(|| anyhow::anyhow!("pki needs --out DIR"))?;
        return write_pki(&out, a.rsa);
    }
    let copts = client::ClientOpts {
        ca: a.ca.clone(),
        cert: a.cert.clone(),
        key: a.key.clone(),
        tls12: a.tls12,
        kx: a.kx.clone(),
        suite: a.suite.clone(),
    };
    if a.mode == ModeArg::Floor {
        let fo = floor::FloorOpts {
            server_cert: a
                .server_cert
                .clone()
                .ok_or_else(|| anyhow::anyhow!("floor needs --server-cert"))?,
            server_key: a
                .server_key
                .clone()
                .ok_or_else(|| anyhow::anyhow!("floor needs --server-key"))?,
            client_ca: a.ca.clone(),
            tickets: a.tickets,
            suites: a.suite.clone(),
            groups: Some(match a.kx.as_str() {
                "hybrid" => "X25519MLKEM768".into(),
                "p256" => "secp256r1".into(),
                _ => "X25519".into(),
            }),
        };
        let (full, _) = floor::run(&fo, &copts, false, a.count)?;
        let (resumed, n) = if a.floor_resume {
            floor::run(&fo, &copts, true, a.count)?
        } else {
            (0.0, 0)
        };
        println!("floor (in-memory rustls server CPU per handshake): full {full:.1} µs, resumed {resumed:.1} µs ({n}/{} resumed)", a.count);
        println!(
            "{}",
            json!({"label": a.label, "mode": "floor", "tls12": a.tls12, "kx": a.kx, "suite": a.suite, "server_us_full": full, "server_us_resumed": resumed, "count": a.count})
        );
        return Ok(());
    }
    let addr = std::net::ToSocketAddrs::to_socket_addrs(&a.target)?
        .next()
        .ok_or_else(|| anyhow::anyhow!("{}: no address", a.target))?;
    let plan = load::Plan {
        mode: match a.mode {
            ModeArg::Full => load::Mode::Full,
            ModeArg::Resume => load::Mode::Resume,
            _ => load::Mode::KeepAlive,
        },
        addr,
        sni: ServerName::try_from(a.sni.clone())?,
        client: copts,
        concurrency: a.concurrency,
        rate: a.rate,
        threads: a.threads,
        warmup: a.warmup,
        duration: a.duration,
        request: format!("GET {} HTTP/1.1\r\nHost: {}\r\n\r\n", a.path, a.sni).into_bytes(),
    };
    if a.mode == ModeArg::Hold {
        return hold(&a, &plan);
    }
    let marks: Arc<Mutex<Vec<Mark>>> = Arc::default();
    let (m1, m2) = (marks.clone(), marks.clone());
    let pid = a.server_pid;
    let sample = move |m: &Mutex<Vec<Mark>>| {
        if let Ok(mut v) = m.lock() {
            v.push((pid.and_then(procstat::cpu), procstat::self_cpu()));
        }
    };
    let (t, elapsed) = load::run(Arc::new(plan), || sample(&m1), || sample(&m2))?;
    let marks = marks
        .lock()
        .map_err(|_| anyhow::anyhow!("poisoned"))?
        .clone();
    let per_op = |d: Duration| {
        if t.ops > 0 {
            d.as_secs_f64() * 1e6 / t.ops as f64
        } else {
            0.0
        }
    };
    let server_us = match (marks.first(), marks.get(1)) {
        (Some((Some(a0), _)), Some((Some(a1), _))) => Some(per_op(*a1 - *a0)),
        _ => None,
    };
    let client_us = match (marks.first(), marks.get(1)) {
        (Some((_, c0)), Some((_, c1))) => per_op(*c1 - *c0),
        _ => 0.0,
    };
    report(&a, &t, elapsed, server_us, client_us);
    Ok(())
}

fn report(a: &Args, t: &load::Tally, elapsed: Duration, server_us: Option<f64>, client_us: f64) {
    let rate = t.ops as f64 / elapsed.as_secs_f64();
    let q = |p: f64| {
        t.hist.as_ref().map_or(0, |h| {
            if h.is_empty() {
                0
            } else {
                h.value_at_quantile(p)
            }
        })
    };
    let max = t.hist.as_ref().map_or(0, |h| h.max());
    let errors: serde_json::Map<String, serde_json::Value> = t
        .errors
        .iter()
        .map(|(k, v)| (k.name().to_string(), json!(v)))
        .collect();
    println!(
        "mode {:?} target {} ({}) {}",
        a.mode,
        a.target,
        if a.tls12 { "TLS1.2" } else { "TLS1.3" },
        a.label
    );
    println!(
        "  ops          {:>10}  in {:.1} s  = {:.0}/s  (resumed {})",
        t.ops,
        elapsed.as_secs_f64(),
        rate,
        t.resumed
    );
    println!(
        "  latency µs   p50 {}  p90 {}  p99 {}  p99.9 {}  max {}",
        q(0.5),
        q(0.9),
        q(0.99),
        q(0.999),
        max
    );
    match server_us {
        Some(s) => println!("  server CPU   {s:.1} µs/op"),
        None => println!("  server CPU   (no --server-pid)"),
    }
    println!("  client CPU   {client_us:.1} µs/op");
    println!(
        "  errors       {}",
        if errors.is_empty() {
            "none".to_string()
        } else {
            format!("{errors:?}")
        }
    );
    println!(
        "{}",
        json!({
            "label": a.label, "mode": format!("{:?}", a.mode).to_lowercase(), "tls12": a.tls12, "kx": a.kx,
            "suite": a.suite, "concurrency": a.concurrency, "rate": a.rate, "ops": t.ops, "resumed": t.resumed,
            "secs": elapsed.as_secs_f64(), "ops_per_sec": rate,
            "p50_us": q(0.5), "p90_us": q(0.9), "p99_us": q(0.99), "p999_us": q(0.999), "max_us": max,
            "server_cpu_us_per_op": server_us, "client_cpu_us_per_op": client_us, "errors": errors,
        })
    );
}

fn hold(a: &Args, plan: &load::Plan) -> anyhow::Result<()> {
    let before = a.server_pid.and_then(procstat::rss_kib);
    let (conns, errors) = load::hold(plan, a.count)?;
    std::thread::sleep(Duration::from_secs(1));
    let after = a.server_pid.and_then(procstat::rss_kib);
    let per = match (before, after) {
        (Some(b), Some(x)) if !conns.is_empty() => Some((x as f64 - b as f64) / conns.len() as f64),
        _ => None,
    };
    let errs: serde_json::Map<String, serde_json::Value> = errors
        .iter()
        .map(|(k, v)| (k.name().to_string(), json!(v)))
        .collect();
    println!("hold: {} idle mTLS connections open; server RSS {:?} → {:?} KiB; {:?} KiB per connection; errors {:?}", conns.len(), before, after, per, errs);
    println!(
        "{}",
        json!({"label": a.label, "mode": "hold", "open": conns.len(), "rss_before_kib": before, "rss_after_kib": after, "kib_per_conn": per, "errors": errs})
    );
    std::thread::sleep(a.duration.min(Duration::from_secs(600)));
    drop(conns);
    Ok(())
}

/// ECDSA P-256 (or RSA-2048) CA, server cert for localhost, one partner cert.
fn write_pki(dir: &std::path::Path, rsa: bool) -> anyhow::Result<()> {
    use mtlsgate::demo::pki::{Ca, ClientSpec};
    std::fs::create_dir_all(dir)?;
    let ca = Ca::new("bench CA")?;
    let server = ca.server(&["localhost", "127.0.0.1"], rsa)?;
    let mut spec = ClientSpec::named("Bench Partner").uri("spiffe://partner.example/bench");
    spec.rsa = rsa;
    let client = ca.client(&spec)?;
    let w = |name: &str, data: &str| std::fs::write(dir.join(name), data);
    w("ca.crt", &ca.cert_pem)?;
    w("server.crt", &server.cert_pem)?;
    w("server.key", &server.key_pem)?;
    w("client.crt", &client.cert_pem)?;
    w("client.key", &client.key_pem)?;
    println!(
        "wrote {} PKI to {}",
        if rsa { "RSA-2048" } else { "ECDSA P-256" },
        dir.display()
    );
    Ok(())
}
