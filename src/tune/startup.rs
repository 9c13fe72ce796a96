//! Start-up checks of the host against the config (somaxconn, open-file limit,
//! tcp_migrate_req, io_uring), each with the exact fix; and raising RLIMIT_NOFILE.

use super::Tree;
use crate::config::Config;

/// Raises the soft open-file limit to `want` (or the hard limit), never above
/// the hard limit. Returns the soft limit in force afterwards.
pub fn raise_nofile(want: Option<u64>) -> u64 {
    let mut r = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit read and write the struct we own.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut r) != 0 {
            return 0;
        }
        let target = want.map_or(r.rlim_max, |w| w.min(r.rlim_max));
        if target > r.rlim_cur {
            let new = libc::rlimit {
                rlim_cur: target,
                rlim_max: r.rlim_max,
            };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &new) == 0 {
                r.rlim_cur = target;
            }
        }
    }
    r.rlim_cur
}

/// Warnings about what would hurt this config on this host, with fixes.
pub fn checks(tree: &Tree, cfg: &Config, nofile: u64) -> Vec<String> {
    let mut w = Vec::new();
    let read = |k: &str| tree.read(k).and_then(|v| v.parse::<u64>().ok());
    if let Some(somax) = read("net.core.somaxconn") {
        for l in &cfg.listeners {
            if u64::from(l.backlog) > somax {
                w.push(format!(
                    "listener {:?} asks for a backlog of {} but net.core.somaxconn is {somax}, so the kernel caps it: \
                     run `sysctl -w net.core.somaxconn={}` (or `mtlsgate tune apply handshake-storm`)",
                    l.name, l.backlog, l.backlog
                ));
            }
        }
    }
    let per_worker: u64 = cfg.listeners.iter().map(|l| l.max_connections as u64).sum();
    // Each partner connection may hold an upstream one, plus listeners and the ring.
    let need = per_worker * cfg.workers as u64 * 2 + 64;
    if nofile > 0 && nofile < need {
        w.push(format!(
            "the open-file limit is {nofile} but max_connections x workers needs up to {need} descriptors: \
             raise the hard limit (LimitNOFILE={need} in the systemd unit, or `ulimit -Hn {need}` before starting)"
        ));
    }
    if read("net.ipv4.tcp_migrate_req") == Some(0) && !cfg.listeners.is_empty() {
        w.push(
            "net.ipv4.tcp_migrate_req is 0: connections still queued on a listening socket that closes              (an upgrade, a listener a reload removed) are reset instead of handed to the socket that              takes over; run `sysctl -w net.ipv4.tcp_migrate_req=1` (every tuning profile sets it)"
                .to_string(),
        );
    }
    if let Some(v) = read("kernel.io_uring_disabled") {
        if v != 0 {
            w.push(format!(
                "kernel.io_uring_disabled is {v}: the gateway needs io_uring; run `sysctl -w kernel.io_uring_disabled=0`"
            ));
        }
    }
    w
}
