//! tcp mode: a verified byte pipe with half-close, and listener policy.

use crate::common::{self, client, pki::Pki, upstream};
use std::io::{Read, Write};

fn tcp_config(pki: &Pki, up: std::net::SocketAddr, extra: &str) -> String {
    common::http_config(pki, up, extra, "", "").replace("mode = \"http\"", "mode = \"tcp\"")
}

#[test]
fn tcp_mode_moves_32_mib_each_way_intact_with_half_close() {
    const N: usize = 32 * 1024 * 1024;
    let pki = Pki::new();
    let (addr, got) = upstream::tcp_sink_then_source(N);
    let gw = common::start(&pki.dir, &tcp_config(&pki, addr, ""));
    let mut s = client::partner(&pki, gw.addr());
    let data = upstream::pattern(N);
    s.write_all(&data).unwrap();
    // Half-close: the upstream sees end of stream and only then answers.
    s.conn.send_close_notify();
    s.flush().unwrap();
    s.sock.shutdown(std::net::Shutdown::Write).unwrap();
    let (n, sha) = got
        .recv_timeout(std::time::Duration::from_secs(60))
        .unwrap();
    assert_eq!(n, N);
    assert_eq!(
        sha,
        aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, &data).as_ref()
    );
    let mut back = Vec::with_capacity(N);
    match s.read_to_end(&mut back) {
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => {}
        Err(e) => panic!("{e}"),
    }
    assert_eq!(back.len(), N);
    assert!(back == data, "returned bytes differ");
}

#[test]
fn tcp_mode_closes_a_connection_the_listener_allow_list_denies() {
    let pki = Pki::new();
    let (addr, got) = upstream::tcp_sink_then_source(10);
    let gw = common::start(
        &pki.dir,
        &tcp_config(&pki, addr, "allow = [\"cn:Partner C\"]"),
    );
    let mut s = client::partner(&pki, gw.addr());
    let _ = s.write_all(b"hello");
    let mut b = Vec::new();
    let _ = s.read_to_end(&mut b);
    assert!(b.is_empty());
    assert_eq!(gw.wait_stat("partners", "/policy_denied", 1), 1);
    assert!(got.try_recv().is_err(), "nothing may reach the upstream");
}
