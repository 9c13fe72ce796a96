//! Whole-config reload: listeners added and removed, routes and allow-lists
//! changed under load with no failed request; a broken config or a
//! half-written CRL bundle refused with the running plan kept and the error shown.

use crate::common::{self, client, pki::Pki, upstream};
use std::io::Write;
use std::net::{SocketAddr, TcpStream};
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

fn tls_table(pki: &Pki) -> String {
    let d = pki.dir.display();
    format!(
        "[listener.tls]\ncert = \"{d}/server.crt\"\nkey = \"{d}/server.key\"\nclient_ca = \"{d}/ca.crt\"\ncrl = [\"{d}/ca.crl\"]\n"
    )
}

fn listener(pki: &Pki, name: &str, port: u16, routes: &str) -> String {
    format!(
        "[[listener]]\nname = \"{name}\"\nbind = \"127.0.0.1:{port}\"\nmode = \"http\"\nupstream = \"backend\"\n{}{routes}",
        tls_table(pki)
    )
}

fn config(listeners: &str, upstreams: &[(&str, SocketAddr)]) -> String {
    let mut s = format!(
        "workers = 2\ndrain_timeout = \"3s\"\n[admin]\nbind = \"127.0.0.1:{{admin}}\"\n{listeners}"
    );
    for (name, addr) in upstreams {
        s.push_str(&format!("[upstream.{name}]\naddrs = [\"{addr}\"]\n"));
    }
    s
}

/// A gateway with the one listener "partners" in front of `up`, and its config.
fn one_listener(pki: &Pki, up: SocketAddr) -> (common::Gateway, String) {
    let port = common::free_port();
    let v1 = config(&listener(pki, "partners", port, ""), &[("backend", up)]);
    let gw = common::start_ports(&pki.dir, &v1, port, common::free_port());
    (gw, v1)
}

fn generation(gw: &common::Gateway) -> u64 {
    gw.stats()["plan"]["generation"].as_u64().unwrap_or(0)
}

/// Writes the gateway's config file anew (it was started from `gateway-<port>.toml`).
fn rewrite(pki: &Pki, gw: &common::Gateway, text: &str) {
    let text = text.replace("{admin}", &gw.admin.to_string());
    let path = pki.dir.join(format!("gateway-{}.toml", gw.port));
    let tmp = path.with_extension("new");
    std::fs::write(&tmp, text).unwrap();
    std::fs::rename(&tmp, path).unwrap();
}

fn mtlsgate_reload(gw: &common::Gateway) -> (bool, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_mtlsgate"))
        .args(["reload", "--admin", &format!("127.0.0.1:{}", gw.admin)])
        .output()
        .unwrap();
    let text =
        String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
    (out.status.success(), text)
}

/// Requests until `stop`, on new connections and on one keep-alive connection;
/// counts (ok, failed).
fn load(
    pki: &Pki,
    addr: SocketAddr,
    stop: Arc<AtomicBool>,
) -> Vec<std::thread::JoinHandle<(u64, u64)>> {
    let cfg = client::config(pki, &client::Opts::default());
    let fresh = {
        let (cfg, stop) = (cfg.clone(), stop.clone());
        std::thread::spawn(move || {
            let (mut ok, mut bad) = (0, 0);
            for _ in 0..100_000 {
                if stop.load(Ordering::Relaxed) {
                    break;
                }
                match client::get(addr, &cfg, "/") {
                    Ok(r) if r.status == 200 => ok += 1,
                    _ => bad += 1,
                }
            }
            (ok, bad)
        })
    };
    let kept = std::thread::spawn(move || {
        let (mut ok, mut bad) = (0, 0);
        let mut s = client::connect(addr, &cfg, "localhost").unwrap();
        let mut buf = Vec::new();
        for _ in 0..100_000 {
            if stop.load(Ordering::Relaxed) {
                break;
            }
            let r = s
                .write_all(b"GET / HTTP/1.1\r\nHost: localhost\r\n\r\n")
                .and_then(|_| client::read_response(&mut s, &mut buf, false));
            match r {
                Ok(r) if r.status == 200 => ok += 1,
                _ => {
                    bad += 1;
                    s = client::connect(addr, &cfg, "localhost").unwrap();
                }
            }
        }
        (ok, bad)
    });
    vec![fresh, kept]
}

