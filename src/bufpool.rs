//! Per-worker pool of I/O buffers, so idle connections pin only a small one.
//!
//! tokio-uring has no provided-buffer rings: every pending read owns its
//! buffer. A connection waiting for its next request reads into a `SMALL`
//! buffer; streaming and large records use `BIG` ones, borrowed per operation
//! and returned here. Thread-local: each worker has its own, nothing is shared.
//! `Pooled` returns itself on drop (the TLS driver's buffers); the proxy's
//! `Vec`s are handed back with `give`.

use std::cell::RefCell;
use std::ops::{Deref, DerefMut};

/// Enough for a typical request in one read; what an idle connection holds.
pub const SMALL: usize = 1024;
/// Four full TLS records: streaming reads and writes (fewer, larger ring
/// operations per streamed byte; held only while data flows).
pub const BIG: usize = 64 * 1024;
/// Outgoing ciphertext of up to `BIG` plaintext bytes with its records'
/// framing, so one flush is one socket write (not 32 KiB and a 44-byte tail).
/// rustls encrypts into an initialised slice, so these buffers are kept at
/// full length (zeroed once, when first allocated), never cleared.
pub const OUT: usize = BIG + 2048;
/// How many free buffers of each size a worker keeps (bounds what a burst
/// leaves behind: 512 KiB of small, 4 MiB each of big and out ones).
const KEEP_SMALL: usize = 512;
const KEEP_BIG: usize = 64;
const KEEP_OUT: usize = 64;

/// Free small, big and out buffers.
type Pools = (Vec<Vec<u8>>, Vec<Vec<u8>>, Vec<Vec<u8>>);

thread_local! {
    static POOL: RefCell<Pools> = const { RefCell::new((Vec::new(), Vec::new(), Vec::new())) };
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

/// A buffer of `OUT` initialised bytes (TLS records on their way out; the
/// writer tracks how much of it it filled).
pub fn out() -> Vec<u8> {
    POOL.with(|p| p.borrow_mut().2.pop())
        .unwrap_or_else(|| vec![0; OUT])
}

/// Returns a buffer to the pool (cleared, out buffers kept at full length);
/// odd sizes are dropped.
pub fn give(mut v: Vec<u8>) {
    let cap = v.capacity();
    if cap != OUT {
        v.clear();
    }
    // try_with: a buffer dropped while the thread exits is just freed.
    let _ = POOL.try_with(|p| {
        let mut p = p.borrow_mut();
        if cap == SMALL && p.0.len() < KEEP_SMALL {
            p.0.push(v);
        } else if cap == OUT {
            if p.2.len() < KEEP_OUT {
                // Only a buffer someone shortened costs a fill here.
                v.resize(OUT, 0);
                p.2.push(v);
            }
        } else if (BIG..BIG * 2).contains(&cap) && p.1.len() < KEEP_BIG {
            p.1.push(v);
        }
    });
}

/// How many free (small, big, out) buffers this thread's pool holds.
#[cfg(test)]
pub fn free() -> (usize, usize, usize) {
    POOL.try_with(|p| {
        let p = p.borrow();
        (p.0.len(), p.1.len(), p.2.len())
    })
    .unwrap_or((0, 0, 0))
}

/// A pooled buffer that goes back to the pool when dropped, on every path
/// (errors, early returns, an io_uring op that completes after its future
/// was dropped). It can be handed to tokio-uring directly.
pub struct Pooled(Vec<u8>);

impl Pooled {
    pub fn small() -> Pooled {
        Pooled(small())
    }

    pub fn big() -> Pooled {
        Pooled(big())
    }

    pub fn out() -> Pooled {
        Pooled(out())
    }

    /// An empty buffer of at least `cap` bytes: a big one when that is enough,
    /// else one of its own (pooled when dropped only if its size fits a class).
    pub fn at_least(cap: usize) -> Pooled {
        if cap <= BIG {
            Pooled(big())
        } else {
            Pooled(Vec::with_capacity(cap))
        }
    }
}

impl Deref for Pooled {
    type Target = Vec<u8>;
    fn deref(&self) -> &Vec<u8> {
        &self.0
    }
}

impl DerefMut for Pooled {
    fn deref_mut(&mut self) -> &mut Vec<u8> {
        &mut self.0
    }
}

impl Drop for Pooled {
    fn drop(&mut self) {
        give(std::mem::take(&mut self.0));
    }
}

// SAFETY: these delegate to the inner Vec exactly as tokio-uring's own impls
// for Vec<u8> do: the heap pointer stays put when the Pooled value moves, and
// while an op owns the Pooled nothing else can reallocate or free the Vec.
unsafe impl tokio_uring::buf::IoBuf for Pooled {
    fn stable_ptr(&self) -> *const u8 {
        self.0.as_ptr()
    }
    fn bytes_init(&self) -> usize {
        self.0.len()
    }
    fn bytes_total(&self) -> usize {
        self.0.capacity()
    }
}

// SAFETY: as above; `set_init` is only called by tokio-uring with a position
// the kernel has written up to, within the capacity.
unsafe impl tokio_uring::buf::IoBufMut for Pooled {
    fn stable_mut_ptr(&mut self) -> *mut u8 {
        self.0.as_mut_ptr()
    }
    unsafe fn set_init(&mut self, pos: usize) {
        if self.0.len() < pos {
            // SAFETY: the caller guarantees bytes up to `pos` are initialised.
            unsafe { self.0.set_len(pos) };
        }
    }
}
