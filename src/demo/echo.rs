//! A built-in echo upstream for the demo (and tests): answers every request
//! with what it received — request line, headers, body size and SHA-256 —
//! so a partner can see exactly what the gateway forwarded.

use crate::identity::hex;
use crate::proxy::http::chunked::ChunkedDecoder;
use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::time::Duration;

/// Starts the echo server on `addr` (port 0 picks one) and returns its address.
pub fn spawn(addr: SocketAddr) -> io::Result<SocketAddr> {
    let l = TcpListener::bind(addr)?;
    let local = l.local_addr()?;
    std::thread::Builder::new()
        .name("echo-upstream".into())
        .spawn(move || {
            for s in l.incoming().flatten() {
                let _ = std::thread::Builder::new()
                    .name("echo-conn".into())
                    .spawn(move || {
                        let _ = serve(s);
                    });
            }
        })?;
    Ok(local)
}

fn serve(mut s: TcpStream) -> io::Result<()> {
    s.set_read_timeout(Some(Duration::from_secs(120)))?;
    let mut buf: Vec<u8> = Vec::new();
    let mut chunk = vec![0u8; 64 * 1024];
    loop {
        // Head.
        let (text, body_kind, n) = loop {
            let mut hs = [httparse::EMPTY_HEADER; 128];
            let mut req = httparse::Request::new(&mut hs);
            if let httparse::Status::Complete(n) = req
                .parse(&buf)
                .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?
            {
                let mut text = format!(
                    "method: {}\npath: {}\n",
                    req.method.unwrap_or(""),
                    req.path.unwrap_or("")
                );
                let mut kind = None;
                for h in req.headers.iter() {
                    let v = String::from_utf8_lossy(h.value);
                    text.push_str(&format!("header: {}: {}\n", h.name.to_ascii_lowercase(), v));
                    if h.name.eq_ignore_ascii_case("content-length") {
                        kind = Some(v.trim().parse::<u64>().unwrap_or(0));
                    }
                    if h.name.eq_ignore_ascii_case("transfer-encoding") {
                        kind = Some(u64::MAX);
                    }
                }
                break (text, kind, n);
            }
            let r = s.read(&mut chunk)?;
            if r == 0 {
                return Ok(());
            }
            buf.extend_from_slice(&chunk[..r]);
        };
        buf.drain(..n);
        // Body.
        let mut ctx = aws_lc_rs::digest::Context::new(&aws_lc_rs::digest::SHA256);
        let mut total = 0u64;
        match body_kind {
            None => {}
            Some(u64::MAX) => {
                let mut d = ChunkedDecoder::new();
                loop {
                    let used = d
                        .advance_with(&buf, |data| {
                            ctx.update(data);
                            total += data.len() as u64;
                        })
                        .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e.0))?;
                    buf.drain(..used);
                    if d.is_done() {
                        break;
                    }
                    let r = s.read(&mut chunk)?;
                    if r == 0 {
                        return Ok(());
                    }
                    buf.extend_from_slice(&chunk[..r]);
                }
            }
            Some(mut left) => loop {
                let take = (buf.len() as u64).min(left) as usize;
                ctx.update(&buf[..take]);
                total += take as u64;
                buf.drain(..take);
                left -= take as u64;
                if left == 0 {
                    break;
                }
                let r = s.read(&mut chunk)?;
                if r == 0 {
                    return Ok(());
                }
                buf.extend_from_slice(&chunk[..r]);
            },
        }
        let body = format!(
            "{text}body-bytes: {total}\nbody-sha256: {}\n",
            hex(ctx.finish().as_ref())
        );
        let head = format!(
            "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: {}\r\n\r\n",
            body.len()
        );
        s.write_all(head.as_bytes())?;
        s.write_all(body.as_bytes())?;
    }
}
