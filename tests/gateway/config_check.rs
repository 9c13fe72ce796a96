//! `mtlsgate check` validates everything and names the key at fault; `demo` works as printed.

use crate::common::{self, pki::Pki};
use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};

fn check(pki: &Pki, text: &str) -> (bool, String) {
    let p = pki.dir.join("check.toml");
    std::fs::write(&p, text).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_mtlsgate"))
        .args(["check", "--config"])
        .arg(&p)
        .output()
        .unwrap();
    let all = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), all)
}

#[test]
fn check_accepts_a_valid_config_and_prints_certificate_expiry() {
    let pki = Pki::new();
    let text = common::http_config(&pki, "127.0.0.1:9".parse().unwrap(), "", "", "");
    let (ok, out) = check(
        &pki,
        &text.replace("{port}", "18445").replace("{admin}", "19445"),
    );
    assert!(ok, "{out}");
    assert!(
        out.contains("server cert") && out.contains("valid until"),
        "{out}"
    );
}

#[test]
fn check_rejects_each_bad_config_naming_the_key_and_the_problem() {
    let pki = Pki::new();
    let good = common::http_config(&pki, "127.0.0.1:9".parse().unwrap(), "", "", "");
    let d = pki.dir.display().to_string();
    let cases: Vec<(&str, String, &[&str])> = vec![
        ("unknown key", good.replace("mode = \"http\"", "mode = \"http\"\nbogus_key = 1"), &["bogus_key"]),
        ("missing file", good.replace(&format!("{d}/server.key"), &format!("{d}/nope.key")), &["listener[0].tls.cert", "nope.key"]),
        ("key does not match cert", good.replace(&format!("{d}/server.key"), &format!("{d}/good.key")), &["listener[0].tls.cert", "does not match"]),
        (
            "expired server cert",
            good.replace(&format!("{d}/server.crt"), &format!("{d}/expired.crt")).replace(&format!("{d}/server.key"), &format!("{d}/expired.key")),
            &["listener[0].tls.cert", "expired"],
        ),
        ("unknown upstream", good.replace("upstream = \"backend\"", "upstream = \"nowhere\""), &["listener[0].upstream", "nowhere"]),
        (
            "duplicate bind",
            format!("{good}\n[[listener]]\nbind = \"127.0.0.1:{{port}}\"\nupstream = \"backend\"\n[listener.tls]\ncert = \"{d}/server.crt\"\nkey = \"{d}/server.key\"\nclient_ca = \"{d}/ca.crt\"\n"),
            &["listener[1].bind", "duplicate"],
        ),
        ("bad duration", good.replace("connect_timeout = \"1s\"", "connect_timeout = \"soon\""), &["connect_timeout"]),
        ("bad allow rule", good.replace("mode = \"http\"", "mode = \"http\"\nallow = [\"uri:spiffe://*/x\"]"), &["listener[0].allow", "'*'"]),
        ("missing CRL", good.replace(&format!("{d}/ca.crl"), &format!("{d}/missing.crl")), &["listener[0].tls.crl[0]", "missing.crl"]),
        ("route prefix with an escape", format!("{good}\n[[listener.route]]\npath_prefix = \"/a%20b\"\n"), &["listener[0].route[0].path_prefix", "only letters"]),
        ("route prefix with a reserved character", format!("{good}\n[[listener.route]]\npath_prefix = \"/v1:batch\"\n"), &["listener[0].route[0].path_prefix"]),
        ("route prefix with a dot-segment", format!("{good}\n[[listener.route]]\npath_prefix = \"/a/../b\"\n"), &["listener[0].route[0].path_prefix", "dot"]),
        ("two routes with one prefix", format!("{good}\n[[listener.route]]\npath_prefix = \"/orders/\"\nallow = [\"cn:x\"]\n[[listener.route]]\npath_prefix = \"/orders\"\n"), &["listener[0].route[1].path_prefix", "same prefix"]),
        ("zero min_body_rate", good.replace("mode = \"http\"", "mode = \"http\"\nmin_body_rate = 0"), &["listener[0].min_body_rate"]),
    ];
    for (name, text, wants) in cases {
        let (ok, out) = check(
            &pki,
            &text.replace("{port}", "18444").replace("{admin}", "19444"),
        );
        assert!(!ok, "{name}: accepted\n{out}");
        for w in wants {
            assert!(out.contains(w), "{name}: missing {w:?} in:\n{out}");
        }
        assert!(out.contains("check.toml"), "{name}: file not named:\n{out}");
    }
}

#[test]
fn the_demo_serves_the_curl_command_it_prints_and_refuses_the_revoked_partner() {
    assert!(common::have("curl"), "curl is required");
    let tmp = tempfile::tempdir().unwrap();
    let (port, admin) = (common::free_port(), common::free_port());
    let mut child = Command::new(env!("CARGO_BIN_EXE_mtlsgate"))
        .current_dir(tmp.path())
        .args([
            "demo",
            "--port",
            &port.to_string(),
            "--admin",
            &format!("127.0.0.1:{admin}"),
        ])
        .stdout(Stdio::piped())
        .stderr(std::fs::File::create(tmp.path().join("demo.log")).unwrap())
        .spawn()
        .unwrap();
    let out = BufReader::new(child.stdout.take().unwrap());
    let curls: Vec<String> = out
        .lines()
        .map_while(Result::ok)
        .filter(|l| l.trim_start().starts_with("curl --cacert"))
        .take(2)
        .collect();
    // Ready when the partner port itself accepts (and the demo is still running).
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err()
        || common::admin_get(admin, "/healthz").map(|r| r.0).ok() != Some(200)
    {
        if let Ok(Some(st)) = child.try_wait() {
            panic!(
                "demo exited early: {st}: {}",
                std::fs::read_to_string(tmp.path().join("demo.log")).unwrap_or_default()
            );
        }
        assert!(std::time::Instant::now() < deadline, "demo not ready");
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    let run = |cmd: &str| {
        Command::new("sh")
            .arg("-c")
            .arg(format!("{} -sS --max-time 10", cmd.trim()))
            .current_dir(tmp.path())
            .output()
            .unwrap()
    };
    let good = run(&curls[0]);
    let bad = run(&curls[1]);
    let _ = child.kill();
    let _ = child.wait();
    assert!(
        good.status.success(),
        "{}",
        String::from_utf8_lossy(&good.stderr)
    );
    assert!(String::from_utf8_lossy(&good.stdout).contains("x-forwarded-client-cert: Hash="));
    assert!(!bad.status.success());
}
