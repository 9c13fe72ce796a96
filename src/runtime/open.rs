//! Open connections by certificate, so that a CRL reload can close those whose
//! certificate it revokes (`close_revoked`): rustls checks a certificate only
//! in the handshake, and a partner connection can stay open for days.

use super::worker::WorkerCtx;
use crate::tls::verified::Verified;
use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::os::fd::RawFd;
use std::rc::Rc;

/// One listener's open connections: id → (identity, socket).
type Listed = RefCell<HashMap<u64, (Rc<Verified>, RawFd)>>;

/// One worker's open, verified connections, per listener.
pub struct OpenConns {
    next: Cell<u64>,
    by_listener: Vec<Listed>,
}

impl OpenConns {
    pub fn new(listeners: usize) -> OpenConns {
        OpenConns {
            next: Cell::new(0),
            by_listener: (0..listeners).map(|_| RefCell::default()).collect(),
        }
    }
}

/// Keeps a connection listed while it lives. Declared after the stream it
/// names, so it is dropped (and the entry removed) before the fd is closed.
pub struct Registration {
    w: Rc<WorkerCtx>,
    idx: usize,
    id: u64,
}

impl Drop for Registration {
    fn drop(&mut self) {
        if let Some(m) = self.w.open.by_listener.get(self.idx) {
            m.borrow_mut().remove(&self.id);
        }
    }
}

pub fn register(w: &Rc<WorkerCtx>, idx: usize, v: Rc<Verified>, fd: RawFd) -> Option<Registration> {
    let m = w.open.by_listener.get(idx)?;
    let id = w.open.next.get();
    w.open.next.set(id + 1);
    m.borrow_mut().insert(id, (v, fd));
    Some(Registration {
        w: w.clone(),
        idx,
        id,
    })
}

/// After a reload: closes every listed connection of a `close_revoked`
/// listener whose chain no longer verifies. Each distinct chain is verified
/// once, however many connections share it.
pub fn close_revoked(w: &WorkerCtx) {
    for (idx, lc) in w.gw.listeners.iter().enumerate() {
        if !lc.cfg.tls.close_revoked {
            continue;
        }
        let Some(open) = w.open.by_listener.get(idx) else {
            continue;
        };
        let tls = w.live.borrow()[idx].tls.clone(); // ok: one live state per listener
        let mut verdicts: HashMap<*const Verified, bool> = HashMap::new();
        let mut closed = 0u64;
        for (v, fd) in open.borrow().values() {
            let ok = *verdicts
                .entry(Rc::as_ptr(v))
                .or_insert_with(|| v.still_valid(&tls));
            if !ok {
                // SAFETY: the fd belongs to a live connection: its `Registration`
                // removes this entry before the stream (and so the fd) is closed,
                // and this worker is single-threaded. shutdown(2) only ends the
                // connection; the owner still closes the fd.
                unsafe { libc::shutdown(*fd, libc::SHUT_RDWR) };
                closed += 1;
                tracing::warn!(listener = %lc.cfg.name, peer = v.peer.label(), "closing a connection whose certificate a reloaded CRL revokes");
            }
        }
        if closed > 0 {
            w.shards.listener(idx).with(|s| s.closed_revoked += closed);
        }
    }
}
