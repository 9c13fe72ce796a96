//! The PROXY protocol v2 header a load balancer sends before TLS: read
//! exactly its bytes (the ClientHello after it stays on the socket for
//! rustls) and take the client's address from it.

use crate::proxy_protocol::{self as pp2, Command, FIXED_LEN};
use std::net::SocketAddr;
use tokio_uring::buf::BoundedBuf;
use tokio_uring::net::TcpStream;

/// Why no header was taken.
pub enum Refused {
    /// Closed before sending a byte: a balancer's TCP health check.
    Silent,
    Bad(String),
}

/// Reads until `buf` holds `want` bytes (its capacity is exactly `want`).
async fn fill(stream: &TcpStream, mut buf: Vec<u8>, want: usize) -> Result<Vec<u8>, Refused> {
    while buf.len() < want {
        let start = buf.len();
        let (res, slice) = stream.read(buf.slice(start..want)).await;
        buf = slice.into_inner();
        match res {
            Ok(0) if start == 0 => return Err(Refused::Silent),
            Ok(0) => {
                return Err(Refused::Bad(format!(
                    "connection closed after {start} of the PROXY header's {want} bytes"
                )))
            }
            Ok(_) => {}
            Err(e) => return Err(Refused::Bad(format!("reading the PROXY header: {e}"))),
        }
    }
    Ok(buf)
}

/// The (client, destination) addresses a valid header names: `Some` for a
/// relayed TCP connection, `None` for LOCAL (the balancer's own health check)
/// or UNSPEC, which keep the socket's addresses. `Err`: why it is refused.
pub async fn read(stream: &TcpStream) -> Result<Option<(SocketAddr, SocketAddr)>, Refused> {
    let bad = |e: pp2::Error| Refused::Bad(e.to_string());
    let fixed = fill(stream, Vec::with_capacity(FIXED_LEN), FIXED_LEN).await?;
    let head: [u8; FIXED_LEN] = fixed[..]
        .try_into()
        .map_err(|_| Refused::Bad("short PROXY header".into()))?;
    let total = pp2::header_len(&head).map_err(bad)?;
    let mut buf = Vec::with_capacity(total);
    buf.extend_from_slice(&fixed);
    let buf = fill(stream, buf, total).await?;
    let h = pp2::parse(&buf).map_err(bad)?;
    Ok(match (h.command, h.source, h.destination) {
        (Command::Proxy, Some(src), Some(dst)) => Some((src, dst)),
        _ => None,
    })
}

/// The socket's own address (where the partner connected to).
pub fn local_addr(stream: &TcpStream) -> Option<SocketAddr> {
    use std::os::fd::{AsRawFd, BorrowedFd};
    // SAFETY: the fd is the open socket `stream` owns for this whole call;
    // the borrow does not outlive it.
    let fd = unsafe { BorrowedFd::borrow_raw(stream.as_raw_fd()) };
    socket2::SockRef::from(&fd).local_addr().ok()?.as_socket()
}
