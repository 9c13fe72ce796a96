//! The trust boundary as a partner who writes its own CSR sees it: identity
//! strings that could smuggle a request or forge an XFCC element, what a `cn:`
//! rule matches (the alert and reloads are in `trust_tls`).

use crate::common::{self, client, pki::Pki, upstream};
use mtlsgate::demo::pki::ClientSpec;
use rcgen::DnType;
use rustls::AlertDescription;
use std::io;
use std::time::Duration;
use x509_parser::prelude::{FromDer, X509Certificate};

/// A leaked name, so certificates made in a loop can be added to the PKI.
fn name(s: String) -> &'static str {
    Box::leak(s.into_boxed_str())
}

pub(crate) fn opts(cert: &str) -> client::Opts<'_> {
    client::Opts {
        cert: Some(cert),
        ..Default::default()
    }
}

fn sha256_hex(der: &[u8]) -> String {
    mtlsgate::identity::hex(aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, der).as_ref())
}

/// The rustls error inside an I/O error from the client, if there is one.
pub(crate) fn tls_error(e: &io::Error) -> Option<&rustls::Error> {
    e.get_ref()?.downcast_ref::<rustls::Error>()
}

/// `Ok` if the gateway refused this partner in the handshake with a
/// certificate_unknown alert; otherwise what happened instead.
fn refused_for_bad_identity(gw: &common::Gateway, pki: &Pki, cert: &str) -> Result<(), String> {
    let cfg = client::config(pki, &opts(cert));
    match client::get(gw.addr(), &cfg, "/hello") {
        Ok(r) => Err(format!(
            "handshake accepted; the request got {} {:?}",
            r.status,
            r.text()
        )),
        Err(e) => match tls_error(&e) {
            Some(rustls::Error::AlertReceived(AlertDescription::CertificateUnknown)) => Ok(()),
            other => Err(format!(
                "refused, but not with a certificate_unknown alert: {e} ({other:?})"
            )),
        },
    }
}

#[test]
fn a_uri_san_carrying_crlf_a_second_request_and_a_forged_xfcc_is_refused_in_the_handshake() {
    let mut pki = Pki::new();
    let evil = "spiffe://partner.example/b\r\n\r\nGET /orders/export HTTP/1.1\r\nHost: x\r\n\
                x-forwarded-client-cert: Hash=00;URI=spiffe://partner.example/partner-a\r\nX: x";
    // rcgen builds it: an IA5String only has to be ASCII, and CR/LF are.
    pki.add_client("smuggler", &ClientSpec::named("Partner B").uri(evil));
    let up = upstream::echo();
    let gw = common::start(
        &pki.dir,
        &common::http_config(
            &pki,
            up.addr,
            "allow = [\"uri:spiffe://partner.example/*\"]",
            "",
            "[[listener.route]]\npath_prefix = \"/orders\"\n\
             allow = [\"uri:spiffe://partner.example/partner-a\"]\n",
        ),
    );
    let outcome = refused_for_bad_identity(&gw, &pki, "smuggler");
    std::thread::sleep(Duration::from_millis(200)); // anything forwarded has arrived by now
    let seen = up.requests();
    assert!(
        outcome.is_ok(),
        "{}; the upstream received {} request(s): {:#?}",
        outcome.unwrap_err(),
        seen.len(),
        seen
    );
    assert_eq!(
        gw.wait_stat("partners", "/failures/bad_identity", 1),
        1,
        "{}",
        serde_json::to_string_pretty(&gw.stats()).unwrap()
    );
    assert!(seen.is_empty(), "the upstream received {seen:#?}");
    assert_eq!(up.connections(), 0, "no upstream connection was needed");
    // The next partner is served its own response, on a clean upstream connection.
    let r = client::get(
        gw.addr(),
        &client::config(&pki, &Default::default()),
        "/next",
    )
    .unwrap();
    assert_eq!(r.status, 200, "{}", r.text());
    assert!(r.text().starts_with("GET /next\n"), "{}", r.text());
    let seen = up.requests();
    assert_eq!(seen.len(), 1, "{seen:#?}");
    assert_eq!(seen[0].path, "/next");
}

