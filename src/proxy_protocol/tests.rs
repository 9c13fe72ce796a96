//! The codec against the spec's layout: expected bytes are written out here
//! by hand (CRCs from an independent bitwise CRC32c), never taken from `encode`.

use super::*;

/// Section 2.2's signature, byte by byte.
const SIG: [u8; 12] = [
    0x0D, 0x0A, 0x0D, 0x0A, 0x00, 0x0D, 0x0A, 0x51, 0x55, 0x49, 0x54, 0x0A,
];

/// 192.168.0.1 → 192.168.0.11, ports 56324 → 443.
const V4_ADDRS: [u8; 12] = [192, 168, 0, 1, 192, 168, 0, 11, 0xDC, 0x04, 0x01, 0xBB];

/// client 0x07, verify 0, version "TLSv1.3", CN "example.com".
const SSL_VALUE: &[u8] = b"\x07\x00\x00\x00\x00\x21\x00\x07TLSv1.3\x22\x00\x0Bexample.com";

/// A PROXY TCP4 header with the addresses above, then `tlvs`.
fn tcp4(len: u8, tlvs: &[u8]) -> Vec<u8> {
    [&SIG[..], &[0x21, 0x11, 0x00, len], &V4_ADDRS, tlvs].concat()
}

fn spec_tcp4() -> Vec<u8> {
    tcp4(0x0C, &[])
}

#[rustfmt::skip]
fn spec_tcp6() -> Vec<u8> {
    [&SIG[..], &[
        0x21, 0x21, 0x00, 0x24,
        0x20, 0x01, 0x0D, 0xB8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x01, // 2001:db8::1
        0x20, 0x01, 0x0D, 0xB8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x02, // 2001:db8::2
        0x04, 0xD2, 0x01, 0xBB, // 1234 → 443
    ]].concat()
}

fn ssl_header() -> Vec<u8> {
    tcp4(0x2C, &[&[0x20, 0x00, 0x1D][..], SSL_VALUE].concat())
}

fn crc_header() -> Vec<u8> {
    tcp4(0x13, &[0x03, 0x00, 0x04, 0x1C, 0x1A, 0xE9, 0xC6])
}

fn sa(s: &str) -> SocketAddr {
    s.parse().expect("test address") // ok: test input
}

fn fixed(h: &[u8]) -> [u8; FIXED_LEN] {
    h[..FIXED_LEN].try_into().expect("16 bytes") // ok: test input
}

fn proxied(source: &str, destination: &str, tlvs: Vec<Tlv>) -> Header {
    let (source, destination) = (Some(sa(source)), Some(sa(destination)));
    Header {
        command: Command::Proxy,
        source,
        destination,
        tlvs,
    }
}

fn local() -> Header {
    Header {
        command: Command::Local,
        source: None,
        destination: None,
        tlvs: vec![],
    }
}

#[test]
fn the_signature_is_the_twelve_bytes_of_the_spec() {
    assert_eq!(SIGNATURE, SIG);
}

#[test]
fn a_tcp4_header_from_the_spec_parses_to_its_addresses() {
    let h = spec_tcp4();
    assert_eq!(header_len(&fixed(&h)), Ok(28));
    assert_eq!(
        parse(&h),
        Ok(proxied("192.168.0.1:56324", "192.168.0.11:443", vec![]))
    );
}

#[test]
fn encoding_tcp4_gives_the_spec_layout_byte_for_byte() {
    let h = encode(sa("192.168.0.1:56324"), sa("192.168.0.11:443"), &[]);
    assert_eq!(h, Ok(spec_tcp4()));
}

#[test]
fn a_tcp6_header_parses_to_its_addresses_and_encodes_to_the_same_bytes() {
    let h = spec_tcp6();
    assert_eq!(header_len(&fixed(&h)), Ok(52));
    assert_eq!(
        parse(&h),
        Ok(proxied("[2001:db8::1]:1234", "[2001:db8::2]:443", vec![]))
    );
    assert_eq!(
        encode(sa("[2001:db8::1]:1234"), sa("[2001:db8::2]:443"), &[]),
        Ok(h)
    );
}

