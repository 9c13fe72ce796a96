//! The property the `proxy_protocol` fuzz target checks, panicking on a
//! violation (the convention of checks.rs, kept apart to be wired in).
//!
//! For any input: the fixed part and the header parse without panicking, as
//! a server reads them (16 bytes, then exactly `header_len`); every shorter
//! read is "truncated"; an accepted header re-encodes to the same bytes; an
//! SSL TLV's value (and the input itself, read as one) round-trips through
//! `parse_ssl` and `ssl_tlv`; and addresses and TLVs derived from the input
//! go through `encode` and come back from `parse`.

use mtlsgate::proxy_protocol::{
    encode, encode_local, header_len, parse, parse_ssl, ssl_tlv, Command, Error, Header, Tlv,
    FIXED_LEN, MAX_HEADER, PP2_TYPE_CRC32C, PP2_TYPE_SSL,
};
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV6};

pub fn proxy_protocol(data: &[u8]) {
    read_as_a_server(data);
    ssl_round_trip(data);
    encode_derived(data);
}

fn read_as_a_server(data: &[u8]) {
    let Some(fixed) = data.first_chunk::<FIXED_LEN>() else {
        let want = Err(Error::Truncated {
            need: FIXED_LEN,
            got: data.len(),
        });
        assert_eq!(parse(data), want, "short input {data:02x?}");
        return;
    };
    let n = match header_len(fixed) {
        Ok(n) => n,
        Err(e) => {
            // Whatever the fixed part refuses, parse refuses the same way.
            assert_eq!(parse(data), Err(e), "input {data:02x?}");
            return;
        }
    };
    assert!((FIXED_LEN..=MAX_HEADER).contains(&n), "header_len {n}");
    for k in 0..n.min(data.len()) {
        let need = if k < FIXED_LEN { FIXED_LEN } else { n };
        let want = Err(Error::Truncated { need, got: k });
        assert_eq!(
            parse(&data[..k]),
            want,
            "a read of {k} bytes of {data:02x?}"
        );
    }
    let Some(header) = data.get(..n) else {
        return;
    };
    if data.len() > n {
        let want = Err(Error::TrailingBytes {
            need: n,
            got: data.len(),
        });
        assert_eq!(parse(data), want, "input {data:02x?}");
    }
    let Ok(parsed) = parse(header) else {
        return;
    };
    match (parsed.command, parsed.source, parsed.destination) {
        (Command::Proxy, Some(s), Some(d)) => {
            assert_eq!(s.is_ipv4(), d.is_ipv4(), "one family per header");
            let again = encode(s, d, &parsed.tlvs);
            assert_eq!(again.as_deref(), Ok(header), "re-encoding {parsed:?}");
            assert_eq!(parse(header), Ok(parsed.clone()));
        }
        (Command::Local, None, None) => {
            assert!(parsed.tlvs.is_empty(), "LOCAL keeps no TLVs: {parsed:?}");
            assert_eq!(parse(&encode_local()), Ok(parsed.clone()));
        }
        (Command::Proxy, None, None) => {
            assert!(parsed.tlvs.is_empty(), "UNSPEC keeps no TLVs: {parsed:?}");
        }
        _ => panic!("one address without the other: {parsed:?}"),
    }
    let crcs = parsed.tlvs.iter().filter(|t| t.kind == PP2_TYPE_CRC32C);
    assert!(crcs.count() <= 1, "two CRC32c TLVs accepted: {parsed:?}");
    for t in parsed.tlvs.iter().filter(|t| t.kind == PP2_TYPE_SSL) {
        ssl_round_trip(&t.value);
    }
}

/// `parse_ssl` never panics; what it reads comes back from `ssl_tlv`, in no
/// more bytes (only known sub-TLVs, once each, are re-encoded).
fn ssl_round_trip(value: &[u8]) {
    let Ok(ssl) = parse_ssl(value) else {
        return;
    };
    match ssl_tlv(&ssl) {
        Ok(tlv) => {
            assert_eq!(tlv.kind, PP2_TYPE_SSL);
            assert!(tlv.value.len() <= value.len(), "{ssl:?} grew");
            assert_eq!(parse_ssl(&tlv.value), Ok(ssl), "SSL value {value:02x?}");
        }
        Err(e) => assert!(value.len() > 65535, "{ssl:?} from {value:02x?}: {e}"),
    }
}

/// Addresses from the first 37 bytes (byte 0 picks each one's family),
/// TLVs from the rest (type byte, length byte, that many bytes).
fn derived(data: &[u8]) -> Option<(SocketAddr, SocketAddr, Vec<Tlv>)> {
    let (&[pick], rest) = data.split_first_chunk::<1>()?;
    let (a, mut rest) = rest.split_first_chunk::<36>()?;
    let addr = |v4: bool, at: usize, port: usize| {
        let port = u16::from_be_bytes([a[port], a[port + 1]]);
        if v4 {
            let ip = Ipv4Addr::new(a[at], a[at + 1], a[at + 2], a[at + 3]);
            SocketAddr::from((ip, port))
        } else {
            let mut ip = [0; 16];
            ip.copy_from_slice(&a[at..at + 16]);
            SocketAddr::V6(SocketAddrV6::new(Ipv6Addr::from(ip), port, 0, 0))
        }
    };
    let (s, d) = (addr(pick & 1 == 1, 0, 32), addr(pick & 2 == 2, 16, 34));
    let mut tlvs = Vec::new();
    while let Some((&[kind, len], tail)) = rest.split_first_chunk::<2>() {
        let (value, next) = tail.split_at(usize::from(len).min(tail.len()));
        tlvs.push(Tlv {
            kind,
            value: value.to_vec(),
        });
        rest = next;
    }
    Some((s, d, tlvs))
}

fn encode_derived(data: &[u8]) {
    let Some((s, d, tlvs)) = derived(data) else {
        return;
    };
    let crcs = tlvs.iter().filter(|t| t.kind == PP2_TYPE_CRC32C).count();
    let bytes = match encode(s, d, &tlvs) {
        Ok(b) => b,
        Err(Error::CrcTlv) if crcs > 1 => return,
        Err(e) => panic!("encode({s}, {d}, {tlvs:02x?}): {e}"),
    };
    assert!(crcs <= 1, "two CRC32c TLVs encoded");
    if bytes.len() > MAX_HEADER {
        assert_eq!(parse(&bytes), Err(Error::TooLong(bytes.len())));
        return;
    }
    // Mixed families travel as TCP6 with the IPv4 side mapped.
    let widen = |a: SocketAddr| match a {
        SocketAddr::V4(v) if s.is_ipv4() != d.is_ipv4() => {
            SocketAddr::V6(SocketAddrV6::new(v.ip().to_ipv6_mapped(), v.port(), 0, 0))
        }
        _ => a,
    };
    let parsed = parse(&bytes);
    let Ok(Header {
        command: Command::Proxy,
        source,
        destination,
        tlvs: got,
    }) = parsed
    else {
        panic!("encode({s}, {d}, {tlvs:02x?}) does not parse: {parsed:?}");
    };
    assert_eq!((source, destination), (Some(widen(s)), Some(widen(d))));
    assert_eq!(got.len(), tlvs.len());
    for (g, t) in got.iter().zip(&tlvs) {
        // A CRC32c TLV's value is the computed checksum, whatever was given.
        let same = g.kind == t.kind && (g.value == t.value || t.kind == PP2_TYPE_CRC32C);
        assert!(same, "TLV {t:02x?} came back as {g:02x?}");
    }
}