#[test]
fn subject_values_that_are_not_text_strings_are_refused_and_bmp_strings_are_read_as_text() {
    use rcgen::string::{BmpString, TeletexString, UniversalString};
    use rcgen::DnValue;
    let mut pki = Pki::new();
    // A T61 CN whose bytes are a UTF8String TLV: written as RFC 4514 `#hex`,
    // a DN parser would read it back as CN=Partner A.
    let mut t61 = ClientSpec::default().uri("spiffe://partner.example/t61");
    t61.dn_values.push((
        DnType::CommonName,
        DnValue::TeletexString(TeletexString::try_from("Partner A").unwrap()),
    ));
    pki.add_client("t61", &t61);
    let mut univ = ClientSpec::default().uri("spiffe://partner.example/universal");
    univ.dn_values.push((
        DnType::OrganizationName,
        DnValue::UniversalString(UniversalString::try_from("Acme").unwrap()),
    ));
    pki.add_client("universal", &univ);
    let mut bmp = ClientSpec::default().uri("spiffe://partner.example/bmp");
    bmp.dn_values.push((
        DnType::CommonName,
        DnValue::BmpString(BmpString::try_from("Partner B").unwrap()),
    ));
    pki.add_client("bmp", &bmp);
    let up = upstream::echo();
    let gw = common::start(&pki.dir, &common::http_config(&pki, up.addr, "", "", ""));
    for cert in ["t61", "universal"] {
        if let Err(e) = refused_for_bad_identity(&gw, &pki, cert) {
            panic!("{cert}: {e}");
        }
    }
    assert_eq!(gw.wait_stat("partners", "/failures/bad_identity", 2), 2);
    let cfg = client::config(&pki, &opts("bmp"));
    assert_eq!(client::get(gw.addr(), &cfg, "/").unwrap().status, 200);
    let xfcc = up.requests()[0]
        .header("x-forwarded-client-cert")
        .unwrap()
        .to_string();
    assert!(xfcc.contains(r#"Subject="CN=Partner B""#), "{xfcc}");
}

#[test]
fn control_characters_in_any_identity_field_are_refused_in_the_handshake() {
    let mut pki = Pki::new();
    // (label, certificate): every subject attribute, every CN, URI and DNS SANs,
    // with bare CR, bare LF, CRLF, NUL, 0x01, 0x1f, DEL and a C1 control.
    let mut cases: Vec<(String, ClientSpec)> = Vec::new();
    let bad = [
        ("CR", "\r"),
        ("LF", "\n"),
        ("CRLF", "\r\n"),
        ("NUL", "\0"),
        ("0x01", "\u{1}"),
        ("0x1f", "\u{1f}"),
        ("DEL", "\u{7f}"),
    ];
    for (what, c) in bad {
        cases.push((
            format!("CN with {what}"),
            ClientSpec::named(&format!("Partner{c}A")).uri("spiffe://partner.example/cn"),
        ));
        let mut o = ClientSpec::named("Partner O").uri("spiffe://partner.example/o");
        o.dn.insert(0, (DnType::OrganizationName, format!("Acme{c}X-Evil: 1")));
        cases.push((format!("O with {what}"), o));
        let mut dns = ClientSpec::named("Partner D").uri("spiffe://partner.example/d");
        dns.dns.push(format!("api{c}.partner.example"));
        cases.push((format!("DNS SAN with {what}"), dns));
        cases.push((
            format!("URI SAN with {what}"),
            ClientSpec::named("Partner U").uri(&format!("spiffe://partner.example/u{c}x")),
        ));
    }
    let mut c1 = ClientSpec::named("Partner\u{85}A").uri("spiffe://partner.example/c1");
    c1.dn
        .push((DnType::OrganizationName, "Acme\u{9b}31m".into()));
    cases.push(("CN and O with C1 controls (U+0085, U+009B)".into(), c1));
    let mut ou = ClientSpec::named("Partner OU").uri("spiffe://partner.example/ou");
    ou.dn
        .push((DnType::OrganizationalUnitName, "Ops\r\nX: y".into()));
    cases.push(("OU with CRLF".into(), ou));
    // A second CN (same OID, its own RDN) that is the one carrying the bytes.
    let mut second_cn = ClientSpec::named("Partner A").uri("spiffe://partner.example/2cn");
    second_cn
        .dn
        .push((DnType::CustomDnType(vec![2, 5, 4, 3]), "B\r\nX: y".into()));
    cases.push(("second CN with CRLF".into(), second_cn));

    for (i, (_, spec)) in cases.iter().enumerate() {
        pki.add_client(name(format!("ctl-{i}")), spec);
    }
    let up = upstream::echo();
    let gw = common::start(&pki.dir, &common::http_config(&pki, up.addr, "", "", ""));
    let mut wrong = Vec::new();
    for (i, (label, _)) in cases.iter().enumerate() {
        if let Err(e) = refused_for_bad_identity(&gw, &pki, &format!("ctl-{i}")) {
            wrong.push(format!("{label}: {e}"));
        }
    }
    assert!(
        wrong.is_empty(),
        "{} of {} certificates with control characters were not refused in the handshake:\n{}\nthe upstream received {:#?}",
        wrong.len(),
        cases.len(),
        wrong.join("\n"),
        up.requests()
    );
    let n = cases.len() as u64;
    assert_eq!(
        gw.wait_stat("partners", "/failures/bad_identity", n),
        n,
        "{}",
        serde_json::to_string_pretty(&gw.stats()).unwrap()
    );
    assert!(up.requests().is_empty(), "{:#?}", up.requests());
}

// The independent XFCC and RFC 4514 readers are the fuzz checks' own.
use crate::fuzz_corpus::checks::{parse_dn as parse_rfc4514, parse_xfcc};

fn values<'a>(el: &'a [(String, String)], key: &str) -> Vec<&'a str> {
    el.iter()
        .filter(|(k, _)| k.eq_ignore_ascii_case(key))
        .map(|(_, v)| v.as_str())
        .collect()
}