#[test]
fn a_local_header_has_no_addresses_and_its_block_is_ignored_whatever_the_family() {
    let bare = [&SIG[..], &[0x20, 0x00, 0x00, 0x00]].concat();
    assert_eq!(encode_local(), bare);
    assert_eq!(parse(&bare), Ok(local()));
    // A block that would not parse as addresses and TLVs: a CRC TLV cut short.
    for fam in [0x00, 0x11, 0x22, 0x31, 0xFF] {
        let h = [
            &SIG[..],
            &[0x20, fam, 0x00, 0x05, 0x03, 0x00, 0x04, 0xAA, 0xBB],
        ]
        .concat();
        assert_eq!(parse(&h), Ok(local()), "family {fam:#04x}");
    }
}

#[test]
fn a_proxy_header_with_the_unspec_family_has_no_addresses() {
    let h = [&SIG[..], &[0x21, 0x00, 0x00, 0x03, 0xEE, 0xEE, 0xEE]].concat();
    let none = Header {
        command: Command::Proxy,
        source: None,
        destination: None,
        tlvs: vec![],
    };
    assert_eq!(parse(&h), Ok(none));
}

#[test]
fn udp_unix_and_unassigned_families_are_refused_by_a_tcp_gateway() {
    for fam in [0x12, 0x22, 0x31, 0x32, 0x13, 0x41, 0xFF] {
        let h = [&SIG[..], &[0x21, fam, 0x00, 0xD8]].concat();
        assert_eq!(header_len(&fixed(&h)), Err(Error::Family(fam)));
    }
}

#[test]
fn an_ssl_tlv_parses_to_its_fields_and_encodes_to_the_same_bytes() {
    let ssl = Ssl {
        client: PP2_CLIENT_SSL | PP2_CLIENT_CERT_CONN | PP2_CLIENT_CERT_SESS,
        verify: 0,
        version: Some("TLSv1.3".into()),
        cn: Some("example.com".into()),
        ..Ssl::default()
    };
    assert_eq!(ssl.client, 0x07);
    let tlv = Tlv {
        kind: PP2_TYPE_SSL,
        value: SSL_VALUE.to_vec(),
    };
    let (src, dst) = ("192.168.0.1:56324", "192.168.0.11:443");
    assert_eq!(
        parse(&ssl_header()),
        Ok(proxied(src, dst, vec![tlv.clone()]))
    );
    assert_eq!(parse_ssl(SSL_VALUE), Ok(ssl.clone()));
    assert_eq!(ssl_tlv(&ssl), Ok(tlv.clone()));
    assert_eq!(encode(sa(src), sa(dst), &[tlv]), Ok(ssl_header()));
}

#[test]
fn crc32c_of_123456789_is_the_known_answer() {
    assert_eq!(crc32c(b"123456789"), 0xE306_9283);
}

#[test]
fn a_header_with_a_good_crc32c_parses_and_a_flipped_address_or_checksum_bit_is_refused() {
    let h = crc_header();
    let crc = Tlv {
        kind: PP2_TYPE_CRC32C,
        value: vec![0x1C, 0x1A, 0xE9, 0xC6],
    };
    let (src, dst) = ("192.168.0.1:56324", "192.168.0.11:443");
    assert_eq!(parse(&h), Ok(proxied(src, dst, vec![crc])));
    // The sender's value is ignored: encode computes it.
    let blank = Tlv {
        kind: PP2_TYPE_CRC32C,
        value: vec![],
    };
    assert_eq!(encode(sa(src), sa(dst), &[blank]), Ok(h.clone()));
    for i in (16..28).chain(31..35) {
        for bit in 0..8 {
            let mut m = h.clone();
            m[i] ^= 1 << bit;
            assert_eq!(parse(&m), Err(Error::BadCrc), "byte {i} bit {bit}");
        }
    }
}

