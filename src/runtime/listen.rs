//! Listening sockets built with socket2: SO_REUSEPORT (one per worker),
//! configurable backlog, TCP_NODELAY (inherited by accepted sockets on Linux).

use socket2::{Domain, Protocol, Socket, Type};
use std::io;
use std::net::SocketAddr;

/// Binds `count` SO_REUSEPORT sockets on `addr`. With port 0 the first socket's
/// port is reused for the rest, so all workers share one port.
pub fn bind_all(
    addr: SocketAddr,
    count: usize,
    backlog: u32,
    nodelay: bool,
) -> io::Result<Vec<std::net::TcpListener>> {
    bind_sockets(addr, count, backlog, nodelay, true)
}

/// `bind_all` without `listen(2)`: bound sockets take no connections, so a
/// reload can bind every new listener first and start none if one fails.
pub fn bind_only(
    addr: SocketAddr,
    count: usize,
    nodelay: bool,
) -> io::Result<Vec<std::net::TcpListener>> {
    bind_sockets(addr, count, 0, nodelay, false)
}

/// Starts taking connections on a socket from `bind_only`.
pub fn listen(s: &std::net::TcpListener, backlog: u32) -> io::Result<()> {
    socket2::SockRef::from(s).listen(backlog.min(i32::MAX as u32) as i32)
}

fn bind_sockets(
    addr: SocketAddr,
    count: usize,
    backlog: u32,
    nodelay: bool,
    listen: bool,
) -> io::Result<Vec<std::net::TcpListener>> {
    let mut out = Vec::with_capacity(count);
    let mut addr = addr;
    for _ in 0..count {
        let s = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
        s.set_reuse_address(true)?;
        s.set_reuse_port(true)?;
        if addr.is_ipv6() {
            // Dual-stack where the system allows it; v6-only otherwise.
            let _ = s.set_only_v6(false);
        }
        // Accepted sockets inherit TCP_NODELAY from the listener on Linux: no
        // setsockopt per connection.
        s.set_tcp_nodelay(nodelay)?;
        s.bind(&addr.into())?;
        if listen {
            s.listen(backlog.min(i32::MAX as u32) as i32)?;
        }
        if addr.port() == 0 {
            if let Some(a) = s.local_addr()?.as_socket() {
                addr = a;
            }
        }
        out.push(s.into());
    }
    Ok(out)
}