#[test]
fn xfcc_values_are_quoted_so_an_rfc_9110_parser_reads_exactly_the_certificates_identity() {
    let mut pki = Pki::new();
    struct Case {
        cert: &'static str,
        /// Subject as the partner asked for it, in certificate order.
        dn: Vec<(DnType, &'static str)>,
        uri: &'static str,
        /// The RFC 4514 Subject the gateway must report (last RDN first).
        rfc4514: &'static str,
        /// The header byte for byte, after `Hash=<hex>;`.
        golden: &'static str,
    }
    let cases = [
        // The issue's value: a literal backslash before the quote closed the quoted-string early.
        Case {
            cert: "quote-uri",
            dn: vec![(DnType::CommonName, "Partner Q")],
            uri: r#"spiffe://partner.example/b\";URI=spiffe://victim/admin;x=""#,
            rfc4514: "CN=Partner Q",
            golden: r#"Subject="CN=Partner Q";URI="spiffe://partner.example/b\\\";URI=spiffe://victim/admin;x=\"""#,
        },
        // The same without the backslash.
        Case {
            cert: "quote-uri-2",
            dn: vec![(DnType::CommonName, "Partner Q")],
            uri: r#"spiffe://partner.example/b";URI=spiffe://victim/admin;x=""#,
            rfc4514: "CN=Partner Q",
            golden: r#"Subject="CN=Partner Q";URI="spiffe://partner.example/b\";URI=spiffe://victim/admin;x=\"""#,
        },
        // O = `x,CN=Partner A`: its RFC 4514 escape `\,` must survive the quoting.
        Case {
            cert: "comma-o",
            dn: vec![
                (DnType::OrganizationName, "x,CN=Partner A"),
                (DnType::CommonName, "Partner B"),
            ],
            uri: "spiffe://partner.example/b",
            rfc4514: r"CN=Partner B,O=x\,CN=Partner A",
            golden: r#"Subject="CN=Partner B,O=x\\,CN=Partner A";URI=spiffe://partner.example/b"#,
        },
        // O = `x\,CN=Partner A` with a literal backslash, and a CN with quotes.
        Case {
            cert: "backslash-o",
            dn: vec![
                (DnType::OrganizationName, r"x\,CN=Partner A"),
                (DnType::CommonName, r#"Partner "B""#),
            ],
            uri: "spiffe://partner.example/b",
            rfc4514: r#"CN=Partner \"B\",O=x\\\,CN=Partner A"#,
            golden: r#"Subject="CN=Partner \\\"B\\\",O=x\\\\\\,CN=Partner A";URI=spiffe://partner.example/b"#,
        },
    ];
    for c in &cases {
        let spec = ClientSpec {
            dn: c
                .dn
                .iter()
                .map(|(t, v)| (t.clone(), v.to_string()))
                .collect(),
            uris: vec![c.uri.to_string()],
            ..Default::default()
        };
        pki.add_client(c.cert, &spec);
    }
    let up = upstream::echo();
    let gw = common::start(&pki.dir, &common::http_config(&pki, up.addr, "", "", ""));

    // Golden values for plain partners (one with a DNS SAN).
    for (cert, rest) in [
        (
            "good",
            r#"Subject="CN=Partner A,O=Partner A Ltd";URI=spiffe://partner.example/a"#,
        ),
        (
            "partner-c",
            r#"Subject="CN=Partner C";URI=spiffe://partner.example/c;DNS=api.partner-c.example"#,
        ),
    ] {
        let before = up.requests().len();
        let r = client::get(gw.addr(), &client::config(&pki, &opts(cert)), "/").unwrap();
        assert_eq!(r.status, 200, "{}", r.text());
        let want = format!("Hash={};{rest}", sha256_hex(&pki.leaves[cert].der));
        assert_eq!(
            up.requests()[before].headers_named("x-forwarded-client-cert"),
            vec![want.as_str()],
            "{cert}"
        );
    }

    let mut wrong = Vec::new();
    for c in &cases {
        let before = up.requests().len();
        let r = match client::get(gw.addr(), &client::config(&pki, &opts(c.cert)), "/") {
            Ok(r) => r,
            Err(e) => {
                wrong.push(format!(
                    "{}: refused ({e}), but it holds no control characters",
                    c.cert
                ));
                continue;
            }
        };
        let seen = up.requests();
        if r.status != 200 || seen.len() != before + 1 {
            wrong.push(format!(
                "{}: {} and {} upstream request(s)",
                c.cert,
                r.status,
                seen.len() - before
            ));
            continue;
        }
        let headers = seen[before].headers_named("x-forwarded-client-cert");
        let [h] = headers.as_slice() else {
            wrong.push(format!(
                "{}: {} XFCC headers: {headers:?}",
                c.cert,
                headers.len()
            ));
            continue;
        };
        let mut problems = Vec::new();
        match parse_xfcc(h) {
            Err(e) => problems.push(format!("unparseable: {e}")),
            Ok(els) if els.len() != 1 => problems.push(format!("{} elements: {els:?}", els.len())),
            Ok(els) => {
                let el = &els[0];
                let hash = values(el, "Hash");
                if hash != [sha256_hex(&pki.leaves[c.cert].der).as_str()] {
                    problems.push(format!("Hash {hash:?}"));
                }
                let uris = values(el, "URI");
                if uris != [c.uri] {
                    problems.push(format!("URI {uris:?}, want exactly [{:?}]", c.uri));
                }
                let subjects = values(el, "Subject");
                if subjects != [c.rfc4514] {
                    problems.push(format!(
                        "Subject {subjects:?}, want exactly [{:?}]",
                        c.rfc4514
                    ));
                }
                if let [s] = subjects.as_slice() {
                    let want: Vec<(String, String)> =
                        c.dn.iter()
                            .rev()
                            .map(|(t, v)| {
                                let t = if *t == DnType::CommonName { "CN" } else { "O" };
                                (t.to_string(), v.to_string())
                            })
                            .collect();
                    match parse_rfc4514(s) {
                        Ok(got) if got == want => {}
                        got => problems.push(format!("Subject reads as {got:?}, want {want:?}")),
                    }
                }
                if !values(el, "DNS").is_empty() {
                    problems.push("a DNS value the certificate does not have".into());
                }
            }
        }
        let want = format!("Hash={};{}", sha256_hex(&pki.leaves[c.cert].der), c.golden);
        if *h != want {
            problems.push(format!(
                "header differs from the documented form:\n   got  {h}\n   want {want}"
            ));
        }
        if !problems.is_empty() {
            wrong.push(format!(
                "{}: XFCC {h:?}\n  {}",
                c.cert,
                problems.join("\n  ")
            ));
        }
    }
    assert!(wrong.is_empty(), "\n{}", wrong.join("\n"));
}

// ---------------------------------------------------------------------------

fn two_cn(first: &str, second: &str, uri: &str) -> ClientSpec {
    // rcgen keeps one value per DnType, so the second CN goes in by its OID.
    let mut s = ClientSpec::named(first).uri(uri);
    s.dn.push((DnType::CustomDnType(vec![2, 5, 4, 3]), second.to_string()));
    s
}

#[test]
fn a_cn_rule_admits_only_a_subject_with_exactly_one_cn_equal_to_it() {
    let mut pki = Pki::new();
    pki.add_client(
        "one-cn",
        &ClientSpec::named("Partner A").uri("spiffe://partner.example/one"),
    );
    pki.add_client(
        "two-cn",
        &two_cn("Partner A", "Partner B", "spiffe://partner.example/two"),
    );
    pki.add_client(
        "two-cn-rev",
        &two_cn("Partner B", "Partner A", "spiffe://partner.example/two-rev"),
    );
    pki.add_client(
        "two-cn-same",
        &two_cn(
            "Partner A",
            "Partner A",
            "spiffe://partner.example/two-same",
        ),
    );
    // The certificates really hold two CNs.
    for cert in ["two-cn", "two-cn-rev", "two-cn-same"] {
        let (_, x) = X509Certificate::from_der(&pki.leaves[cert].der).unwrap();
        assert_eq!(x.subject().iter_common_name().count(), 2, "{cert}");
    }
    let up = upstream::echo();
    let strict_port = common::free_port();
    let d = pki.dir.display();
    // `partners`: a route allow-list; `strict`: a listener allow-list.
    let tail = format!(
        "[[listener.route]]\npath_prefix = \"/orders\"\nallow = [\"cn:Partner A\"]\n\
         [[listener]]\nname = \"strict\"\nbind = \"127.0.0.1:{strict_port}\"\nmode = \"http\"\n\
         upstream = \"backend\"\nallow = [\"cn:Partner A\"]\n[listener.tls]\n\
         cert = \"{d}/server.crt\"\nkey = \"{d}/server.key\"\nclient_ca = \"{d}/ca.crt\"\n"
    );
    let gw = common::start(&pki.dir, &common::http_config(&pki, up.addr, "", "", &tail));
    let strict: std::net::SocketAddr = format!("127.0.0.1:{strict_port}").parse().unwrap();
    let status = |addr, cert: &str, path: &str| -> Result<u16, String> {
        client::get(addr, &client::config(&pki, &opts(cert)), path)
            .map(|r| r.status)
            .map_err(|e| e.to_string())
    };
    let mut wrong = Vec::new();
    for cert in ["one-cn", "good"] {
        for (what, addr, path) in [
            ("route", gw.addr(), "/orders/1"),
            ("listener", strict, "/x"),
        ] {
            match status(addr, cert, path) {
                Ok(200) => {}
                other => wrong.push(format!(
                    "{cert} ({what} allow-list): want 200, got {other:?}"
                )),
            }
        }
    }
    for cert in ["two-cn", "two-cn-rev", "two-cn-same"] {
        // The connection itself is fine where no cn: rule applies...
        match status(gw.addr(), cert, "/public") {
            Ok(200) => {}
            other => wrong.push(format!("{cert} on an open route: want 200, got {other:?}")),
        }
        // ...but no cn: rule matches it.
        for (what, addr, path) in [
            ("route", gw.addr(), "/orders/1"),
            ("listener", strict, "/x"),
        ] {
            let before = up.requests().len();
            let r = status(addr, cert, path);
            let reached = up.requests().len() - before;
            if !(r == Ok(403) || r.is_err()) || reached != 0 {
                wrong.push(format!(
                    "{cert} ({what} allow-list cn:Partner A): got {r:?}, upstream reached {reached} time(s)"
                ));
            }
        }
    }
    assert!(wrong.is_empty(), "\n{}", wrong.join("\n"));
}
