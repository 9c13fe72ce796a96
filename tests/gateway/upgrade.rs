//! Zero-downtime binary upgrade: `mtlsgate upgrade` ten times in a row under
//! continuous load (full and resumed handshakes) loses no connection, and
//! tickets issued before an upgrade resume after it; a successor that cannot
//! start leaves the old process serving.

use crate::common::{self, client, pki::Pki, upstream};
use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// The kernel must hand connections queued on a closing listener to the
/// successor's socket (the tuning profiles set this; so does this test).
fn ensure_migrate_req() {
    let p = "/proc/sys/net/ipv4/tcp_migrate_req";
    if std::fs::read_to_string(p)
        .map(|v| v.trim() == "0")
        .unwrap_or(false)
    {
        if let Err(e) = std::fs::write(p, "1") {
            eprintln!(
                "cannot set net.ipv4.tcp_migrate_req=1 ({e}): queued connections may be reset"
            );
        }
    }
}

fn pid(gw: &common::Gateway) -> Option<u64> {
    common::admin_get(gw.admin, "/stats")
        .ok()
        .and_then(|(_, b)| serde_json::from_str::<serde_json::Value>(&b).ok())
        .and_then(|v| v["pid"].as_u64())
}

/// A process that is gone (or a zombie: the first one is this test's child).
fn gone(pid: u64) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .map(|s| s.split(") ").nth(1).is_some_and(|r| r.starts_with('Z')))
        .unwrap_or(true)
}

fn upgrade(gw: &common::Gateway) -> (bool, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_mtlsgate"))
        .args(["upgrade", "--admin", &format!("127.0.0.1:{}", gw.admin)])
        .args(["--wait", "40s"])
        .output()
        .unwrap();
    let text =
        String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
    (out.status.success(), text)
}

/// SIGTERMs the gateway process serving now (a successor is not our child).
struct Last(u64);

impl Drop for Last {
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .args(["-TERM", &self.0.to_string()])
            .status();
        let deadline = Instant::now() + Duration::from_secs(15);
        while !gone(self.0) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

#[derive(Default)]
struct Counts {
    ok: AtomicU64,
    failed: AtomicU64,
    resumed: AtomicU64,
}

/// Requests on new connections until `stop` (bounded by count too); `resume`:
/// with one shared session store, so most handshakes resume.
fn load(
    pki: &Pki,
    addr: std::net::SocketAddr,
    resume: bool,
    stop: Arc<AtomicBool>,
    n: Arc<Counts>,
) -> std::thread::JoinHandle<()> {
    let mut cfg = (*client::config(pki, &client::Opts::default())).clone();
    if !resume {
        cfg.resumption = rustls::client::Resumption::disabled();
    }
    let cfg = Arc::new(cfg);
    std::thread::spawn(move || {
        for _ in 0..200_000 {
            if stop.load(Ordering::Relaxed) {
                break;
            }
            let r = client::connect(addr, &cfg, "localhost").and_then(|mut s| {
                let resumed = client::resumed(&s);
                std::io::Write::write_all(&mut s, b"GET / HTTP/1.1\r\nHost: localhost\r\n\r\n")?;
                let r = client::read_response(&mut s, &mut Vec::new(), false)?;
                Ok((r.status, resumed))
            });
            match r {
                Ok((200, resumed)) => {
                    n.ok.fetch_add(1, Ordering::Relaxed);
                    if resumed {
                        n.resumed.fetch_add(1, Ordering::Relaxed);
                    }
                }
                Ok((code, _)) => {
                    eprintln!("status {code} during the upgrades");
                    n.failed.fetch_add(1, Ordering::Relaxed);
                }
                Err(e) => {
                    eprintln!("failed during the upgrades: {e}");
                    n.failed.fetch_add(1, Ordering::Relaxed);
                }
            }
        }
    })
}

#[test]
fn ten_upgrades_in_a_row_under_continuous_load_lose_no_connection_and_keep_resumption() {
    ensure_migrate_req();
    let pki = Pki::new();
    let up = upstream::spawn(|_| upstream::ok("ok"));
    let text = common::http_config(&pki, up.addr, "", "", "").replace("workers = 1", "workers = 2");
    let gw = common::start(&pki.dir, &text);
    let mut last = Last(pid(&gw).unwrap());
    let stop = Arc::new(AtomicBool::new(false));
    let n = Arc::new(Counts::default());
    let loaders: Vec<_> = [false, false, true, true]
        .into_iter()
        .map(|resume| load(&pki, gw.addr(), resume, stop.clone(), n.clone()))
        .collect();
    std::thread::sleep(Duration::from_millis(500));
    for i in 1..=10 {
        let before = (last.0, n.resumed.load(Ordering::Relaxed));
        let (ok, out) = upgrade(&gw);
        assert!(ok, "upgrade {i}: {out}\n{}", gw.logs());
        let now = pid(&gw).unwrap();
        assert_ne!(now, before.0, "upgrade {i}: a new process serves");
        // The old process exits by itself once drained: no signal for it.
        std::mem::forget(std::mem::replace(&mut last, Last(now)));
        let deadline = Instant::now() + Duration::from_secs(20);
        while !gone(before.0) {
            assert!(
                Instant::now() < deadline,
                "upgrade {i}: pid {} did not exit after its drain",
                before.0
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        std::thread::sleep(Duration::from_millis(300));
        assert!(
            n.resumed.load(Ordering::Relaxed) > before.1,
            "upgrade {i}: sessions resume on the new process"
        );
    }
    stop.store(true, Ordering::Relaxed);
    for l in loaders {
        l.join().unwrap();
    }
    let (ok, failed, resumed) = (
        n.ok.load(Ordering::Relaxed),
        n.failed.load(Ordering::Relaxed),
        n.resumed.load(Ordering::Relaxed),
    );
    eprintln!("10 upgrades: {ok} requests ok ({resumed} on resumed handshakes), {failed} refused, reset or failed");
    assert_eq!(failed, 0, "no connection lost across the upgrades");
    assert!(ok > 200, "the load ran ({ok})");
    drop(last);
}

#[test]
fn an_upgrade_whose_new_process_cannot_start_leaves_the_old_one_serving() {
    let pki = Pki::new();
    let up = upstream::spawn(|_| upstream::ok("ok"));
    let gw = common::start(&pki.dir, &common::http_config(&pki, up.addr, "", "", ""));
    let old = pid(&gw).unwrap();
    // The successor would read this config: broken.
    let path = pki.dir.join(format!("gateway-{}.toml", gw.port));
    let text = std::fs::read_to_string(&path).unwrap();
    std::fs::write(&path, text.replace("mode = \"http\"", "mode = \"htp\"")).unwrap();
    let (ok, out) = upgrade(&gw);
    assert!(!ok, "{out}");
    assert!(
        out.contains("upgrade failed") && out.contains("keeps serving"),
        "{out}"
    );
    assert_eq!(pid(&gw), Some(old));
    let cfg = client::config(&pki, &client::Opts::default());
    assert_eq!(client::get(gw.addr(), &cfg, "/").unwrap().status, 200);
}
