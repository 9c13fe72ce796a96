//! Client-certificate verification, refusals by reason, versions, certificate choice.

use crate::common::{self, client, pki::Pki, upstream};
use std::process::Command;

fn gateway(pki: &Pki, up: &upstream::Upstream) -> common::Gateway {
    common::start(&pki.dir, &common::http_config(pki, up.addr, "", "", ""))
}

#[test]
fn a_good_partner_reaches_the_upstream_which_sees_exactly_the_expected_xfcc() {
    let pki = Pki::new();
    let up = upstream::echo();
    let gw = gateway(&pki, &up);
    let r = client::get(
        gw.addr(),
        &client::config(&pki, &Default::default()),
        "/hello",
    )
    .unwrap();
    assert_eq!(r.status, 200, "{}", r.text());
    let seen = up.requests();
    assert_eq!(seen.len(), 1);
    let sha = mtlsgate::identity::hex(
        aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, &pki.leaves["good"].der).as_ref(),
    );
    let want = format!(
        "Hash={sha};Subject=\"CN=Partner A,O=Partner A Ltd\";URI=spiffe://partner.example/a"
    );
    assert_eq!(
        seen[0].headers_named("x-forwarded-client-cert"),
        vec![want.as_str()]
    );
}

#[test]
fn xfcc_quotes_and_escapes_a_subject_with_commas_and_quotes() {
    let mut pki = Pki::new();
    let mut spec = mtlsgate::demo::pki::ClientSpec::named("a \"b\"");
    spec.dn
        .push((rcgen::DnType::OrganizationName, "Acme, Inc.".into()));
    spec.uris.push("spiffe://partner.example/acme".into());
    spec.dns.push("api.acme.example".into());
    pki.add_client("acme", &spec);
    let up = upstream::echo();
    let gw = gateway(&pki, &up);
    let cfg = client::config(
        &pki,
        &client::Opts {
            cert: Some("acme"),
            ..Default::default()
        },
    );
    assert_eq!(client::get(gw.addr(), &cfg, "/").unwrap().status, 200);
    let sha = mtlsgate::identity::hex(
        aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, &pki.leaves["acme"].der).as_ref(),
    );
    let want = format!(
        // RFC 4514 DN `O=Acme\, Inc.,CN=a \"b\"`, as an RFC 9110 quoted-string.
        r#"Hash={sha};Subject="O=Acme\\, Inc.,CN=a \\\"b\\\"";URI=spiffe://partner.example/acme;DNS=api.acme.example"#
    );
    assert_eq!(
        up.requests()[0].header("x-forwarded-client-cert"),
        Some(want.as_str())
    );
}

fn refused(cert: Option<&str>, reason: &str) {
    let pki = Pki::new();
    let up = upstream::echo();
    let gw = gateway(&pki, &up);
    let cfg = client::config(
        &pki,
        &client::Opts {
            cert,
            ..Default::default()
        },
    );
    let r = client::get(gw.addr(), &cfg, "/");
    assert!(r.is_err(), "expected refusal, got {r:?}");
    assert_eq!(
        gw.wait_stat("partners", &format!("/failures/{reason}"), 1),
        1,
        "{}",
        serde_json::to_string_pretty(&gw.stats()).unwrap()
    );
    assert!(up.requests().is_empty());
}

#[test]
fn a_client_without_a_certificate_is_refused_and_counted_as_no_cert() {
    refused(None, "no_cert");
}

#[test]
fn a_client_certificate_from_another_ca_is_refused_and_counted_as_unknown_ca() {
    refused(Some("foreign"), "unknown_ca");
}

#[test]
fn an_expired_client_certificate_is_refused_and_counted_as_expired() {
    refused(Some("expired"), "expired");
}

#[test]
fn a_revoked_client_certificate_is_refused_and_counted_as_revoked() {
    refused(Some("revoked"), "revoked");
}

#[test]
fn a_client_certificate_without_the_client_auth_eku_is_refused_and_counted_as_bad_eku() {
    refused(Some("wrong-eku"), "bad_eku");
}

#[test]
fn tls_1_2_and_tls_1_3_clients_are_both_served() {
    let pki = Pki::new();
    let up = upstream::echo();
    let gw = gateway(&pki, &up);
    for (t12, t13) in [(true, false), (false, true)] {
        let cfg = client::config(
            &pki,
            &client::Opts {
                tls12_only: t12,
                tls13_only: t13,
                ..Default::default()
            },
        );
        assert_eq!(client::get(gw.addr(), &cfg, "/").unwrap().status, 200);
    }
    assert_eq!(gw.wait_stat("partners", "/tls_versions/1.2", 1), 1);
    assert_eq!(gw.wait_stat("partners", "/tls_versions/1.3", 1), 1);
}