#[test]
fn encode_then_parse_gives_back_the_addresses_and_tlvs() {
    let ssl = Ssl {
        client: PP2_CLIENT_SSL | PP2_CLIENT_CERT_CONN,
        verify: 0,
        version: Some("TLSv1.3".into()),
        cn: Some("partner.example".into()),
        cipher: Some("TLS_AES_128_GCM_SHA256".into()),
        sig_alg: Some("ECDSA-SHA256".into()),
        key_alg: Some("EC256".into()),
        group: Some("X25519MLKEM768".into()),
        sig_scheme: Some("ecdsa_secp256r1_sha256".into()),
        client_cert: Some(vec![0x30, 0x82, 0x01, 0x0A, 0x30, 0x81]),
    };
    let tlvs = vec![
        Tlv {
            kind: PP2_TYPE_ALPN,
            value: b"h2".to_vec(),
        },
        Tlv {
            kind: PP2_TYPE_UNIQUE_ID,
            value: vec![7; 16],
        },
        ssl_tlv(&ssl).expect("small"), // ok: test input
        Tlv {
            kind: 0xE0,
            value: vec![],
        },
    ];
    for (s, d) in [
        ("10.0.0.1:40000", "10.0.0.2:8443"),
        ("[::1]:3", "[2001:db8::9]:4"),
    ] {
        let h = encode(sa(s), sa(d), &tlvs).expect("fits"); // ok: test input
        assert_eq!(parse(&h), Ok(proxied(s, d, tlvs.clone())));
    }
    assert_eq!(parse_ssl(&tlvs[2].value), Ok(ssl));
}

#[test]
fn mixed_families_are_sent_as_tcp6_with_the_ipv4_address_mapped() {
    let h = encode(sa("192.0.2.1:5"), sa("[2001:db8::1]:6"), &[]).expect("fits"); // ok: test input
    assert_eq!(h[13], 0x21);
    assert_eq!(
        parse(&h),
        Ok(proxied("[::ffff:192.0.2.1]:5", "[2001:db8::1]:6", vec![]))
    );
}

#[test]
fn unknown_and_noop_tlvs_after_the_addresses_are_kept_in_order() {
    let h = tcp4(0x13, &[0xEA, 0x00, 0x01, 0x07, 0x04, 0x00, 0x00]);
    let tlvs = vec![
        Tlv {
            kind: 0xEA,
            value: vec![0x07],
        },
        Tlv {
            kind: PP2_TYPE_NOOP,
            value: vec![],
        },
    ];
    assert_eq!(
        parse(&h),
        Ok(proxied("192.168.0.1:56324", "192.168.0.11:443", tlvs))
    );
}

#[test]
fn reading_header_len_then_exactly_the_rest_leaves_the_client_hello_unread() {
    let hello = [0x16, 0x03, 0x01, 0x00, 0xF4, 0x01];
    let stream = [ssl_header(), hello.to_vec()].concat();
    let n = header_len(&fixed(&stream)).expect("valid fixed part"); // ok: test input
    let (header, rest) = stream.split_at(n);
    assert!(parse(header).is_ok());
    assert_eq!(rest, hello);
}

#[test]
fn the_v1_text_form_is_refused_as_not_v2() {
    // Only v2 is read (see the module doc).
    let v1 = b"PROXY TCP4 192.168.0.1 192.168.0.11 56324 443\r\n";
    assert_eq!(header_len(&fixed(v1)), Err(Error::BadSignature));
    assert_eq!(parse(v1), Err(Error::BadSignature));
}

#[test]
fn a_truncated_header_is_refused_at_every_length_without_panicking() {
    for h in [
        spec_tcp4(),
        spec_tcp6(),
        ssl_header(),
        crc_header(),
        encode_local(),
    ] {
        for k in 0..h.len() {
            let need = if k < FIXED_LEN { FIXED_LEN } else { h.len() };
            assert_eq!(parse(&h[..k]), Err(Error::Truncated { need, got: k }));
        }
    }
}

#[test]
fn encoding_refuses_what_does_not_fit_16_bit_lengths_rather_than_truncating() {
    let (s, d) = (sa("10.0.0.1:1"), sa("10.0.0.2:2"));
    let big = Tlv {
        kind: PP2_TYPE_ALPN,
        value: vec![0; 65536],
    };
    assert_eq!(encode(s, d, &[big]), Err(Error::ValueTooLong));
    let half = Tlv {
        kind: PP2_TYPE_ALPN,
        value: vec![0; 40000],
    };
    assert_eq!(
        encode(s, d, &[half.clone(), half]),
        Err(Error::ValueTooLong)
    );
    let cert = Ssl {
        client_cert: Some(vec![0; 65535]),
        ..Ssl::default()
    };
    assert_eq!(ssl_tlv(&cert), Err(Error::ValueTooLong));
    let cn = Ssl {
        cn: Some("x".repeat(65536)),
        ..Ssl::default()
    };
    assert_eq!(ssl_tlv(&cn), Err(Error::ValueTooLong));
}

