//! Resumption for a fleet: a shared ticket-key file, rotation, reload, the
//! stateful cache, and policy re-applied to resumed sessions.

use crate::common::{self, client, pki::Pki, upstream};
use std::io::Write;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

fn keys(args: &[&str], file: &Path) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_mtlsgate"))
        .arg("ticket-keys")
        .args(args)
        .arg(file)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).to_string()
}

fn with_keys(text: &str, file: &Path) -> String {
    format!("ticket_keys = \"{}\"\n{text}", file.display())
}

/// A fresh key file in the PKI dir, and the standard config reading it.
fn keyed_config(pki: &Pki, up: &upstream::Upstream) -> (std::path::PathBuf, String) {
    let f = pki.dir.join("fleet.keys");
    keys(&["new"], &f);
    let text = with_keys(&common::http_config(pki, up.addr, "", "", ""), &f);
    (f, text)
}

/// Sends SIGHUP and waits until the gateway has done its `n`-th reload.
fn sighup_and_wait(gw: &common::Gateway, n: u64) {
    gw.sighup();
    let deadline = Instant::now() + Duration::from_secs(10);
    while gw.stats()["ticket_keys"]["reloads"].as_u64() < Some(n) {
        assert!(Instant::now() < deadline, "SIGHUP did not reload");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Connects, makes one request (which also reads the tickets), reports whether it resumed.
fn visit(addr: std::net::SocketAddr, cfg: &std::sync::Arc<rustls::ClientConfig>) -> bool {
    let mut s = client::connect(addr, cfg, "localhost").unwrap();
    s.write_all(b"GET / HTTP/1.1\r\nHost: localhost\r\n\r\n")
        .unwrap();
    assert_eq!(
        client::read_response(&mut s, &mut Vec::new(), false)
            .unwrap()
            .status,
        200
    );
    client::resumed(&s)
}

/// Waits until the gateway reports `id` as its current ticket key.
fn wait_current_key(gw: &common::Gateway, id: &str) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while gw.stats()["ticket_keys"]["ids"]["current"] != id {
        assert!(
            Instant::now() < deadline,
            "key {id} not loaded: {}",
            gw.stats()["ticket_keys"]
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn current_id(file: &Path) -> String {
    let out = keys(&["show"], file);
    out.lines()
        .find(|l| l.starts_with("current"))
        .unwrap()
        .split_whitespace()
        .nth(1)
        .unwrap()
        .to_string()
}

#[test]
fn ticket_keys_new_writes_a_private_file_and_rotate_moves_every_key_one_slot() {
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("keys");
    keys(&["new"], &f);
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(
        std::fs::metadata(&f).unwrap().permissions().mode() & 0o777,
        0o600
    );
    let before = keys(&["show"], &f);
    let next = before
        .lines()
        .find(|l| l.starts_with("next"))
        .unwrap()
        .split_whitespace()
        .nth(1)
        .unwrap()
        .to_string();
    let cur = current_id(&f);
    keys(&["rotate"], &f);
    let after = keys(&["show"], &f);
    assert!(after.contains(&format!("current  {next}")), "{after}");
    assert!(after.contains(&format!("previous {cur}")), "{after}");
    let again = Command::new(env!("CARGO_BIN_EXE_mtlsgate"))
        .args(["ticket-keys", "new"])
        .arg(&f)
        .output()
        .unwrap();
    assert!(!again.status.success(), "new must not overwrite");
}

#[test]
fn with_two_workers_fifty_reconnects_all_resume_whichever_worker_accepts() {
    let pki = Pki::new();
    let up = upstream::echo();
    let gw = common::start(
        &pki.dir,
        &common::http_config(&pki, up.addr, "", "", "").replace("workers = 1", "workers = 2"),
    );
    let cfg = client::config(&pki, &Default::default());
    assert!(!visit(gw.addr(), &cfg));
    for i in 0..50 {
        assert!(visit(gw.addr(), &cfg), "reconnect {i} did not resume");
    }
    let stats = gw.stats();
    let per_worker: Vec<u64> = stats["workers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|w| {
            w["listeners"]["partners"]["handshakes"]["resumed"]
                .as_u64()
                .unwrap()
        })
        .collect();
    assert_eq!(per_worker.iter().sum::<u64>(), 50, "{per_worker:?}");
    assert!(
        per_worker.iter().all(|&n| n > 0),
        "both workers should have resumed some: {per_worker:?}"
    );
}

#[test]
fn two_gateways_reading_one_key_file_resume_each_others_sessions() {
    let pki = Pki::new();
    let up = upstream::echo();
    let (_, text) = keyed_config(&pki, &up);
    let a = common::start(&pki.dir, &text);
    let b = common::start(&pki.dir, &text);
    let cfg = client::config(&pki, &Default::default());
    assert!(!visit(a.addr(), &cfg));
    assert!(
        visit(b.addr(), &cfg),
        "a session from host A must resume on host B"
    );
    assert!(visit(a.addr(), &cfg), "and back");
}

#[test]
fn after_rotate_old_tickets_still_resume_and_after_a_second_rotate_they_fall_back_to_full() {
    let pki = Pki::new();
    let up = upstream::echo();
    let (f, text) = keyed_config(&pki, &up);
    let gw = common::start(&pki.dir, &text);
    let (c1, c2) = (
        client::config(&pki, &Default::default()),
        client::config(&pki, &Default::default()),
    );
    assert!(!visit(gw.addr(), &c1));
    assert!(!visit(gw.addr(), &c2));
    keys(&["rotate"], &f);
    wait_current_key(&gw, &current_id(&f));
    assert!(
        visit(gw.addr(), &c1),
        "a ticket under the previous key must still resume"
    );
    let c3 = client::config(&pki, &Default::default());
    assert!(!visit(gw.addr(), &c3)); // gets a ticket under the new current key
    keys(&["rotate"], &f);
    wait_current_key(&gw, &current_id(&f));
    assert!(
        !visit(gw.addr(), &c2),
        "a ticket two rotations old must fall back to a full handshake"
    );
    assert!(visit(gw.addr(), &c3), "a ticket under the new key resumes");
    assert!(gw.wait_stat("partners", "/ticket_failures/unknown_key", 1) >= 1);
}

#[test]
fn a_key_staged_as_next_on_host_b_opens_tickets_from_host_a_after_a_rotates() {
    let pki = Pki::new();
    let (fa, fb) = (pki.dir.join("a.keys"), pki.dir.join("b.keys"));
    keys(&["new"], &fa);
    std::fs::copy(&fa, &fb).unwrap();
    let up = upstream::echo();
    let base = common::http_config(&pki, up.addr, "", "", "");
    let a = common::start(&pki.dir, &with_keys(&base, &fa));
    let b = common::start(&pki.dir, &with_keys(&base, &fb));
    keys(&["rotate"], &fa); // A now encrypts with the key B holds as `next`
    wait_current_key(&a, &current_id(&fa));
    let cfg = client::config(&pki, &Default::default());
    assert!(!visit(a.addr(), &cfg));
    assert!(
        visit(b.addr(), &cfg),
        "B must accept tickets under its staged next key"
    );
}

#[test]
fn two_listeners_reading_one_key_file_do_not_resume_each_others_tickets() {
    let pki = Pki::new();
    let f = pki.dir.join("fleet.keys");
    keys(&["new"], &f);
    let up = upstream::echo();
    let port_b = common::free_port();
    let d = pki.dir.display();
    let second = format!(
        "[[listener]]\nname = \"other\"\nbind = \"127.0.0.1:{port_b}\"\nupstream = \"backend\"\n[listener.tls]\ncert = \"{d}/server.crt\"\nkey = \"{d}/server.key\"\nclient_ca = \"{d}/ca.crt\"\n"
    );
    let text = with_keys(&common::http_config(&pki, up.addr, "", "", &second), &f);
    let gw = common::start(&pki.dir, &text);
    let cfg = client::config(&pki, &Default::default());
    assert!(!visit(gw.addr(), &cfg));
    let b: std::net::SocketAddr = format!("127.0.0.1:{port_b}").parse().unwrap();
    assert!(
        !visit(b, &cfg),
        "a ticket from listener A must get a full handshake on B"
    );
    assert_eq!(gw.wait_stat("other", "/ticket_failures/unknown_key", 1), 1);
}

#[test]
fn a_partner_revoked_after_its_first_connection_cannot_resume_or_connect_after_sighup() {
    let pki = Pki::new();
    let up = upstream::echo();
    let gw = common::start_basic(&pki, up.addr);
    let cfg = client::config(
        &pki,
        &client::Opts {
            cert: Some("partner-c"),
            ..Default::default()
        },
    );
    assert!(!visit(gw.addr(), &cfg));
    pki.revoke(&["revoked", "partner-c"]);
    sighup_and_wait(&gw, 1);
    std::thread::sleep(Duration::from_millis(100)); // the workers apply it right after
    let resumed = client::connect(gw.addr(), &cfg, "localhost").and_then(|mut s| {
        s.write_all(b"GET / HTTP/1.1\r\nHost: localhost\r\n\r\n")?;
        client::read_response(&mut s, &mut Vec::new(), false)
    });
    assert!(
        resumed.is_err(),
        "the resumed session of a revoked partner must be refused: {resumed:?}"
    );
    let fresh = client::config(
        &pki,
        &client::Opts {
            cert: Some("partner-c"),
            ..Default::default()
        },
    );
    assert!(
        client::get(gw.addr(), &fresh, "/").is_err(),
        "a full handshake must be refused too"
    );
    assert!(gw.wait_stat("partners", "/failures/revoked", 2) >= 2);
    assert_eq!(up.requests().len(), 1);
}

#[test]
fn a_corrupt_key_file_is_reported_and_the_old_keys_kept() {
    let pki = Pki::new();
    let up = upstream::echo();
    let (f, text) = keyed_config(&pki, &up);
    let id = current_id(&f);
    let gw = common::start(&pki.dir, &text);
    let cfg = client::config(&pki, &Default::default());
    assert!(!visit(gw.addr(), &cfg));
    std::fs::write(
        &f,
        "format = \"mtlsgate-ticket-keys/1\"\ncurrent = \"abcd\"\n",
    )
    .unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while gw.stats()["ticket_keys"]["last_error"].is_null() {
        assert!(Instant::now() < deadline, "the bad file was not noticed");
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(gw.stats()["ticket_keys"]["ids"]["current"], id.as_str());
    assert!(
        visit(gw.addr(), &cfg),
        "sessions under the kept keys still resume"
    );
}

#[test]
fn check_refuses_a_key_file_that_others_can_read() {
    let pki = Pki::new();
    let f = pki.dir.join("fleet.keys");
    keys(&["new"], &f);
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&f, std::fs::Permissions::from_mode(0o644)).unwrap();
    let cfg = pki.dir.join("k.toml");
    let text = with_keys(
        &common::http_config(&pki, "127.0.0.1:9".parse().unwrap(), "", "", ""),
        &f,
    );
    std::fs::write(
        &cfg,
        text.replace("{port}", "18446").replace("{admin}", "19446"),
    )
    .unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_mtlsgate"))
        .args(["check", "--config"])
        .arg(&cfg)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        err.contains("ticket_keys") && err.contains("chmod 600"),
        "{err}"
    );
}

#[test]
fn the_session_cache_resumes_tls_1_2_clients_that_do_not_use_tickets() {
    let pki = Pki::new();
    let up = upstream::echo();
    let text = common::http_config(
        &pki,
        up.addr,
        "",
        "session_tickets = false\nsession_cache = 1000",
        "",
    )
    .replace("workers = 1", "workers = 2");
    let gw = common::start(&pki.dir, &text);
    let cfg = client::config(
        &pki,
        &client::Opts {
            tls12_only: true,
            ..Default::default()
        },
    );
    assert!(!visit(gw.addr(), &cfg));
    for i in 0..20 {
        assert!(
            visit(gw.addr(), &cfg),
            "reconnect {i} did not resume from the cache"
        );
    }
}

#[test]
fn a_reload_keeps_open_connections_serving() {
    let pki = Pki::new();
    let up = upstream::echo();
    let (f, text) = keyed_config(&pki, &up);
    let gw = common::start(&pki.dir, &text);
    let mut s = client::partner(&pki, gw.addr());
    let req = b"GET / HTTP/1.1\r\nHost: localhost\r\n\r\n";
    s.write_all(req).unwrap();
    let mut buf = Vec::new();
    assert_eq!(
        client::read_response(&mut s, &mut buf, false)
            .unwrap()
            .status,
        200
    );
    keys(&["rotate"], &f);
    wait_current_key(&gw, &current_id(&f));
    sighup_and_wait(&gw, 2);
    s.write_all(req).unwrap();
    assert_eq!(
        client::read_response(&mut s, &mut buf, false)
            .unwrap()
            .status,
        200,
        "the open connection survives both reloads"
    );
    assert_eq!(gw.stat("partners", "/connections/accepted"), 1);
}
