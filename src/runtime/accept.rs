//! Listener runs: one accept loop per listener socket on this worker. A run
//! ends when a reload removes or moves its listener, or at shutdown; its open
//! connections then drain (idle ones close at once, the rest get
//! `drain_timeout`, then are closed).

use super::conn::Accepted;
use super::worker::WorkerCtx;
use crate::proxy::Drain;
use std::os::fd::{AsRawFd, RawFd};
use std::rc::Rc;
use std::time::Duration;
use tokio::sync::watch;

pub struct Run {
    pub id: u64,
    pub name: Rc<str>,
    fd: RawFd,
    stop: watch::Sender<Drain>,
    task: tokio::task::JoinHandle<()>,
}

impl Run {
    /// Stops accepting and tells the run's connections to drain.
    pub fn stop_accepting(&self, how: Drain) {
        let _ = self.stop.send(how);
        // Shutting the socket down completes the accept the loop has pending
        // (which would otherwise keep the socket in the reuseport group); with
        // net.ipv4.tcp_migrate_req = 1 the kernel hands its queued connections
        // to another socket of the group.
        // SAFETY: fd belongs to the listener owned by this run's accept task,
        // which is still running (it ends only after this shutdown).
        unsafe { libc::shutdown(self.fd, libc::SHUT_RDWR) };
    }

    /// Waits for the accept loop to end.
    pub async fn finish(self) {
        let _ = self.task.await;
    }
}

/// Applies a plan's sockets: runs whose listener is gone from the plan, or
/// that get a new socket (a moved listener), stop and drain; new sockets start runs.
pub fn apply_sockets(w: &Rc<WorkerCtx>, sockets: Vec<(String, std::net::TcpListener)>) {
    if w.stopping.get() {
        return; // draining: the new sockets close unused
    }
    let plan = w.gen.borrow().view.plan.clone();
    let retired: Vec<Run> = {
        let mut runs = w.runs.borrow_mut();
        let (keep, retire): (Vec<Run>, Vec<Run>) = runs.drain(..).partition(|r| {
            plan.listener(&r.name).is_some() && !sockets.iter().any(|(n, _)| **n == *r.name)
        });
        *runs = keep;
        retire
    };
    for r in retired {
        r.stop_accepting(Drain::Handover);
        tokio_uring::spawn(drain_run(w.clone(), r));
    }
    for (name, sock) in sockets {
        let l = tokio_uring::net::TcpListener::from_std(sock);
        let (stop, stop_rx) = watch::channel(Drain::Serving);
        let id = w.open.next_id();
        let name: Rc<str> = name.into();
        let fd = l.as_raw_fd();
        let task = tokio_uring::spawn(accept_loop(l, id, name.clone(), stop_rx, w.clone()));
        w.runs.borrow_mut().push(Run {
            id,
            name,
            fd,
            stop,
            task,
        });
    }
}

/// A retired run's connections get `drain_timeout`; those still open then are closed.
async fn drain_run(w: Rc<WorkerCtx>, r: Run) {
    let (id, name) = (r.id, r.name.clone());
    r.finish().await;
    let timeout = w.gen.borrow().view.plan.config.drain_timeout;
    let deadline = tokio::time::Instant::now() + timeout;
    while w.open.in_run(id) > 0 && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let closed = w.open.shutdown_run(id);
    if closed > 0 {
        tracing::warn!(listener = %name, closed, "closed connections still open at the end of the listener's drain");
    }
}

async fn accept_loop(
    l: tokio_uring::net::TcpListener,
    run: u64,
    name: Rc<str>,
    stop: watch::Receiver<Drain>,
    w: Rc<WorkerCtx>,
) {
    loop {
        let (stream, addr) = match l.accept().await {
            Ok(x) => x,
            Err(e) => {
                if stop.borrow().active() {
                    return;
                }
                if w.log_limit.borrow_mut().allow().is_some() {
                    tracing::warn!(listener = %name, error = %e, "accept failed");
                }
                // EMFILE and friends: back off instead of spinning.
                tokio::time::sleep(Duration::from_millis(10)).await;
                continue;
            }
        };
        let gen = w.gen.borrow().clone();
        let Some(idx) = gen.view.plan.listener(&name) else {
            continue; // the run is being retired: the socket closes with it
        };
        let lc = &gen.view.plan.listeners[idx]; // ok: found just above
        let shard = w.shards.listener(&name);
        shard.with(|s| s.accepted += 1);
        // The metrics shard's open-connection gauge is the one count of them.
        if shard.with(|s| s.active) >= lc.cfg.max_connections as i64 {
            shard.with(|s| s.rejected_limit += 1);
            continue;
        }
        if w.handshaking.get() >= lc.cfg.max_handshakes {
            shard.failure(crate::outcome::Outcome::HandshakeLimit, None);
            continue;
        }
        shard.with(|s| s.active += 1);
        let c = Accepted {
            addr,
            gen,
            idx,
            shard,
            run,
            name: name.clone(),
            draining: stop.clone(),
        };
        super::worker::spawn_conn(&w, stream, c);
    }
}
