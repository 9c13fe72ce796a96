//! Running under systemd: the shipped unit file verifies, and the gateway
//! reports READY / RELOADING / STOPPING on `$NOTIFY_SOCKET`.

use crate::common::{self, pki::Pki, upstream};
use std::os::unix::net::UnixDatagram;
use std::process::Command;
use std::time::Duration;

#[test]
fn the_shipped_unit_file_passes_systemd_analyze_verify() {
    assert!(
        common::have("systemd-analyze"),
        "systemd-analyze is needed (apt-get install systemd)"
    );
    let dir = tempfile::tempdir().unwrap();
    let unit = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tuning/mtlsgate.service"
    ))
    .unwrap()
    // verify checks that the binary exists: point it at the one just built.
    .replace("/usr/local/bin/mtlsgate", env!("CARGO_BIN_EXE_mtlsgate"));
    let path = dir.path().join("mtlsgate.service");
    std::fs::write(&path, unit).unwrap();
    let out = Command::new("systemd-analyze")
        .arg("verify")
        .arg(&path)
        .output()
        .unwrap();
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{said}");
    // Only complaints about this unit count (the host's own units may warn).
    assert!(!said.contains("mtlsgate.service"), "{said}");
}

/// The next notice on `sock`, within a few seconds.
fn notice(sock: &UnixDatagram) -> String {
    let mut buf = [0u8; 4096];
    let n = sock.recv(&mut buf).expect("a notice from the gateway");
    String::from_utf8_lossy(&buf[..n]).into_owned()
}

#[test]
fn the_gateway_tells_systemd_when_it_is_ready_reloading_and_stopping() {
    let pki = Pki::new();
    let up = upstream::echo();
    let sock_path = pki.dir.join("notify.sock");
    let sock = UnixDatagram::bind(&sock_path).unwrap();
    sock.set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let gw = common::start_env(
        &pki.dir,
        &common::http_config(&pki, up.addr, "", "", ""),
        common::free_port(),
        common::free_port(),
        &[("NOTIFY_SOCKET", sock_path.to_str().unwrap())],
    );
    let first = notice(&sock);
    assert!(first.lines().any(|l| l == "READY=1"), "{first:?}");
    gw.sighup();
    let reloading = notice(&sock);
    assert!(
        reloading.lines().any(|l| l == "RELOADING=1"),
        "{reloading:?}"
    );
    assert!(
        reloading.lines().any(|l| l.starts_with("MONOTONIC_USEC=")),
        "{reloading:?}"
    );
    let again = notice(&sock);
    assert!(again.lines().any(|l| l == "READY=1"), "{again:?}");
    let st = gw.stop();
    assert!(st.success(), "{st}");
    let stopping = notice(&sock);
    assert!(stopping.lines().any(|l| l == "STOPPING=1"), "{stopping:?}");
}
