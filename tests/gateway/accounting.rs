//! Accounting that is true: the access log's JSON lines, byte counts of a
//! tcp session a reset cut short, a truncation without close_notify, and a
//! request the partner abandoned mid-body.

use crate::common::{self, client, pki::Pki, upstream};
use std::io::{Read, Write};
use std::net::TcpListener;
use std::time::{Duration, Instant};

fn with_access_log(pki: &Pki, text: &str) -> (common::Gateway, std::path::PathBuf) {
    let log = pki.dir.join(format!("access-{}.log", common::free_port()));
    let text = text.replace(
        "workers = 1",
        &format!(
            "workers = 1\n[access_log]\npath = \"{}\"\nformat = \"json\"",
            log.display()
        ),
    );
    (common::start(&pki.dir, &text), log)
}

/// Calls `f` every 50 ms until it says done (or 10 s passed); its last value.
fn poll<T>(mut f: impl FnMut() -> (bool, T)) -> T {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (done, v) = f();
        if done || Instant::now() > deadline {
            return v;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The access log's lines, once it holds `n` (it is flushed every 100 ms).
fn lines(path: &std::path::Path, n: usize) -> Vec<serde_json::Value> {
    poll(|| {
        let text = std::fs::read_to_string(path).unwrap_or_default();
        let v: Vec<serde_json::Value> = text
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        (v.len() >= n, v)
    })
}

#[test]
fn the_json_access_log_has_one_line_per_request_with_identity_tls_path_status_and_timings() {
    let pki = Pki::new();
    let up = upstream::echo();
    let (gw, log) = with_access_log(&pki, &common::http_config(&pki, up.addr, "", "", ""));
    let cfg = client::config(&pki, &client::Opts::default());
    let r = client::exchange(
        gw.addr(),
        &cfg,
        b"POST /%6frders/1 HTTP/1.1\r\nHost: localhost\r\nContent-Length: 5\r\n\r\nhello",
    )
    .unwrap();
    assert_eq!(r.status, 200);
    let v = &lines(&log, 1)[0];
    assert_eq!(v["listener"], "partners");
    assert_eq!(v["identity"], "spiffe://partner.example/a");
    assert_eq!(v["tls_version"], "1.3");
    assert_eq!(v["resumed"], false);
    assert!(v["handshake_us"].as_u64() > Some(0));
    assert_eq!(
        (v["method"].as_str(), v["path"].as_str()),
        (Some("POST"), Some("/orders/1")),
        "the canonical path"
    );
    assert_eq!(
        (v["status"].as_u64(), v["upstream"].as_str()),
        (Some(200), Some("backend"))
    );
    assert_eq!(v["bytes_in"], 5);
    assert!(v["bytes_out"].as_u64() > Some(r.body.len() as u64));
    assert!(v["duration_us"].as_u64() > Some(0));
    assert_eq!(v["outcome"], "ok");
    assert!(v["time"].as_str().is_some_and(|t| t.ends_with('Z')));
}

#[test]
fn a_tcp_session_a_reset_cuts_short_reports_the_bytes_it_moved_and_is_not_clean() {
    let pki = Pki::new();
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap();
    std::thread::spawn(move || {
        let (mut s, _) = l.accept().unwrap();
        let mut got = vec![0u8; 5000];
        s.read_exact(&mut got).unwrap();
        s.write_all(&[7u8; 3000]).unwrap();
        std::thread::sleep(Duration::from_millis(200));
        // A reset, not a close: SO_LINGER 0.
        socket2::SockRef::from(&s)
            .set_linger(Some(Duration::ZERO))
            .unwrap();
    });
    let text =
        common::http_config(&pki, addr, "", "", "").replace("mode = \"http\"", "mode = \"tcp\"");
    let (gw, log) = with_access_log(&pki, &text);
    let mut s = client::partner(&pki, gw.addr());
    s.write_all(&[1u8; 5000]).unwrap();
    let mut back = vec![0u8; 3000];
    s.read_exact(&mut back).unwrap();
    let mut rest = Vec::new();
    let _ = s.read_to_end(&mut rest);
    let v = &lines(&log, 1)[0];
    assert_eq!(
        (v["bytes_in"].as_u64(), v["bytes_out"].as_u64()),
        (Some(5000), Some(3000)),
        "{v}"
    );
    assert_ne!(v["outcome"], "ok");
    assert_eq!(v["status"], 0);
    let _ = gw;
}

#[test]
fn a_tcp_session_the_partner_ends_without_close_notify_is_not_clean() {
    let pki = Pki::new();
    let (addr, _got) = upstream::tcp_sink_then_source(10);
    let text =
        common::http_config(&pki, addr, "", "", "").replace("mode = \"http\"", "mode = \"tcp\"");
    let (gw, log) = with_access_log(&pki, &text);
    let mut s = client::partner(&pki, gw.addr());
    s.write_all(b"hello").unwrap();
    s.flush().unwrap();
    // TCP FIN without close_notify: a truncation the partner may not have meant.
    s.sock.shutdown(std::net::Shutdown::Write).unwrap();
    let mut rest = Vec::new();
    let _ = s.read_to_end(&mut rest);
    let v = &lines(&log, 1)[0];
    assert_eq!(v["bytes_in"], 5);
    assert_eq!(v["outcome"], "peer_closed", "{v}");
    let _ = gw;
}

#[test]
fn a_request_the_partner_abandons_mid_body_is_counted_and_logged_as_499() {
    let pki = Pki::new();
    let up = upstream::echo();
    let (gw, log) = with_access_log(&pki, &common::http_config(&pki, up.addr, "", "", ""));
    let mut s = client::partner(&pki, gw.addr());
    // Longer than request_buffer_bytes: streamed, so the upstream sees it start.
    write!(
        s,
        "POST /upload HTTP/1.1\r\nHost: localhost\r\nContent-Length: 1000000\r\n\r\n"
    )
    .unwrap();
    s.write_all(&[b'x'; 100_000]).unwrap();
    s.flush().unwrap();
    std::thread::sleep(Duration::from_millis(300));
    drop(s);
    assert_eq!(gw.wait_stat("partners", "/requests/499", 1), 1);
    let v = &lines(&log, 1)[0];
    assert_eq!(
        (v["status"].as_u64(), v["outcome"].as_str()),
        (Some(499), Some("peer_closed"))
    );
    assert_eq!(v["path"], "/upload");
}

/// The process log's text, once `needle` shows up in it (lines are buffered up to 100 ms).
fn wait_logs(gw: &common::Gateway, needle: &str) -> String {
    poll(|| {
        let text = gw.logs();
        (text.contains(needle), text)
    })
}

#[test]
fn without_an_access_log_file_request_lines_reach_the_process_log_in_its_format() {
    let pki = Pki::new();
    let up = upstream::echo();
    let cfg = client::config(&pki, &client::Opts::default());
    let text = common::http_config(&pki, up.addr, "", "", "");
    let gw = common::start(&pki.dir, &text);
    let r = client::exchange(
        gw.addr(),
        &cfg,
        b"GET /t%65xt HTTP/1.1\r\nHost: localhost\r\n\r\n",
    )
    .unwrap();
    assert_eq!(r.status, 200);
    let logs = wait_logs(&gw, "path=\"/text\"");
    let line = logs
        .lines()
        .find(|l| l.contains("path=\"/text\""))
        .unwrap_or_else(|| panic!("no request line in:\n{logs}"));
    assert!(
        line.contains("identity=\"spiffe://partner.example/a\"") && line.contains("status=200"),
        "{line}"
    );

    let json = text.replace("workers = 1", "workers = 1\nlog_format = \"json\"");
    let gw = common::start(&pki.dir, &json);
    let r = client::exchange(
        gw.addr(),
        &cfg,
        b"GET /js%6fn HTTP/1.1\r\nHost: localhost\r\n\r\n",
    )
    .unwrap();
    assert_eq!(r.status, 200);
    let logs = wait_logs(&gw, "\"path\":\"/json\"");
    let v: serde_json::Value = logs
        .lines()
        .find(|l| l.contains("\"path\":\"/json\""))
        .and_then(|l| serde_json::from_str(l).ok())
        .unwrap_or_else(|| panic!("no JSON request line in:\n{logs}"));
    assert_eq!(
        (v["status"].as_u64(), v["outcome"].as_str()),
        (Some(200), Some("ok"))
    );

    let off = text.replace("workers = 1", "workers = 1\nlog_requests = false");
    let gw = common::start(&pki.dir, &off);
    let r = client::exchange(
        gw.addr(),
        &cfg,
        b"GET /quiet HTTP/1.1\r\nHost: localhost\r\n\r\n",
    )
    .unwrap();
    assert_eq!(r.status, 200);
    std::thread::sleep(Duration::from_millis(300));
    assert!(
        !gw.logs().contains("/quiet"),
        "log_requests = false logs no request"
    );
}
