//! Bench-only prototype (issue 11): what tokio-uring 0.5 withholds, measured on
//! the simplest keep-alive path — plain TCP, one fixed HTTP response per request,
//! one ring, no runtime. Two modes on the same loop:
//!
//! - `single`: accept re-armed per connection, and per connection one recv
//!   into its own 1 KiB buffer, then a send, then the next recv (tokio-uring's
//!   model: every pending read owns a buffer);
//! - `multishot`: one multishot accept, one multishot recv per connection
//!   drawing from a shared provided-buffer ring (an idle connection holds no
//!   buffer), then a send;
//! - `epoll`: the same path on epoll with non-blocking read/write syscalls
//!   (what an epoll runtime does underneath), for the runtime decision.
//!
//! uring-proto single|multishot|epoll ADDR   (runs until killed; loopback only)

use io_uring::{cqueue, opcode, squeue, types, IoUring};
use std::collections::HashMap;
use std::net::TcpListener;
use std::os::fd::AsRawFd;

const RESPONSE: &[u8] = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok";
const BUF: usize = 1024;
/// Provided buffers shared by all connections (multishot mode).
const RING_BUFS: u16 = 1024;
const BGID: u16 = 7;

const ACCEPT: u64 = 1;
const RECV: u64 = 2;
const SEND: u64 = 3;

fn tag(kind: u64, fd: i32) -> u64 {
    (kind << 32) | fd as u32 as u64
}

/// The shared buffer ring: entries (page aligned, as the kernel wants) and the buffers.
struct BufRing {
    entries: *mut types::BufRingEntry,
    bufs: Vec<u8>,
    tail: u16,
}

impl BufRing {
    fn new(ring: &IoUring) -> std::io::Result<BufRing> {
        let size = RING_BUFS as usize * std::mem::size_of::<types::BufRingEntry>();
        // SAFETY: an anonymous private mapping of `size` bytes, checked below.
        let p = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                size,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                -1,
                0,
            )
        };
        if p == libc::MAP_FAILED {
            return Err(std::io::Error::last_os_error());
        }
        let mut r = BufRing {
            entries: p.cast(),
            bufs: vec![0; RING_BUFS as usize * BUF],
            tail: 0,
        };
        // SAFETY: the mapping lives as long as the process (never unmapped).
        unsafe {
            ring.submitter()
                .register_buf_ring(p as u64, RING_BUFS, BGID)?
        };
        for bid in 0..RING_BUFS {
            r.give(bid);
        }
        Ok(r)
    }

    /// Hands buffer `bid` (back) to the kernel.
    fn give(&mut self, bid: u16) {
        let idx = (self.tail & (RING_BUFS - 1)) as usize;
        // SAFETY: idx < RING_BUFS, inside the mapping; the kernel reads an entry
        // only after the tail store below makes it visible.
        unsafe {
            let e = &mut *self.entries.add(idx);
            e.set_addr(self.bufs.as_ptr().add(bid as usize * BUF) as u64);
            e.set_len(BUF as u32);
            e.set_bid(bid);
        }
        self.tail = self.tail.wrapping_add(1);
        // SAFETY: the tail field overlays entry 0's reserved field (see io_uring_buf_ring).
        unsafe {
            let t = types::BufRingEntry::tail(self.entries) as *const std::sync::atomic::AtomicU16;
            (*t).store(self.tail, std::sync::atomic::Ordering::Release);
        }
    }

    fn data(&self, bid: u16, n: usize) -> &[u8] {
        &self.bufs[bid as usize * BUF..bid as usize * BUF + n]
    }
}

fn push(ring: &mut IoUring, e: squeue::Entry) -> std::io::Result<()> {
    // SAFETY: every buffer an entry points at (RESPONSE, a connection's boxed
    // buffer, the buffer ring) outlives the operation.
    while unsafe { ring.submission().push(&e) }.is_err() {
        ring.submit()?;
    }
    Ok(())
}

