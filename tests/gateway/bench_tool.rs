//! mtlsgate-bench as a functional check (no timing assertions): it completes
//! handshakes, tells full from resumed, and reports errors by kind.

use crate::common::{self, pki::Pki, upstream};
use std::process::Command;

fn bench(gw: &common::Gateway, pki: &Pki, cert: &str, args: &[&str]) -> serde_json::Value {
    let out = Command::new(env!("CARGO_BIN_EXE_mtlsgate-bench"))
        .args([
            "--target",
            &gw.addr().to_string(),
            "--ca",
            &pki.path("ca.crt"),
        ])
        .args([
            "--cert",
            &pki.path(&format!("{cert}.crt")),
            "--key",
            &pki.path(&format!("{cert}.key")),
        ])
        .args([
            "--duration",
            "1s",
            "--warmup",
            "0s",
            "--concurrency",
            "2",
            "--server-pid",
            &gw.child.id().to_string(),
        ])
        .args(args)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_str(text.lines().last().unwrap()).unwrap()
}

fn gateway(pki: &Pki, up: &upstream::Upstream) -> common::Gateway {
    common::start(
        &pki.dir,
        &common::http_config(pki, up.addr, "", "", "")
            .replace("mode = \"http\"", "mode = \"http\"\n"),
    )
}

#[test]
fn the_load_generator_counts_full_handshakes_as_full() {
    let pki = Pki::new();
    let up = upstream::echo();
    let gw = gateway(&pki, &up);
    let r = bench(&gw, &pki, "good", &["--mode", "full"]);
    assert!(r["ops"].as_u64().unwrap() > 0, "{r}");
    assert_eq!(r["resumed"], 0, "{r}");
    assert_eq!(r["errors"], serde_json::json!({}), "{r}");
    assert!(r["server_cpu_us_per_op"].as_f64().is_some(), "{r}");
}

#[test]
fn the_load_generator_counts_every_resumed_handshake_and_tls_1_2_too() {
    let pki = Pki::new();
    let up = upstream::echo();
    let gw = gateway(&pki, &up);
    for extra in [&[][..], &["--tls12"][..]] {
        let mut args = vec!["--mode", "resume"];
        args.extend_from_slice(extra);
        let r = bench(&gw, &pki, "good", &args);
        assert!(r["ops"].as_u64().unwrap() > 0, "{r}");
        assert_eq!(r["resumed"], r["ops"], "{r}");
    }
}

#[test]
fn the_load_generator_reports_a_refused_client_certificate_as_handshake_errors() {
    let pki = Pki::new();
    let up = upstream::echo();
    let gw = gateway(&pki, &up);
    let r = bench(&gw, &pki, "revoked", &["--mode", "full"]);
    assert_eq!(
        r["ops"], 0,
        "a refused handshake must not count as done: {r}"
    );
    assert!(r["errors"]["handshake"].as_u64().unwrap_or(0) > 0, "{r}");
}

#[test]
fn the_load_generator_runs_keep_alive_requests_and_an_open_loop() {
    let pki = Pki::new();
    let up = upstream::spawn(|_| upstream::ok("ok"));
    let gw = gateway(&pki, &up);
    let r = bench(&gw, &pki, "good", &["--mode", "keepalive"]);
    assert!(r["ops"].as_u64().unwrap() > 10, "{r}");
    let r = bench(
        &gw,
        &pki,
        "good",
        &["--mode", "full", "--rate", "50", "--threads", "4"],
    );
    assert!(
        r["ops"].as_u64().unwrap() > 0 && r["p99_us"].as_u64().unwrap() > 0,
        "{r}"
    );
}
