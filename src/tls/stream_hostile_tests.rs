//! The TLS driver against hostile peers, in memory: plain HTTP, oversized
//! messages, corrupted bytes, arbitrary ClientHellos (helpers in `stream_tests`).

use super::tests::*;
use super::*;

#[test]
fn a_peer_speaking_plain_http_fails_the_handshake_and_gets_an_alert() {
    let (client, server) = pair(11, 64);
    block_on(async {
        let raw = client.tcp();
        let mut req = Pooled::small();
        req.extend_from_slice(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n");
        let len = req.len();
        assert!(raw.write_all(req, len).await.0.is_ok());
        let r = server.handshake().await;
        assert!(matches!(r, Err(TlsError::Tls(_))), "{r:?}");
        let sent = raw.rx.data.borrow();
        assert_eq!(
            sent.front(),
            Some(&0x15),
            "the server's reply is a TLS alert record"
        );
    });
}

#[test]
fn a_handshake_message_too_large_for_rustls_is_refused_before_it_is_buffered() {
    let (client, server) = pair(18, 1500);
    block_on(async {
        // A ClientHello declaring 16 MiB, sent in full-size records: refused
        // long before 16 MiB arrive (rustls caps handshake messages at 64 KiB).
        let raw = client.tcp();
        let mut first = vec![0x16, 0x03, 0x01, 0x40, 0x00, 0x01, 0xff, 0xff, 0xff];
        first.resize(5 + 0x4000, 0);
        let sender = async {
            for i in 0..64 {
                let mut rec = Pooled::big();
                if i == 0 {
                    rec.extend_from_slice(&first);
                } else {
                    rec.extend_from_slice(&[0x16, 0x03, 0x03, 0x40, 0x00]);
                    rec.resize(5 + 0x4000, 0);
                }
                let len = rec.len();
                if raw.write_all(rec, len).await.0.is_err() {
                    break;
                }
                tokio::task::yield_now().await;
            }
        };
        let (r, ()) = tokio::join!(server.handshake(), sender);
        assert!(matches!(r, Err(TlsError::Tls(_))), "{r:?}");
        assert!(!server.holds_bytes(), "a failed connection holds nothing");
    });
}

#[test]
fn a_byte_corrupted_anywhere_in_the_clients_stream_yields_an_error_or_the_exact_bytes() {
    let request = payload(3000, 7);
    for round in 0..150u64 {
        let (client, server) = pair(round + 100, 1 + (round as usize * 37) % 2000);
        // Past the handshake (~2.5 KiB from the client) into the request's records.
        let offset = (round as usize * 7919) % 6000;
        let mask = 1u8 << (round % 8);
        client.tcp().tamper.set(Some((offset, mask)));
        block_on(async {
            let exchange = async {
                let (c, s) = tokio::join!(client.handshake(), server.handshake());
                if c.is_err() || s.is_err() {
                    return None;
                }
                let (_, got) = tokio::join!(
                    client.write_all(request.clone()),
                    read_exactly(&server, request.len())
                );
                Some(got)
            };
            // A corrupted length can leave both sides waiting for bytes that
            // never come: that is the handshake timeout's job, not a failure.
            let got = tokio::time::timeout(std::time::Duration::from_millis(500), exchange).await;
            if let Ok(Some(got)) = got {
                assert!(
                    got.is_empty() || got == request[..got.len()],
                    "round {round}: corrupted byte {offset} reached the reader"
                );
            }
        });
    }
}

#[test]
fn any_bytes_a_client_sends_before_the_handshake_end_it_with_an_error_not_a_panic() {
    // A real ClientHello to start from.
    let hello: Vec<u8> = {
        let (client, server) = pair(300, 16 * 1024);
        block_on(async {
            let wait = std::time::Duration::from_millis(50);
            let _ = tokio::time::timeout(wait, client.handshake()).await;
        });
        let d = server.tcp().rx.data.borrow();
        d.iter().copied().collect()
    };
    assert!(
        hello.len() > 100 && hello[0] == 0x16,
        "{} bytes",
        hello.len()
    );
    for round in 0..300u64 {
        let (_client, server) = pair(round + 400, 1 + (round as usize * 53) % 700);
        let mut rng = round.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
        let mut next = |m: usize| {
            rng ^= rng << 13;
            rng ^= rng >> 7;
            rng ^= rng << 17;
            (rng as usize) % m.max(1)
        };
        // The handshake bytes re-framed into records of random sizes (rustls
        // joins them), a few bits flipped, maybe cut short, maybe junk after.
        let mut msg = hello[5..].to_vec();
        for _ in 0..next(4) {
            let i = next(msg.len());
            msg[i] ^= 1 << next(8);
        }
        if next(4) == 0 {
            let n = next(msg.len());
            msg.truncate(n);
        }
        let mut wire = Vec::new();
        let mut rest = &msg[..];
        while !rest.is_empty() {
            let n = (1 + next(300)).min(rest.len());
            wire.extend_from_slice(&[0x16, 0x03, 0x01, (n >> 8) as u8, n as u8]);
            wire.extend_from_slice(&rest[..n]);
            rest = &rest[n..];
        }
        if next(3) == 0 {
            for _ in 0..next(200) {
                wire.push(next(256) as u8);
            }
        }
        server.tcp().rx.data.borrow_mut().extend(wire);
        End::close(&server.tcp().rx);
        let r = block_on(server.handshake());
        assert!(r.is_err(), "round {round}: no client answered, yet {r:?}");
        if matches!(r, Err(TlsError::Tls(_))) {
            assert!(
                !server.holds_bytes(),
                "round {round}: a failed connection holds bytes"
            );
        }
    }
}

#[test]
fn bytes_a_peer_sends_after_its_close_notify_are_not_kept() {
    let (client, server) = pair(20, 4000);
    block_on(async {
        let (c, s) = tokio::join!(client.handshake(), server.handshake());
        assert!(c.is_ok() && s.is_ok());
        assert!(client.shutdown_write().await.is_ok());
        // Straight onto the wire behind the close_notify (the pipe's write
        // side is shut, as a real client's would not need to be).
        client.tcp().tx.data.borrow_mut().extend([0x17; 20_000]);
        let (r, _) = server.read(Vec::new()).await;
        assert_eq!(r.ok(), Some(0));
        assert!(server.closed_cleanly());
        assert!(!server.holds_bytes(), "nothing after close_notify is held");
    });
}
