//! Open connections of one worker, by listener run and certificate: a retired
//! run's drain deadline closes the ones still open, and a CRL reload closes
//! those whose certificate it revokes (`close_revoked`: rustls checks a
//! certificate only in the handshake, and a partner connection can stay open
//! for days).

use super::worker::{Gen, WorkerCtx};
use crate::tls::verified::Verified;
use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::os::fd::RawFd;
use std::rc::Rc;

struct Entry {
    run: u64,
    listener: Rc<str>,
    peer: Option<Rc<Verified>>,
    fd: RawFd,
}

#[derive(Default)]
pub struct OpenConns {
    next: Cell<u64>,
    conns: RefCell<HashMap<u64, Entry>>,
}

impl OpenConns {
    /// A fresh id (for connections and runs alike).
    pub fn next_id(&self) -> u64 {
        let id = self.next.get();
        self.next.set(id + 1);
        id
    }

    /// Connections of `run` still open.
    pub fn in_run(&self, run: u64) -> usize {
        self.conns
            .borrow()
            .values()
            .filter(|e| e.run == run)
            .count()
    }

    /// Ends every connection of `run`; returns how many.
    pub fn shutdown_run(&self, run: u64) -> usize {
        let conns = self.conns.borrow();
        let mut n = 0;
        for e in conns.values().filter(|e| e.run == run) {
            // SAFETY: the fd belongs to a live connection: its `Registration`
            // removes the entry before the stream (and so the fd) is closed,
            // and this worker is single-threaded. shutdown(2) only ends the
            // connection; its owner still closes the fd.
            unsafe { libc::shutdown(e.fd, libc::SHUT_RDWR) };
            n += 1;
        }
        n
    }
}

/// Keeps a connection listed while it lives. Declared after the stream it
/// names, so it is dropped (and the entry removed) before the fd is closed.
pub struct Registration {
    w: Rc<WorkerCtx>,
    id: u64,
}

impl Registration {
    /// The verified partner, once the handshake has named it.
    pub fn set_peer(&self, peer: Option<Rc<Verified>>) {
        if let Some(e) = self.w.open.conns.borrow_mut().get_mut(&self.id) {
            e.peer = peer;
        }
    }
}

impl Drop for Registration {
    fn drop(&mut self) {
        self.w.open.conns.borrow_mut().remove(&self.id);
    }
}

pub fn register(w: &Rc<WorkerCtx>, run: u64, listener: Rc<str>, fd: RawFd) -> Registration {
    let id = w.open.next_id();
    let e = Entry {
        run,
        listener,
        peer: None,
        fd,
    };
    w.open.conns.borrow_mut().insert(id, e);
    Registration { w: w.clone(), id }
}

/// Whether `v` still verifies under `gen`'s state for listener `name`, when
/// that listener closes revoked connections (true otherwise).
pub fn still_valid(gen: &Gen, name: &str, v: &Verified) -> bool {
    let plan = &gen.view.plan;
    match plan.listener(name) {
        Some(i) if plan.listeners[i].cfg.tls.close_revoked => v.still_valid(&gen.live[i].state.tls), // ok: live is indexed like the plan's listeners
        _ => true,
    }
}

/// After a reload: closes every listed connection of a `close_revoked`
/// listener whose chain no longer verifies under the listener's new CAs and
/// CRLs. Each distinct chain is verified once, however many connections share it.
pub fn close_revoked(w: &WorkerCtx) {
    let gen = w.gen.borrow().clone();
    let plan = &gen.view.plan;
    let mut verdicts: HashMap<(*const Verified, usize), bool> = HashMap::new();
    let mut closed: HashMap<Rc<str>, u64> = HashMap::new();
    for e in w.open.conns.borrow().values() {
        let Some(v) = &e.peer else { continue };
        let Some(idx) = plan.listener(&e.listener) else {
            continue; // a removed listener drains on its own deadline
        };
        if !plan.listeners[idx].cfg.tls.close_revoked {
            continue;
        }
        let tls = &gen.live[idx].state.tls; // ok: live is indexed like the plan's listeners
        let ok = *verdicts
            .entry((Rc::as_ptr(v), idx))
            .or_insert_with(|| v.still_valid(tls));
        if !ok {
            // SAFETY: as in `OpenConns::shutdown_run`.
            unsafe { libc::shutdown(e.fd, libc::SHUT_RDWR) };
            *closed.entry(e.listener.clone()).or_default() += 1;
            tracing::warn!(listener = %e.listener, peer = v.peer.label(), "closing a connection whose certificate a reloaded CRL revokes");
        }
    }
    for (name, n) in closed {
        w.shards.listener(&name).with(|s| s.closed_revoked += n);
    }
}
