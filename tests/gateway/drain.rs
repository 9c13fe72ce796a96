//! Graceful drain: SIGTERM turns `/ready` to 503 at once, lets in-flight
//! requests finish, and closes connections with no request in flight at once.

use crate::common::{self, client, pki::Pki, upstream};
use std::io::Write;
use std::process::Command;
use std::time::{Duration, Instant};

#[test]
fn sigterm_finishes_in_flight_requests_closes_idle_ones_at_once_and_turns_ready_to_503() {
    let pki = Pki::new();
    let up = upstream::spawn(|r| {
        if r.path == "/slow" {
            std::thread::sleep(Duration::from_millis(1500));
        }
        upstream::ok("done")
    });
    // A drain deadline far above what the test may take: exiting early is the point.
    let text = common::http_config(&pki, up.addr, "", "", "")
        .replace("workers = 1", "workers = 1\ndrain_timeout = \"60s\"");
    let mut gw = common::start(&pki.dir, &text);
    let cfg = client::config(&pki, &Default::default());
    // Handshaken, no request yet; and one with half a request head.
    let _quiet = client::connect(gw.addr(), &cfg, "localhost").unwrap();
    let mut half = client::connect(gw.addr(), &cfg, "localhost").unwrap();
    half.write_all(b"GET / HTTP/1.1\r\nHost: a\r\n").unwrap();
    // Fifty requests in flight when the signal comes.
    let slow: Vec<_> = (0..50)
        .map(|_| {
            let cfg = cfg.clone();
            let addr = gw.addr();
            std::thread::spawn(move || client::get(addr, &cfg, "/slow").map(|r| r.status))
        })
        .collect();
    // Let them reach the upstream (it holds each for 1.5 s).
    let deadline = Instant::now() + Duration::from_secs(5);
    while up.requests().iter().filter(|r| r.path == "/slow").count() < 50 {
        assert!(
            Instant::now() < deadline,
            "the 50 slow requests did not all reach the upstream"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(common::admin_get(gw.admin, "/ready").unwrap().0, 200);
    let signalled = Instant::now();
    let ok = Command::new("kill")
        .arg("-TERM")
        .arg(gw.child.id().to_string())
        .status()
        .unwrap()
        .success();
    assert!(ok);
    std::thread::sleep(Duration::from_millis(100));
    assert_eq!(
        common::admin_get(gw.admin, "/ready").map(|r| r.0).ok(),
        Some(503),
        "/ready during the drain"
    );
    for t in slow {
        assert_eq!(t.join().unwrap().ok(), Some(200), "an in-flight request");
    }
    let deadline = Instant::now() + Duration::from_secs(20);
    let status = loop {
        if let Some(st) = gw.child.try_wait().unwrap() {
            break st;
        }
        assert!(Instant::now() < deadline, "the gateway did not exit");
        std::thread::sleep(Duration::from_millis(20));
    };
    assert!(status.success(), "{status}");
    // The idle and half-head connections did not hold the exit to drain_timeout.
    assert!(
        signalled.elapsed() < Duration::from_secs(30),
        "exit took {:?}",
        signalled.elapsed()
    );
}