#[test]
fn an_ssl_tlv_that_is_short_overrun_repeated_or_not_utf8_is_refused_and_unknown_subtypes_skipped() {
    let bad = |why| Err(Error::BadSsl(why));
    assert_eq!(parse_ssl(b"\x07\0\0\0"), bad("shorter than 5 bytes"));
    assert_eq!(
        parse_ssl(b"\x01\0\0\0\0\x21\0\x05TL"),
        bad("sub-TLV overruns the SSL TLV")
    );
    assert_eq!(
        parse_ssl(b"\x07\0\0\0\0\x22\0\x01a\x22\0\x01b"),
        bad("repeated sub-TLV")
    );
    assert_eq!(
        parse_ssl(b"\x07\0\0\0\0\x28\0\x01a\x28\0\x00"),
        bad("repeated sub-TLV")
    );
    assert_eq!(
        parse_ssl(b"\x01\0\0\0\0\x21\0\x01\xFF"),
        bad("sub-TLV value not UTF-8")
    );
    let skipped = Ssl {
        client: 1,
        verify: 0x0102_0304,
        ..Ssl::default()
    };
    assert_eq!(parse_ssl(b"\x01\x01\x02\x03\x04\x99\0\x01z"), Ok(skipped));
}

/// Exhaustive, so a new variant does not compile until a case reaches it.
fn variant(e: &Error) -> usize {
    match e {
        Error::BadSignature => 0,
        Error::Version(_) => 1,
        Error::Command(_) => 2,
        Error::Family(_) => 3,
        Error::TooLong(_) => 4,
        Error::Truncated { .. } => 5,
        Error::TrailingBytes { .. } => 6,
        Error::TruncatedAddress => 7,
        Error::TlvOverrun => 8,
        Error::BadCrc => 9,
        Error::CrcTlv => 10,
        Error::BadSsl(_) => 11,
        Error::ValueTooLong => 12,
    }
}

#[test]
fn every_error_variant_is_reached_by_some_input_and_says_what_failed() {
    let fixed_only = |b: [u8; 4]| [&SIG[..], &b].concat();
    let zero_crc = [0x03, 0x00, 0x04, 0, 0, 0, 0];
    let cases = [
        (
            b"GET / HTTP/1.1\r\nHost: a\r\n\r\n".to_vec(),
            "not a PROXY v2 header (bad signature)",
        ),
        (
            fixed_only([0x11, 0x11, 0x00, 0x0C]),
            "unsupported version 1 (only PROXY v2)",
        ),
        (
            fixed_only([0x22, 0x11, 0x00, 0x0C]),
            "unsupported command 0x2",
        ),
        (
            fixed_only([0x21, 0x12, 0x00, 0x0C]),
            "unsupported address family 0x12",
        ),
        (
            fixed_only([0x20, 0x00, 0x0F, 0xF1]),
            "header longer than 4096 bytes (4097)",
        ),
        (
            spec_tcp4()[..20].to_vec(),
            "truncated header (20 of 28 bytes)",
        ),
        (
            [spec_tcp4(), vec![0x16]].concat(),
            "29 bytes given for a 28-byte header",
        ),
        (
            fixed_only([0x21, 0x21, 0x00, 0x23]),
            "truncated address block",
        ),
        (tcp4(0x0E, &[0xE0, 0x00]), "TLV overruns header"),
        (tcp4(0x0F, &[0xE0, 0x00, 0x01]), "TLV overruns header"),
        (tcp4(0x13, &zero_crc), "bad CRC32c"),
        (tcp4(0x12, &[0x03, 0x00, 0x03, 0, 0, 0]), "bad CRC32c TLV"),
        (tcp4(0x1A, &[zero_crc; 2].concat()), "bad CRC32c TLV"),
    ];
    let mut reached = Vec::new();
    for (input, message) in cases {
        let e = parse(&input).expect_err(message);
        assert!(e.to_string().starts_with(message), "{e} is not {message:?}");
        reached.push(e);
    }
    reached.extend(parse_ssl(b"").err());
    let (s, d) = (sa("10.0.0.1:1"), sa("10.0.0.2:2"));
    reached.extend(
        encode(
            s,
            d,
            &[Tlv {
                kind: 0xE0,
                value: vec![0; 65536],
            }],
        )
        .err(),
    );
    let mut seen: Vec<usize> = reached.iter().map(variant).collect();
    seen.sort_unstable();
    seen.dedup();
    assert_eq!(seen, (0..13).collect::<Vec<_>>());
}
