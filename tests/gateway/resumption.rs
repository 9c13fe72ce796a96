//! TLS session resumption, across workers, and never past a failed re-check.

use crate::common::{self, client, pki::Pki, upstream};
use std::io::Write;
use std::process::Command;
use std::time::{Duration, Instant};

fn request(s: &mut client::Tls) -> std::io::Result<client::Response> {
    s.write_all(b"GET / HTTP/1.1\r\nHost: localhost\r\n\r\n")?;
    client::read_response(s, &mut Vec::new(), false)
}

fn resumes(o: client::Opts<'_>) {
    let pki = Pki::new();
    let up = upstream::echo();
    let gw = common::start_basic(&pki, up.addr);
    let cfg = client::config(&pki, &o);
    let mut first = client::connect(gw.addr(), &cfg, "localhost").unwrap();
    assert!(!client::resumed(&first));
    assert_eq!(request(&mut first).unwrap().status, 200); // also reads the tickets
    let mut second = client::connect(gw.addr(), &cfg, "localhost").unwrap();
    assert!(client::resumed(&second));
    assert_eq!(request(&mut second).unwrap().status, 200);
    assert_eq!(gw.wait_stat("partners", "/handshakes/resumed", 1), 1);
    // The restored identity still reaches the upstream.
    assert!(up.requests()[1]
        .header("x-forwarded-client-cert")
        .unwrap()
        .contains("URI=spiffe://partner.example/a"));
}

#[test]
fn a_rustls_client_resumes_a_tls_1_3_session_from_a_ticket() {
    resumes(client::Opts {
        tls13_only: true,
        ..Default::default()
    });
}

#[test]
fn a_rustls_client_resumes_a_tls_1_2_session_from_a_ticket() {
    resumes(client::Opts {
        tls12_only: true,
        ..Default::default()
    });
}

/// openssl s_client saves a session (`-sess_out`) and resumes it (`-sess_in`).
fn openssl_resumes(version_flag: &str, want: &str) {
    assert!(common::have("openssl"), "openssl is required");
    let pki = Pki::new();
    let up = upstream::echo();
    let gw = common::start_basic(&pki, up.addr);
    let sess = pki.dir.join("s.pem");
    let run = |flag: &str| {
        let out = Command::new("sh")
            .arg("-c")
            .arg(format!(
                "printf 'GET / HTTP/1.1\\r\\nHost: localhost\\r\\nConnection: close\\r\\n\\r\\n' | timeout 20 openssl s_client {version_flag} -ign_eof -connect 127.0.0.1:{} -servername localhost -CAfile {} -cert {} -key {} {flag} {}",
                gw.port,
                pki.path("ca.crt"),
                pki.path("good.crt"),
                pki.path("good.key"),
                sess.display()
            ))
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).to_string()
    };
    let first = run("-sess_out");
    assert!(first.contains("HTTP/1.1 200"), "{first}");
    let second = run("-sess_in");
    assert!(second.contains(want), "{second}");
    assert!(second.contains("HTTP/1.1 200"), "{second}");
}

#[test]
fn openssl_s_client_resumes_a_tls_1_3_session_with_sess_out_and_sess_in() {
    openssl_resumes("-tls1_3", "Reused, TLSv1.3");
}

#[test]
fn openssl_s_client_resumes_a_tls_1_2_session_with_sess_out_and_sess_in() {
    openssl_resumes("-tls1_2", "Reused, TLSv1.2");
}

#[test]
fn with_two_workers_a_session_resumes_on_the_other_worker() {
    let pki = Pki::new();
    let up = upstream::echo();
    let cfg_text =
        common::http_config(&pki, up.addr, "", "", "").replace("workers = 1", "workers = 2");
    let gw = common::start(&pki.dir, &cfg_text);
    let cfg = client::config(&pki, &Default::default());
    let mut first = client::connect(gw.addr(), &cfg, "localhost").unwrap();
    request(&mut first).unwrap();
    let workers = |s: &serde_json::Value, kind: &str| -> Vec<u64> {
        s["workers"]
            .as_array()
            .unwrap()
            .iter()
            .map(|w| {
                w["listeners"]["partners"]["handshakes"][kind]
                    .as_u64()
                    .unwrap()
            })
            .collect()
    };
    let full = workers(&gw.stats(), "full");
    let home = full.iter().position(|&n| n == 1).unwrap();
    for _ in 0..50 {
        let mut s = client::connect(gw.addr(), &cfg, "localhost").unwrap();
        assert!(client::resumed(&s));
        request(&mut s).unwrap();
        if workers(&gw.stats(), "resumed")[1 - home] > 0 {
            return;
        }
    }
    panic!(
        "50 reconnects never resumed on the other worker: {}",
        gw.stats()
    );
}

#[test]
fn a_resumed_session_whose_certificate_has_expired_since_is_refused() {
    let mut pki = Pki::new();
    let mut spec =
        mtlsgate::demo::pki::ClientSpec::named("Short").uri("spiffe://partner.example/short");
    spec.lifetime = Some(time::Duration::seconds(3));
    pki.add_client("short", &spec);
    let up = upstream::echo();
    let gw = common::start_basic(&pki, up.addr);
    let cfg = client::config(
        &pki,
        &client::Opts {
            cert: Some("short"),
            ..Default::default()
        },
    );
    let mut first = client::connect(gw.addr(), &cfg, "localhost").unwrap();
    assert_eq!(request(&mut first).unwrap().status, 200);
    std::thread::sleep(Duration::from_secs(5));
    let refused = match client::connect(gw.addr(), &cfg, "localhost") {
        Err(_) => true,
        Ok(mut s) => {
            assert!(
                client::resumed(&s),
                "expected the client to offer its ticket"
            );
            request(&mut s).is_err()
        }
    };
    assert!(
        refused,
        "an expired identity must not pass on a resumed session"
    );
    assert_eq!(gw.wait_stat("partners", "/failures/expired", 1), 1);
    assert_eq!(up.requests().len(), 1);
}

#[test]
fn a_partner_revoked_while_the_gateway_was_restarted_cannot_resume_or_connect() {
    let pki = Pki::new();
    let up = upstream::echo();
    let text = common::http_config(&pki, up.addr, "", "", "");
    let (port, admin) = (common::free_port(), common::free_port());
    let gw = common::start_ports(&pki.dir, &text, port, admin);
    let cfg = client::config(
        &pki,
        &client::Opts {
            cert: Some("partner-c"),
            ..Default::default()
        },
    );
    let mut s = client::connect(gw.addr(), &cfg, "localhost").unwrap();
    assert_eq!(request(&mut s).unwrap().status, 200);
    drop(s);
    assert!(gw.stop().success());
    pki.revoke(&["revoked", "partner-c"]);
    let gw = common::start_ports(&pki.dir, &text, port, admin);
    let deadline = Instant::now() + Duration::from_secs(5);
    let r = loop {
        match client::connect(gw.addr(), &cfg, "localhost").and_then(|mut s| request(&mut s)) {
            Err(e)
                if e.kind() == std::io::ErrorKind::ConnectionRefused
                    && Instant::now() < deadline =>
            {
                continue
            }
            r => break r,
        }
    };
    assert!(r.is_err(), "{r:?}");
    assert_eq!(gw.wait_stat("partners", "/failures/revoked", 1), 1);
    assert_eq!(up.requests().len(), 1);
}