#[test]
fn a_listener_with_tls_1_2_turned_off_refuses_a_tls_1_2_client() {
    let pki = Pki::new();
    let up = upstream::echo();
    let gw = common::start(
        &pki.dir,
        &common::http_config(&pki, up.addr, "", "versions = [\"1.3\"]", ""),
    );
    let cfg = client::config(
        &pki,
        &client::Opts {
            tls12_only: true,
            ..Default::default()
        },
    );
    assert!(client::get(gw.addr(), &cfg, "/").is_err());
    let cfg = client::config(
        &pki,
        &client::Opts {
            tls13_only: true,
            ..Default::default()
        },
    );
    assert_eq!(client::get(gw.addr(), &cfg, "/").unwrap().status, 200);
}

fn server_cert_of(s: &client::Tls) -> Vec<u8> {
    s.conn.peer_certificates().unwrap()[0].to_vec()
}

#[test]
fn ecdsa_and_rsa_server_certificates_are_chosen_by_what_the_client_can_verify() {
    let pki = Pki::new();
    let up = upstream::echo();
    let certs = format!(
        "[[listener.tls.certs]]\ncert = \"{d}/server.crt\"\nkey = \"{d}/server.key\"\n[[listener.tls.certs]]\ncert = \"{d}/server-rsa.crt\"\nkey = \"{d}/server-rsa.key\"\n",
        d = pki.dir.display()
    );
    let cfg = common::http_config(&pki, up.addr, "", "", "").replace(
        &format!(
            "cert = \"{d}/server.crt\"\nkey = \"{d}/server.key\"\n",
            d = pki.dir.display()
        ),
        "",
    );
    let cfg = cfg.replace("[upstream.backend]", &format!("{certs}[upstream.backend]"));
    let gw = common::start(&pki.dir, &cfg);
    let any = client::partner(&pki, gw.addr());
    assert_eq!(server_cert_of(&any), pki.leaves["server"].der);
    let rsa = client::connect(
        gw.addr(),
        &client::config(
            &pki,
            &client::Opts {
                rsa_only: true,
                ..Default::default()
            },
        ),
        "localhost",
    )
    .unwrap();
    assert_eq!(server_cert_of(&rsa), pki.leaves["server-rsa"].der);
}

#[test]
fn sni_picks_the_certificate_configured_for_that_name() {
    let pki = Pki::new();
    let up = upstream::echo();
    let extra = format!("[[listener.tls.certs]]\ncert = \"{d}/api.crt\"\nkey = \"{d}/api.key\"\nsni = [\"api.example.test\"]\n", d = pki.dir.display());
    let cfg = common::http_config(&pki, up.addr, "", "", "")
        .replace("[upstream.backend]", &format!("{extra}[upstream.backend]"));
    let gw = common::start(&pki.dir, &cfg);
    let c = client::config(&pki, &Default::default());
    assert_eq!(
        server_cert_of(&client::connect(gw.addr(), &c, "api.example.test").unwrap()),
        pki.leaves["api"].der
    );
    assert_eq!(
        server_cert_of(&client::connect(gw.addr(), &c, "localhost").unwrap()),
        pki.leaves["server"].der
    );
}

#[test]
fn curl_with_a_partner_certificate_gets_through_and_without_one_is_refused() {
    assert!(
        common::have("curl"),
        "curl is required (apt-get install curl)"
    );
    let pki = Pki::new();
    let up = upstream::echo();
    let gw = gateway(&pki, &up);
    let url = format!("https://localhost:{}/curl", gw.port);
    let ok = Command::new("curl")
        .args([
            "-sS",
            "--max-time",
            "10",
            "--cacert",
            &pki.path("ca.crt"),
            "--cert",
            &pki.path("good.crt"),
            "--key",
            &pki.path("good.key"),
            &url,
        ])
        .output()
        .unwrap();
    assert!(
        ok.status.success(),
        "{}",
        String::from_utf8_lossy(&ok.stderr)
    );
    assert!(String::from_utf8_lossy(&ok.stdout).contains("x-forwarded-client-cert: Hash="));
    let no = Command::new("curl")
        .args([
            "-sS",
            "--max-time",
            "10",
            "--cacert",
            &pki.path("ca.crt"),
            &url,
        ])
        .output()
        .unwrap();
    assert!(!no.status.success());
    assert_eq!(up.requests().len(), 1);
}

#[test]
fn openssl_s_client_completes_an_mtls_handshake_with_tls_1_2() {
    assert!(
        common::have("openssl"),
        "openssl is required (apt-get install openssl)"
    );
    let pki = Pki::new();
    let up = upstream::echo();
    let gw = gateway(&pki, &up);
    let out = Command::new("sh")
        .arg("-c")
        .arg(format!(
            "printf 'GET /s HTTP/1.1\\r\\nHost: localhost\\r\\nConnection: close\\r\\n\\r\\n' | timeout 20 openssl s_client -tls1_2 -quiet -connect 127.0.0.1:{} -servername localhost -CAfile {} -cert {} -key {} -verify_return_error",
            gw.port, pki.path("ca.crt"), pki.path("good.crt"), pki.path("good.key")
        ))
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.starts_with("HTTP/1.1 200"),
        "{text}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(gw.wait_stat("partners", "/tls_versions/1.2", 1), 1);
}
