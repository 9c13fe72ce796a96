//! `mtlsgate tune` on a temporary --root tree, profiles, and start-up checks.

use crate::common::{self, pki::Pki};
use std::path::Path;
use std::process::{Command, Output};

fn mtlsgate(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_mtlsgate"))
        .args(args)
        .output()
        .unwrap()
}

fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// A fake /proc/sys holding `values`.
fn tree(values: &[(&str, &str)]) -> tempfile::TempDir {
    let t = tempfile::tempdir().unwrap();
    for (k, v) in values {
        let p = t.path().join("proc/sys").join(k.replace('.', "/"));
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, format!("{v}\n")).unwrap();
    }
    t
}

fn read(root: &Path, k: &str) -> String {
    std::fs::read_to_string(root.join("proc/sys").join(k.replace('.', "/")))
        .unwrap()
        .trim()
        .to_string()
}

const STORM: &[(&str, &str)] = &[
    ("net.core.somaxconn", "65535"),
    ("net.ipv4.tcp_max_syn_backlog", "65535"),
    ("net.ipv4.tcp_syncookies", "1"),
    ("net.core.netdev_max_backlog", "16384"),
    ("net.ipv4.ip_local_port_range", "1024\t  65535"),
    ("net.ipv4.tcp_tw_reuse", "1"),
    ("net.ipv4.tcp_fin_timeout", "15"),
    ("net.ipv4.tcp_migrate_req", "1"),
];

#[test]
fn tune_list_names_every_profile_and_show_prints_settings_and_knobs() {
    let out = text(&mtlsgate(&["tune", "list"]));
    for p in ["default", "handshake-storm", "throughput", "low-latency"] {
        assert!(out.contains(p), "{out}");
    }
    let show = text(&mtlsgate(&["tune", "show", "handshake-storm"]));
    assert!(
        show.contains("net.core.somaxconn = 65535") && show.contains("backlog: Some("),
        "{show}"
    );
}

#[test]
fn verify_passes_when_every_key_matches_comparing_multi_value_keys_field_by_field() {
    let t = tree(STORM);
    let r = t.path().to_str().unwrap();
    let o = mtlsgate(&["tune", "--root", r, "verify", "handshake-storm"]);
    assert!(o.status.success(), "{}", text(&o));
    let d = text(&mtlsgate(&["tune", "--root", r, "diff", "handshake-storm"]));
    assert!(d.lines().all(|l| l.ends_with("ok")), "{d}");
}

#[test]
fn verify_fails_on_a_differing_or_missing_key_and_diff_says_which() {
    let mut v = STORM.to_vec();
    v[0] = ("net.core.somaxconn", "128");
    v.retain(|(k, _)| *k != "net.ipv4.tcp_fin_timeout"); // missing
    let t = tree(&v);
    let r = t.path().to_str().unwrap();
    assert!(
        !mtlsgate(&["tune", "--root", r, "verify", "handshake-storm"])
            .status
            .success()
    );
    let d = text(&mtlsgate(&["tune", "--root", r, "diff", "handshake-storm"]));
    assert!(
        d.lines().any(|l| l.starts_with("net.core.somaxconn")
            && l.contains("current 128")
            && l.ends_with("differs")),
        "{d}"
    );
    assert!(
        d.lines()
            .any(|l| l.starts_with("net.ipv4.tcp_fin_timeout") && l.ends_with("missing")),
        "{d}"
    );
}

#[test]
fn apply_changes_the_tree_dry_run_does_not_persist_writes_sysctl_d_and_revert_restores() {
    let t = tree(&[
        ("net.core.somaxconn", "128"),
        ("net.ipv4.tcp_max_syn_backlog", "512"),
        ("net.ipv4.tcp_syncookies", "0"),
        ("net.ipv4.tcp_migrate_req", "0"),
    ]);
    let r = t.path().to_str().unwrap();
    let dry = mtlsgate(&["tune", "--root", r, "apply", "default", "--dry-run"]);
    assert!(
        text(&dry).contains("net.core.somaxconn: 128 -> 4096 (dry run)"),
        "{}",
        text(&dry)
    );
    assert_eq!(read(t.path(), "net.core.somaxconn"), "128");
    let o = mtlsgate(&["tune", "--root", r, "apply", "default", "--persist"]);
    assert!(o.status.success(), "{}", text(&o));
    assert_eq!(read(t.path(), "net.core.somaxconn"), "4096");
    assert_eq!(read(t.path(), "net.ipv4.tcp_syncookies"), "1");
    let persisted =
        std::fs::read_to_string(t.path().join("etc/sysctl.d/90-mtlsgate-default.conf")).unwrap();
    assert!(persisted.contains("net.core.somaxconn = 4096"));
    assert!(mtlsgate(&["tune", "--root", r, "verify", "default"])
        .status
        .success());
    // A second apply must not overwrite the saved originals.
    mtlsgate(&["tune", "--root", r, "apply", "handshake-storm"]);
    let o = mtlsgate(&["tune", "--root", r, "revert"]);
    assert!(o.status.success(), "{}", text(&o));
    assert_eq!(read(t.path(), "net.core.somaxconn"), "128");
    assert_eq!(read(t.path(), "net.ipv4.tcp_max_syn_backlog"), "512");
    assert_eq!(read(t.path(), "net.ipv4.tcp_syncookies"), "0");
}