/// The multishot recv of connection `fd`, drawing on the buffer ring.
fn recv_multi(fd: i32) -> squeue::Entry {
    opcode::RecvMulti::new(types::Fd(fd), BGID)
        .build()
        .user_data(tag(RECV, fd))
}

/// A single-shot recv of connection `fd` into its own buffer.
fn recv_into(fd: i32, b: &mut [u8; BUF]) -> squeue::Entry {
    opcode::Recv::new(types::Fd(fd), b.as_mut_ptr(), BUF as u32)
        .build()
        .user_data(tag(RECV, fd))
}

fn main() -> std::io::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (multishot, addr) = match &args[..] {
        [m, a] if m == "single" || m == "multishot" => (m == "multishot", a.clone()),
        [m, a] if m == "epoll" => return epoll(&TcpListener::bind(a)?),
        _ => {
            eprintln!("usage: uring-proto single|multishot|epoll ADDR");
            std::process::exit(2);
        }
    };
    let listener = TcpListener::bind(&addr)?;
    let lfd = types::Fd(listener.as_raw_fd());
    let mut ring = IoUring::builder().build(4096)?;
    let mut bufring = if multishot {
        Some(BufRing::new(&ring)?)
    } else {
        None
    };
    // single mode: each connection's own buffer (boxed: its address is stable).
    let mut own: HashMap<i32, Box<[u8; BUF]>> = HashMap::new();
    // single mode: responses still being sent, per connection (the next recv waits for them).
    let mut sending: HashMap<i32, usize> = HashMap::new();
    let accept = |multishot: bool| {
        if multishot {
            opcode::AcceptMulti::new(lfd).build()
        } else {
            opcode::Accept::new(lfd, std::ptr::null_mut(), std::ptr::null_mut()).build()
        }
        .user_data(tag(ACCEPT, 0))
    };
    push(&mut ring, accept(multishot))?;
    loop {
        ring.submit_and_wait(1)?;
        let done: Vec<cqueue::Entry> = ring.completion().collect();
        for c in done {
            let (kind, fd) = (c.user_data() >> 32, c.user_data() as u32 as i32);
            let res = c.result();
            match kind {
                ACCEPT => {
                    if res >= 0 {
                        let s = res;
                        let one: libc::c_int = 1;
                        // SAFETY: s is the socket just accepted; `one` lives across the call.
                        unsafe {
                            libc::setsockopt(
                                s,
                                libc::IPPROTO_TCP,
                                libc::TCP_NODELAY,
                                (&one as *const libc::c_int).cast(),
                                4,
                            )
                        };
                        if multishot {
                            push(&mut ring, recv_multi(s))?;
                        } else {
                            let b = own.entry(s).or_insert_with(|| Box::new([0; BUF]));
                            push(&mut ring, recv_into(s, b))?;
                        }
                    }
                    if !multishot || !cqueue::more(c.flags()) {
                        push(&mut ring, accept(multishot))?;
                    }
                }
                RECV => {
                    let bid = cqueue::buffer_select(c.flags());
                    if res <= 0 {
                        if res == -libc::ENOBUFS {
                            // Every provided buffer is in use: re-arm and try again.
                            push(&mut ring, recv_multi(fd))?;
                            continue;
                        }
                        own.remove(&fd);
                        sending.remove(&fd);
                        // SAFETY: fd is a connection this loop owns; nothing else refers to it now.
                        unsafe { libc::close(fd) };
                        continue;
                    }
                    let n = res as usize;
                    let requests = match (&bufring, bid) {
                        (Some(r), Some(b)) => r
                            .data(b, n)
                            .windows(4)
                            .filter(|w| *w == b"\r\n\r\n")
                            .count(),
                        _ => own.get(&fd).map_or(0, |b| {
                            b[..n].windows(4).filter(|w| *w == b"\r\n\r\n").count()
                        }),
                    };
                    if let (Some(r), Some(b)) = (&mut bufring, bid) {
                        r.give(b);
                    }
                    if !multishot {
                        *sending.entry(fd).or_default() += requests;
                    }
                    for _ in 0..requests {
                        push(
                            &mut ring,
                            opcode::Send::new(
                                types::Fd(fd),
                                RESPONSE.as_ptr(),
                                RESPONSE.len() as u32,
                            )
                            .build()
                            .user_data(tag(SEND, fd)),
                        )?;
                    }
                    if multishot {
                        if !cqueue::more(c.flags()) {
                            push(&mut ring, recv_multi(fd))?;
                        }
                    } else if requests == 0 {
                        // Not a whole request yet: read again (the prototype's client sends whole ones).
                        if let Some(b) = own.get_mut(&fd) {
                            push(&mut ring, recv_into(fd, b))?;
                        }
                    }
                }
                SEND => {
                    // single mode: the next request's recv is armed after the response is sent.
                    let left = sending.get_mut(&fd).map(|k| {
                        *k -= 1;
                        *k
                    });
                    if !multishot && res > 0 && left == Some(0) {
                        if let Some(b) = own.get_mut(&fd) {
                            push(&mut ring, recv_into(fd, b))?;
                        }
                    }
                }
                _ => {}
            }
        }
    }
}

