//! TLS at the trust boundary: the alert a refused client gets even while it
//! is still sending, and revocation that holds across reloads in a row.

use crate::common::{self, client, pki::Pki, upstream};
use crate::trust_identity::{opts, tls_error};
use mtlsgate::demo::pki::ClientSpec;
use rustls::pki_types::ServerName;
use rustls::{AlertDescription, ClientConnection};
use std::io::{self, Read, Write};
use std::net::TcpStream;
use std::process::Command;
use std::time::{Duration, Instant};

/// What a partner that keeps sending after its flight sees from a refused handshake
/// (fields are read through `Debug`, in the failure message).
#[derive(Debug)]
#[allow(dead_code)]
enum Seen {
    Alert(AlertDescription),
    OtherTls(rustls::Error),
    Io(&'static str, io::Error),
    EofWithoutAlert,
}

/// A TLS 1.3 client with `cert` that queues application data before the
/// handshake (so it leaves with its Certificate/Finished flight, in the same
/// writes: the server has unread bytes when it refuses) and keeps sending
/// after it; then reads what the server said.
fn send_through_refusal(pki: &Pki, addr: std::net::SocketAddr, cert: &str) -> Seen {
    let cfg = client::config(
        pki,
        &client::Opts {
            cert: Some(cert),
            tls13_only: true,
            ..Default::default()
        },
    );
    let mut sock = TcpStream::connect(addr).unwrap();
    sock.set_nodelay(true).unwrap();
    sock.set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    sock.set_write_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let mut conn = ClientConnection::new(cfg, ServerName::try_from("localhost").unwrap()).unwrap();
    let filler = b"GET /filler HTTP/1.1\r\nHost: localhost\r\n\r\n".repeat(400); // ~16 KiB
    for _ in 0..3 {
        conn.writer().write_all(&filler).unwrap();
    }
    while conn.is_handshaking() {
        if let Err(e) = conn.complete_io(&mut sock) {
            return match tls_error(&e) {
                Some(rustls::Error::AlertReceived(a)) => Seen::Alert(*a),
                Some(t) => Seen::OtherTls(t.clone()),
                None => Seen::Io("handshake", e),
            };
        }
    }
    // The server is now verifying (and refusing) the certificate: keep sending,
    // a record every 10 ms for ~200 ms (well inside the 2 s lingering close), so
    // the client is still writing when a server that closes at once resets it.
    for _ in 0..20 {
        std::thread::sleep(Duration::from_millis(10));
        conn.writer().write_all(&filler).unwrap();
        while conn.wants_write() {
            if let Err(e) = conn.write_tls(&mut sock) {
                return Seen::Io("write", e);
            }
        }
    }
    let deadline = Instant::now() + Duration::from_secs(20);
    while Instant::now() < deadline {
        match conn.read_tls(&mut sock) {
            Ok(0) => return Seen::EofWithoutAlert,
            Ok(_) => match conn.process_new_packets() {
                Err(rustls::Error::AlertReceived(a)) => return Seen::Alert(a),
                Err(e) => return Seen::OtherTls(e),
                Ok(st) => {
                    if st.peer_has_closed() {
                        return Seen::EofWithoutAlert;
                    }
                    let n = st.plaintext_bytes_to_read();
                    let mut sink = vec![0u8; n];
                    let _ = conn.reader().read(&mut sink);
                }
            },
            Err(e) => return Seen::Io("read", e),
        }
    }
    Seen::Io("read", io::ErrorKind::TimedOut.into())
}

#[test]
fn a_refused_client_that_keeps_sending_gets_the_tls_alert_not_a_tcp_reset() {
    let pki = Pki::new();
    let up = upstream::echo();
    let gw = common::start(&pki.dir, &common::http_config(&pki, up.addr, "", "", ""));
    const TRIES: u64 = 5;
    let outcomes: Vec<Seen> = (0..TRIES)
        .map(|_| send_through_refusal(&pki, gw.addr(), "foreign"))
        .collect();
    assert!(
        outcomes.iter().all(|o| matches!(o, Seen::Alert(_))),
        "every try must end with the server's alert (ECONNRESET/EPIPE is the lost-alert defect): {outcomes:#?}"
    );
    assert_eq!(
        gw.wait_stat("partners", "/failures/unknown_ca", TRIES),
        TRIES,
        "{}",
        serde_json::to_string_pretty(&gw.stats()).unwrap()
    );
    assert!(up.requests().is_empty());
    // openssl s_client, a client that sends a message at a time, sees the alert too.
    if common::have("openssl") {
        let out = Command::new("sh")
            .arg("-c")
            .arg(format!(
                "(printf 'GET / HTTP/1.1\\r\\nHost: localhost\\r\\n\\r\\n'; sleep 1) | timeout 20 openssl s_client -tls1_3 -connect 127.0.0.1:{} -servername localhost -CAfile {} -cert {} -key {} 2>&1",
                gw.port,
                pki.path("ca.crt"),
                pki.path("foreign.crt"),
                pki.path("foreign.key")
            ))
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(
            text.contains("alert") && !text.contains("errno=104"),
            "openssl did not report the server's alert:\n{text}"
        );
    }
}

// ---------------------------------------------------------------------------

fn reloads(gw: &common::Gateway) -> u64 {
    gw.stats()["ticket_keys"]["reloads"].as_u64().unwrap_or(0)
}

/// Waits until no connection is open and no reload has happened for 1.5 s
/// (the CRL file watch polls once a second); returns the reload count.
fn settle(gw: &common::Gateway) -> u64 {
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut last = (reloads(gw), Instant::now());
    loop {
        assert!(Instant::now() < deadline, "the gateway did not settle");
        std::thread::sleep(Duration::from_millis(100));
        let n = reloads(gw);
        if n != last.0 {
            last = (n, Instant::now());
        } else if last.1.elapsed() > Duration::from_millis(1500)
            && gw.stat("partners", "/connections/active") == 0
        {
            return n;
        }
    }
}

/// Rewrites the CRL (atomically: a reload never reads half a file) to revoke
/// `names`, sends SIGHUP and waits until a reload that read it is done.
fn revoke_and_sighup(gw: &common::Gateway, pki: &Pki, names: &[&str]) {
    settle(gw);
    revoke_and_reload(gw, pki, names);
}

/// The CRL rewrite and SIGHUP of `revoke_and_sighup`, with connections open.
fn revoke_and_reload(gw: &common::Gateway, pki: &Pki, names: &[&str]) {
    let before = reloads(gw);
    let serials: Vec<u64> = names.iter().map(|n| pki.leaves[n].serial).collect();
    let crl = pki.ca.crl(&serials, time::Duration::days(7)).unwrap();
    let tmp = pki.dir.join("ca.crl.new");
    std::fs::write(&tmp, crl).unwrap();
    std::fs::rename(&tmp, pki.dir.join("ca.crl")).unwrap();
    gw.sighup();
    let deadline = Instant::now() + Duration::from_secs(10);
    while reloads(gw) <= before {
        assert!(Instant::now() < deadline, "SIGHUP did not reload");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Waits (bounded) until a full handshake of `cert` is refused: the worker has
/// applied the reload that revoked it. Only refused attempts follow the first
/// try, so the probe leaves no verified identity behind under the new state.
fn wait_refused(gw: &common::Gateway, pki: &Pki, cert: &str) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let fresh = client::config(pki, &opts(cert));
        if client::get(gw.addr(), &fresh, "/probe").is_err() {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{cert} still connects after its revocation was reloaded"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn request(s: &mut client::Tls) -> io::Result<client::Response> {
    s.write_all(b"GET /after HTTP/1.1\r\nHost: localhost\r\n\r\n")?;
    client::read_response(s, &mut Vec::new(), false)
}

#[test]
fn a_partner_revoked_on_the_second_of_two_reloads_in_a_row_cannot_resume_or_connect() {
    let mut pki = Pki::new();
    pki.add_client(
        "probe-1",
        &ClientSpec::named("Probe 1").uri("spiffe://partner.example/probe-1"),
    );
    pki.add_client(
        "probe-2",
        &ClientSpec::named("Probe 2").uri("spiffe://partner.example/probe-2"),
    );
    let up = upstream::echo();
    let gw = common::start(&pki.dir, &common::http_config(&pki, up.addr, "", "", ""));
    let cfg = client::config(&pki, &opts("good"));
    // Two visits before the reloads: a full handshake, then a resumed one; both leave tickets.
    for want_resumed in [false, true] {
        let mut s = client::connect(gw.addr(), &cfg, "localhost").unwrap();
        assert_eq!(client::resumed(&s), want_resumed);
        assert_eq!(request(&mut s).unwrap().status, 200);
        s.conn.send_close_notify();
        let _ = s.flush();
    }
    let served = up.requests().len();
    assert_eq!(served, 2);

    // Reload 1: someone else is revoked.
    revoke_and_sighup(&gw, &pki, &["revoked", "probe-1"]);
    wait_refused(&gw, &pki, "probe-1");
    // Reload 2, right after (no partner connected in between): now "good" is revoked.
    revoke_and_sighup(&gw, &pki, &["revoked", "probe-1", "probe-2", "good"]);
    std::thread::sleep(Duration::from_millis(500)); // the worker applies it right after
    wait_refused(&gw, &pki, "probe-2");
    let revoked_before = gw.stat("partners", "/failures/revoked");

    // The session from before both reloads.
    let resumed = client::connect(gw.addr(), &cfg, "localhost").and_then(|mut s| {
        assert!(
            client::resumed(&s),
            "the client should have resumed with its ticket from before the reloads"
        );
        request(&mut s)
    });
    assert!(
        resumed.is_err(),
        "a partner revoked on the second reload resumed its session: {resumed:?}"
    );
    assert!(
        gw.wait_stat("partners", "/failures/revoked", revoked_before + 1) > revoked_before,
        "the refused resumption is counted as revoked: {}",
        serde_json::to_string_pretty(&gw.stats()).unwrap()
    );
    let fresh = client::config(&pki, &opts("good"));
    let full = client::get(gw.addr(), &fresh, "/after");
    assert!(
        full.is_err(),
        "a full handshake must be refused too: {full:?}"
    );
    assert_eq!(
        up.requests().len(),
        served,
        "nothing of the revoked partner's reached the upstream"
    );
}

#[test]
fn with_close_revoked_a_reload_that_revokes_a_partner_closes_its_open_connection() {
    let pki = Pki::new();
    let up = upstream::echo();
    let gw = common::start(
        &pki.dir,
        &common::http_config(&pki, up.addr, "", "close_revoked = true", ""),
    );
    let mut revoked = client::partner(&pki, gw.addr());
    let mut kept = client::connect(
        gw.addr(),
        &client::config(&pki, &opts("partner-c")),
        "localhost",
    )
    .unwrap();
    let get = |s: &mut client::Tls| {
        s.write_all(b"GET /x HTTP/1.1\r\nHost: localhost\r\n\r\n")?;
        client::read_response(s, &mut Vec::new(), false).map(|r| r.status)
    };
    assert_eq!(get(&mut revoked).unwrap(), 200);
    assert_eq!(get(&mut kept).unwrap(), 200);
    revoke_and_reload(&gw, &pki, &["good"]);
    assert_eq!(gw.wait_stat("partners", "/closed_revoked", 1), 1);
    assert!(
        get(&mut revoked).is_err(),
        "the revoked partner's connection still serves"
    );
    assert_eq!(
        get(&mut kept).unwrap(),
        200,
        "another partner's connection was closed"
    );
}