#[test]
fn apply_reports_a_key_missing_on_this_kernel_and_exits_non_zero() {
    let t = tree(&[("net.core.somaxconn", "128")]);
    let o = mtlsgate(&[
        "tune",
        "--root",
        t.path().to_str().unwrap(),
        "apply",
        "default",
    ]);
    assert!(!o.status.success());
    assert!(
        text(&o).contains("net.ipv4.tcp_syncookies: missing on this kernel"),
        "{}",
        text(&o)
    );
    assert_eq!(
        read(t.path(), "net.core.somaxconn"),
        "4096",
        "the keys that exist are still set"
    );
}

#[test]
fn a_bad_profile_line_is_reported_with_its_file_and_line() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("odd.conf"),
        "# fine\nnet.core.somaxconn = 1024\nnet.core.rmem_max = big\n",
    )
    .unwrap();
    let o = mtlsgate(&[
        "tune",
        "--profile-dir",
        dir.path().to_str().unwrap(),
        "show",
        "odd",
    ]);
    assert!(!o.status.success());
    assert!(text(&o).contains("odd.conf:3:"), "{}", text(&o));
}

#[test]
fn every_shipped_profile_is_accepted_by_sysctl_p() {
    assert!(
        common::have("sysctl"),
        "sysctl is required (apt-get install procps)"
    );
    for p in ["default", "handshake-storm", "throughput", "low-latency"] {
        let f = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tuning")
            .join(format!("{p}.conf"));
        let o = Command::new("sysctl")
            .arg("--dry-run")
            .arg("-p")
            .arg(&f)
            .output()
            .unwrap();
        assert!(o.status.success(), "{p}: {}", text(&o));
    }
}

fn check_with(pki: &Pki, extra_listener: &str, args: &[&str]) -> String {
    let cfg = pki.dir.join("tune.toml");
    let t = common::http_config(pki, "127.0.0.1:9".parse().unwrap(), extra_listener, "", "");
    std::fs::write(
        &cfg,
        t.replace("{port}", "18447").replace("{admin}", "19447"),
    )
    .unwrap();
    let mut a = vec!["check", "--config", cfg.to_str().unwrap()];
    a.extend_from_slice(args);
    let o = mtlsgate(&a);
    assert!(o.status.success(), "{}", text(&o));
    text(&o)
}

#[test]
fn check_warns_with_the_fix_when_somaxconn_is_below_the_backlog() {
    let pki = Pki::new();
    let t = tree(&[("net.core.somaxconn", "128")]);
    let out = check_with(&pki, "", &["--root", t.path().to_str().unwrap()]);
    assert!(
        out.contains("net.core.somaxconn is 128")
            && out.contains("sysctl -w net.core.somaxconn=4096"),
        "{out}"
    );
    let ok = tree(&[("net.core.somaxconn", "65535")]);
    assert!(!check_with(&pki, "", &["--root", ok.path().to_str().unwrap()]).contains("somaxconn"));
}

#[test]
fn a_profile_supplies_gateway_knobs_and_an_explicit_config_key_wins() {
    let pki = Pki::new();
    let out = check_with(&pki, "", &["--profile", "handshake-storm"]);
    assert!(
        out.contains("backlog=65535")
            && out.contains("max_connections=100000")
            && out.contains("tickets=1"),
        "{out}"
    );
    let out = check_with(&pki, "backlog = 100", &["--profile", "handshake-storm"]);
    assert!(
        out.contains("backlog=100 ") && out.contains("max_connections=100000"),
        "{out}"
    );
    let plain = check_with(&pki, "", &[]);
    assert!(plain.contains("backlog=4096"), "{plain}");
}