/// The epoll loop: level-triggered, accept and read on readiness, the response
/// written at once (it always fits the socket buffer here).
fn epoll(listener: &TcpListener) -> std::io::Result<()> {
    listener.set_nonblocking(true)?;
    let lfd = listener.as_raw_fd();
    // SAFETY: plain syscalls on descriptors this function owns; every pointer
    // passed (events, buffer, option value) is live for the call.
    unsafe {
        let ep = libc::epoll_create1(0);
        if ep < 0 {
            return Err(std::io::Error::last_os_error());
        }
        let mut ev = libc::epoll_event {
            events: libc::EPOLLIN as u32,
            u64: lfd as u64,
        };
        libc::epoll_ctl(ep, libc::EPOLL_CTL_ADD, lfd, &mut ev);
        let mut events = vec![libc::epoll_event { events: 0, u64: 0 }; 1024];
        let mut buf = [0u8; BUF];
        loop {
            let n = libc::epoll_wait(ep, events.as_mut_ptr(), events.len() as i32, -1);
            for e in events.iter().take(n.max(0) as usize) {
                let fd = e.u64 as i32;
                if fd == lfd {
                    loop {
                        let s = libc::accept4(
                            lfd,
                            std::ptr::null_mut(),
                            std::ptr::null_mut(),
                            libc::SOCK_NONBLOCK,
                        );
                        if s < 0 {
                            break;
                        }
                        let one: libc::c_int = 1;
                        libc::setsockopt(
                            s,
                            libc::IPPROTO_TCP,
                            libc::TCP_NODELAY,
                            (&one as *const libc::c_int).cast(),
                            4,
                        );
                        let mut ev = libc::epoll_event {
                            events: libc::EPOLLIN as u32,
                            u64: s as u64,
                        };
                        libc::epoll_ctl(ep, libc::EPOLL_CTL_ADD, s, &mut ev);
                    }
                    continue;
                }
                let r = libc::read(fd, buf.as_mut_ptr().cast(), BUF);
                if r == 0
                    || (r < 0
                        && std::io::Error::last_os_error().kind() != std::io::ErrorKind::WouldBlock)
                {
                    libc::close(fd);
                    continue;
                }
                if r > 0 {
                    let k = buf[..r as usize]
                        .windows(4)
                        .filter(|w| *w == b"\r\n\r\n")
                        .count();
                    for _ in 0..k {
                        libc::write(fd, RESPONSE.as_ptr().cast(), RESPONSE.len());
                    }
                }
            }
        }
    }
}