#[test]
fn a_reload_under_load_adds_and_removes_listeners_and_applies_new_rules_with_no_failed_request() {
    let pki = Pki::new();
    let up = upstream::echo();
    let second = upstream::spawn(|_| upstream::ok("second"));
    let (port, old_port, new_port) = (
        common::free_port(),
        common::free_port(),
        common::free_port(),
    );
    let orders_a = "[[listener.route]]\npath_prefix = \"/orders\"\nallow = [\"cn:Partner A\"]\n";
    let v1 = config(
        &(listener(&pki, "partners", port, orders_a) + &listener(&pki, "old", old_port, "")),
        &[("backend", up.addr)],
    );
    let gw = common::start_ports(&pki.dir, &v1, port, common::free_port());
    let cfg = client::config(&pki, &client::Opts::default());
    let mut kept = client::partner(&pki, gw.addr());
    assert_eq!(client::get(gw.addr(), &cfg, "/orders").unwrap().status, 200);
    assert_eq!(
        client::get(([127, 0, 0, 1], old_port).into(), &cfg, "/")
            .unwrap()
            .status,
        200
    );

    let stop = Arc::new(AtomicBool::new(false));
    let loaders = load(&pki, gw.addr(), stop.clone());
    std::thread::sleep(Duration::from_millis(300));
    let routes = "[[listener.route]]\npath_prefix = \"/orders\"\nallow = [\"cn:Partner C\"]\n\
                  [[listener.route]]\npath_prefix = \"/new\"\nupstream = \"second\"\n";
    let v2 = config(
        &(listener(&pki, "partners", port, routes) + &listener(&pki, "extra", new_port, "")),
        &[("backend", up.addr), ("second", second.addr)],
    );
    rewrite(&pki, &gw, &v2);
    gw.sighup();
    let deadline = Instant::now() + Duration::from_secs(10);
    while generation(&gw) < 2 {
        assert!(
            Instant::now() < deadline,
            "SIGHUP did not apply the new config"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    std::thread::sleep(Duration::from_millis(300));
    stop.store(true, Ordering::Relaxed);
    let (mut ok, mut bad) = (0, 0);
    for l in loaders {
        let (o, b) = l.join().unwrap();
        ok += o;
        bad += b;
    }
    eprintln!("requests across the reload: {ok} ok, {bad} failed");
    assert_eq!(bad, 0, "no request fails across the reload");
    assert!(ok > 20, "the load ran ({ok} requests)");

    // New rules apply to new requests at once, on an old connection too.
    write!(kept, "GET /orders HTTP/1.1\r\nHost: localhost\r\n\r\n").unwrap();
    let r = client::read_response(&mut kept, &mut Vec::new(), false).unwrap();
    assert_eq!(
        r.status, 403,
        "the changed allow-list holds on a connection opened before the reload"
    );
    assert_eq!(client::get(gw.addr(), &cfg, "/orders").unwrap().status, 403);
    let r = client::get(gw.addr(), &cfg, "/new/x").unwrap();
    assert_eq!(
        (r.status, r.text()),
        (200, "second".to_string()),
        "the added route reaches the added upstream"
    );
    assert_eq!(
        client::get(([127, 0, 0, 1], new_port).into(), &cfg, "/")
            .unwrap()
            .status,
        200
    );
    let deadline = Instant::now() + Duration::from_secs(5);
    while TcpStream::connect(("127.0.0.1", old_port)).is_ok() {
        assert!(
            Instant::now() < deadline,
            "the removed listener still accepts"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let stats = gw.stats();
    assert_eq!(
        stats["plan"]["listeners"],
        serde_json::json!(["partners", "extra"])
    );
    assert_eq!(stats["reload"]["last"]["result"], "ok");
    assert!(stats["plan"]["certs"]
        .as_array()
        .unwrap()
        .iter()
        .any(|c| c["kind"] == "server"
            && c["sha256"].as_str().is_some_and(|s| s.len() == 64)
            && c["not_after"].as_i64().is_some()));
}

#[test]
fn a_broken_config_is_refused_whole_the_running_plan_keeps_serving_and_the_error_names_the_key() {
    let pki = Pki::new();
    let up = upstream::echo();
    let (gw, v1) = one_listener(&pki, up.addr);
    // A valid change (a new route) next to a broken one (a missing CA file).
    let broken = v1
        .replace("ca.crt", "missing-ca.crt")
        .replace("mode = \"http\"", "mode = \"http\"\nmax_connections = 7");
    rewrite(&pki, &gw, &broken);
    let (ok, out) = mtlsgate_reload(&gw);
    assert!(
        !ok,
        "mtlsgate reload exits non-zero on a refused reload:\n{out}"
    );
    assert!(
        out.contains("reload refused")
            && out.contains("client_ca")
            && out.contains("missing-ca.crt"),
        "{out}"
    );
    let stats = gw.stats();
    assert_eq!(stats["plan"]["generation"], 1);
    assert_eq!(stats["reload"]["last"]["result"], "failed");
    assert!(stats["reload"]["last"]["error"]
        .as_str()
        .unwrap()
        .contains("listener[0].tls.client_ca"));
    let files = stats["reload"]["last"]["files"].as_array().unwrap();
    assert!(
        files.iter().any(|f| f["error"]
            .as_str()
            .is_some_and(|e| e.contains("missing-ca.crt"))),
        "{files:?}"
    );
    let (_, metrics) = common::admin_get(gw.admin, "/metrics").unwrap();
    assert!(
        metrics.contains("mtlsgate_config_reloads_total{result=\"failed\"} 1"),
        "{metrics}"
    );
    assert!(metrics.contains("mtlsgate_config_reloads_total{result=\"ok\"} 0"));
    let cfg = client::config(&pki, &client::Opts::default());
    assert_eq!(client::get(gw.addr(), &cfg, "/").unwrap().status, 200);

    rewrite(&pki, &gw, &v1);
    let (ok, out) = mtlsgate_reload(&gw);
    assert!(ok && out.contains("reload applied: generation 2"), "{out}");
    assert!(out.contains("loaded  listener[0].tls.client_ca"), "{out}");
}

#[test]
fn a_crl_bundle_caught_with_one_of_its_two_cas_is_refused_and_partners_of_both_keep_connecting() {
    let pki = Pki::new();
    let up = upstream::echo();
    let d = pki.dir.clone();
    let cas = std::fs::read_to_string(d.join("ca.crt")).unwrap()
        + &std::fs::read_to_string(d.join("other-ca.crt")).unwrap();
    std::fs::write(d.join("both-ca.crt"), cas).unwrap();
    let first = pki.ca.crl(&[], time::Duration::days(7)).unwrap();
    let second = pki.other_ca.crl(&[], time::Duration::days(7)).unwrap();
    std::fs::write(d.join("both.crl"), format!("{first}{second}")).unwrap();
    let port = common::free_port();
    let text = config(
        &listener(&pki, "partners", port, ""),
        &[("backend", up.addr)],
    )
    .replace("ca.crt", "both-ca.crt")
    .replace("ca.crl", "both.crl");
    let gw = common::start_ports(&pki.dir, &text, port, common::free_port());
    let good = client::config(&pki, &client::Opts::default());
    let foreign = client::config(
        &pki,
        &client::Opts {
            cert: Some("foreign"),
            ..Default::default()
        },
    );
    assert_eq!(client::get(gw.addr(), &foreign, "/").unwrap().status, 200);

    // A publisher writing the bundle in place, caught after the first CRL.
    std::fs::write(d.join("both.crl"), &first).unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while gw.stats()["reload"]["failed_total"].as_u64() < Some(1) {
        assert!(
            Instant::now() < deadline,
            "the watcher did not try the changed CRL"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let err = gw.stats()["reload"]["last"]["error"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(
        err.contains("Other CA"),
        "the error names the CA left without a CRL: {err}"
    );
    for cfg in [&good, &foreign] {
        assert_eq!(client::get(gw.addr(), cfg, "/").unwrap().status, 200);
    }
    std::fs::write(d.join("both.crl"), format!("{first}{second}")).unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while gw.stats()["reload"]["ok_total"].as_u64() < Some(1) {
        assert!(
            Instant::now() < deadline,
            "the complete CRL bundle was not applied"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    for cfg in [&good, &foreign] {
        assert_eq!(client::get(gw.addr(), cfg, "/").unwrap().status, 200);
    }
}

#[test]
fn a_changed_crl_is_applied_even_after_a_refused_sighup_and_while_a_key_file_is_half_replaced() {
    let pki = Pki::new();
    let up = upstream::echo();
    let (gw, v1) = one_listener(&pki, up.addr);
    let good = client::config(&pki, &client::Opts::default());
    assert_eq!(client::get(gw.addr(), &good, "/").unwrap().status, 200);
    // An operator mid-change: the server key replaced by a file not yet
    // complete, a config with a typo, and a SIGHUP that is refused...
    std::fs::write(pki.dir.join("server.key"), "-----BEGIN PRIVATE KEY-----\n").unwrap();
    rewrite(&pki, &gw, &v1.replace("mode = \"http\"", "mode = \"htp\""));
    // ...while the CRL publisher revokes "good".
    let crl = pki
        .ca
        .crl(&[pki.leaves["good"].serial], time::Duration::days(7))
        .unwrap();
    std::fs::write(pki.dir.join("ca.crl.new"), crl).unwrap();
    std::fs::rename(pki.dir.join("ca.crl.new"), pki.dir.join("ca.crl")).unwrap();
    gw.sighup();
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let fresh = client::config(&pki, &client::Opts::default());
        if client::get(gw.addr(), &fresh, "/").is_err() {
            break;
        }
        assert!(Instant::now() < deadline, "the new CRL was never applied");
        std::thread::sleep(Duration::from_millis(100));
    }
    let stats = gw.stats();
    assert_eq!(
        stats["plan"]["generation"], 2,
        "one reload applied: the CRL's"
    );
    assert!(
        stats["reload"]["failed_total"].as_u64() >= Some(1),
        "the SIGHUP was refused"
    );
    let c = client::config(
        &pki,
        &client::Opts {
            cert: Some("partner-c"),
            ..Default::default()
        },
    );
    assert_eq!(
        client::get(gw.addr(), &c, "/").unwrap().status,
        200,
        "the running server key still serves"
    );
}
