//! Per-worker pool of I/O buffers, so idle connections pin only a small one.
//!
//! tokio-uring has no provided-buffer rings: every pending read owns its
//! buffer. A connection waiting for its next request reads into a `SMALL`
//! buffer; streaming and large records use `BIG` ones, borrowed per operation
//! and returned here. Thread-local: each worker has its own, nothing is shared.

use std::cell::RefCell;

/// Enough for a typical request in one read; what an idle connection holds.
pub const SMALL: usize = 1024;
/// Two full TLS records: streaming reads and writes.
pub const BIG: usize = 32 * 1024;
/// How many free buffers of each size a worker keeps (bounds what a burst
/// leaves behind: 512 KiB of small, 2 MiB of big ones).
const KEEP_SMALL: usize = 512;
const KEEP_BIG: usize = 64;

/// Free small and big buffers.
type Pools = (Vec<Vec<u8>>, Vec<Vec<u8>>);

thread_local! {
    static POOL: RefCell<Pools> = const { RefCell::new((Vec::new(), Vec::new())) };
}

/// An empty buffer with capacity `SMALL`.
pub fn small() -> Vec<u8> {
    POOL.with(|p| p.borrow_mut().0.pop())
        .unwrap_or_else(|| Vec::with_capacity(SMALL))
}

/// An empty buffer with capacity at least `BIG`.
pub fn big() -> Vec<u8> {
    POOL.with(|p| p.borrow_mut().1.pop())
        .unwrap_or_else(|| Vec::with_capacity(BIG))
}

/// Returns a buffer to the pool (cleared); odd sizes are dropped.
pub fn give(mut v: Vec<u8>) {
    v.clear();
    let cap = v.capacity();
    POOL.with(|p| {
        let mut p = p.borrow_mut();
        if cap == SMALL && p.0.len() < KEEP_SMALL {
            p.0.push(v);
        } else if (BIG..BIG * 2).contains(&cap) && p.1.len() < KEEP_BIG {
            p.1.push(v);
        }
    });
}
