//! Test harness: run-time PKI, the gateway as a child process, upstreams that
//! record what reached them, and a real rustls client.

pub mod client;
pub mod pki;
pub mod raw;
pub mod upstream;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A port for a gateway to listen on. Not from the kernel's ephemeral range
/// (bind to port 0 picks there, and so does every client connection the
/// tests open: a port picked and released could be taken as a source port
/// before the gateway binds it). Handed out once per run, checked free.
pub fn free_port() -> u16 {
    use std::sync::atomic::{AtomicU32, Ordering};
    const LOW: u32 = 20_000;
    const SPAN: u32 = 12_000; // below the usual ephemeral range (32768..)
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let start = LOW + std::process::id() % 100 * 100;
    for _ in 0..SPAN {
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let port = (LOW + (start - LOW + n) % SPAN) as u16;
        if TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
    panic!("no free port in {LOW}..{}", LOW + SPAN);
}

/// A running gateway process; killed (by its PID) when dropped.
pub struct Gateway {
    pub child: Child,
    pub port: u16,
    pub admin: u16,
    pub log: PathBuf,
}

/// Writes `config` (with `{port}` and `{admin}` filled in) and starts the gateway.
pub fn start(dir: &Path, config: &str) -> Gateway {
    start_ports(dir, config, free_port(), free_port())
}

/// The standard config (one http listener in front of `upstream`), started.
pub fn start_basic(pki: &pki::Pki, upstream: SocketAddr) -> Gateway {
    start(&pki.dir, &http_config(pki, upstream, "", "", ""))
}

pub fn start_ports(dir: &Path, config: &str, port: u16, admin: u16) -> Gateway {
    start_env(dir, config, port, admin, &[])
}

/// `start_ports` with extra environment variables for the gateway process.
pub fn start_env(dir: &Path, config: &str, port: u16, admin: u16, env: &[(&str, &str)]) -> Gateway {
    let text = config
        .replace("{port}", &port.to_string())
        .replace("{admin}", &admin.to_string());
    let cfg = dir.join(format!("gateway-{port}.toml"));
    std::fs::write(&cfg, text).unwrap();
    let log = dir.join(format!("gateway-{port}.log"));
    let child = Command::new(env!("CARGO_BIN_EXE_mtlsgate"))
        .args(["run", "--config"])
        .arg(&cfg)
        .env("RUST_LOG", "info")
        .envs(env.iter().copied())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    let mut g = Gateway {
        child,
        port,
        admin,
        log,
    };
    g.wait_healthy();
    g
}

impl Gateway {
    pub fn addr(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.port))
    }

    pub fn logs(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    fn wait_healthy(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            if let Ok(Some(st)) = self.child.try_wait() {
                panic!("gateway exited early ({st}):\n{}", self.logs());
            }
            // Workers answer only after their listeners are bound, so this is enough.
            if admin_get(self.admin, "/healthz")
                .map(|(c, _)| c == 200)
                .unwrap_or(false)
            {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("gateway not healthy in time:\n{}", self.logs());
    }

    pub fn healthy(&self) -> bool {
        admin_get(self.admin, "/healthz")
            .map(|(c, _)| c == 200)
            .unwrap_or(false)
    }

    pub fn stats(&self) -> serde_json::Value {
        let (_, body) = admin_get(self.admin, "/stats").expect("stats");
        serde_json::from_str(&body).expect("stats json")
    }

    /// A counter under `listeners.<name>` by JSON pointer, e.g. `/failures/revoked`.
    pub fn stat(&self, listener: &str, pointer: &str) -> u64 {
        self.stats()
            .pointer(&format!("/listeners/{listener}{pointer}"))
            .and_then(|v| v.as_u64().or_else(|| v.as_i64().map(|i| i as u64)))
            .unwrap_or(0)
    }

    /// Polls until the counter reaches `want` (metrics are read asynchronously).
    pub fn wait_stat(&self, listener: &str, pointer: &str, want: u64) -> u64 {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let v = self.stat(listener, pointer);
            if v >= want || Instant::now() > deadline {
                return v;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Sends SIGHUP (reload), as an operator would.
    pub fn sighup(&self) {
        let ok = Command::new("kill")
            .arg("-HUP")
            .arg(self.child.id().to_string())
            .status()
            .unwrap()
            .success();
        assert!(ok, "kill -HUP failed");
    }

    pub fn stop(mut self) -> std::process::ExitStatus {
        // SAFETY-free: ask it to drain with SIGTERM, like an operator would.
        let _ = Command::new("kill")
            .arg("-TERM")
            .arg(self.child.id().to_string())
            .status();
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            if let Ok(Some(st)) = self.child.try_wait() {
                return st;
            }
            if Instant::now() > deadline {
                let _ = self.child.kill();
                return self.child.wait().unwrap();
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Gateway {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("--- gateway log ---\n{}", self.logs());
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// GET on the admin port: (status, body).
pub fn admin_get(port: u16, path: &str) -> std::io::Result<(u16, String)> {
    let mut s = TcpStream::connect(("127.0.0.1", port))?;
    s.set_read_timeout(Some(Duration::from_secs(5)))?;
    write!(s, "GET {path} HTTP/1.1\r\nHost: admin\r\n\r\n")?;
    let mut out = String::new();
    s.read_to_string(&mut out)?;
    let code = out.get(9..12).and_then(|c| c.parse().ok()).unwrap_or(0);
    let body = out
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    Ok((code, body))
}

/// Header fields as owned (name, value) pairs.
pub fn owned_headers(h: &[httparse::Header<'_>]) -> Vec<(String, String)> {
    h.iter()
        .map(|h| {
            (
                h.name.to_string(),
                String::from_utf8_lossy(h.value).to_string(),
            )
        })
        .collect()
}

/// Is `prog` on PATH (curl, openssl)?
pub fn have(prog: &str) -> bool {
    Command::new("sh")
        .arg("-c")
        .arg(format!("command -v {prog}"))
        .stdout(Stdio::null())
        .status()
        .map(|s| s.success())
        .unwrap_or(false)
}

/// A standard config: one http listener in front of `upstream`, with `extra`
/// appended inside the listener table and `tail` after it.
pub fn http_config(
    pki: &pki::Pki,
    upstream: SocketAddr,
    listener_extra: &str,
    tls_extra: &str,
    tail: &str,
) -> String {
    format!(
        r#"workers = 1
[admin]
bind = "127.0.0.1:{{admin}}"
[[listener]]
name = "partners"
bind = "127.0.0.1:{{port}}"
mode = "http"
upstream = "backend"
{listener_extra}
[listener.tls]
cert = "{dir}/server.crt"
key = "{dir}/server.key"
client_ca = "{dir}/ca.crt"
crl = ["{dir}/ca.crl"]
{tls_extra}
{tail}
[upstream.backend]
addrs = ["{upstream}"]
connect_timeout = "1s"
response_timeout = "2s"
"#,
        dir = pki.dir.display()
    )
}
