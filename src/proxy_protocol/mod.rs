//! PROXY protocol v2 codec: reads a balancer's header before TLS, writes one for an upstream.
//!
//! The format is HAProxy's doc/proxy-protocol.txt, section 2.2. Only v2 is
//! read: the v1 text form (`PROXY TCP4 ...`) is refused as a bad signature,
//! because v2's length field lets a server read exactly the header, with no
//! line scanning and no byte of the ClientHello taken off the socket.
//!
//! Reading takes two steps: read [`FIXED_LEN`] bytes, ask [`header_len`] for
//! the total, read exactly the rest, then [`parse`] the whole header.
//!
//! What a TCP gateway accepts from the PROXY command: TCP over IPv4 (`0x11`)
//! and IPv6 (`0x21`), and UNSPEC (`0x00`, no addresses: use the socket's).
//! UDP and AF_UNIX are refused: there is no TCP client address in them, and
//! the spec lets a receiver that falls back to UNSPEC refuse the connection.
//! LOCAL takes any family byte, as the spec says it is ignored. For LOCAL and
//! UNSPEC the whole address block, TLVs included, is skipped: the family does
//! not say where addresses end, so whatever follows them cannot be located.

use std::fmt;
use std::net::{IpAddr, Ipv6Addr, SocketAddr};

mod ssl;
#[cfg(test)]
mod tests;

pub use ssl::{parse_ssl, ssl_tlv};

/// The 12 bytes every v2 header starts with.
pub const SIGNATURE: [u8; 12] = *b"\r\n\r\n\0\r\nQUIT\n";
/// Signature, version and command, family and transport, length.
pub const FIXED_LEN: usize = 16;
/// The longest header [`header_len`] accepts. It is read before TLS, from a
/// peer not yet authenticated: 64 KiB per half-open connection would be
/// memory the peer chooses. What an L4 balancer sends (36 bytes of addresses,
/// a CRC, a unique ID of at most 128 bytes, a VPC endpoint ID) is a few
/// hundred bytes; 4096 leaves room for more TLVs and is one page.
pub const MAX_HEADER: usize = 4096;

pub const PP2_TYPE_ALPN: u8 = 0x01;
pub const PP2_TYPE_AUTHORITY: u8 = 0x02;
pub const PP2_TYPE_CRC32C: u8 = 0x03;
pub const PP2_TYPE_NOOP: u8 = 0x04;
pub const PP2_TYPE_UNIQUE_ID: u8 = 0x05;
pub const PP2_TYPE_SSL: u8 = 0x20;
pub const PP2_TYPE_NETNS: u8 = 0x30;
pub const PP2_SUBTYPE_SSL_VERSION: u8 = 0x21;
pub const PP2_SUBTYPE_SSL_CN: u8 = 0x22;
pub const PP2_SUBTYPE_SSL_CIPHER: u8 = 0x23;
pub const PP2_SUBTYPE_SSL_SIG_ALG: u8 = 0x24;
pub const PP2_SUBTYPE_SSL_KEY_ALG: u8 = 0x25;
pub const PP2_SUBTYPE_SSL_GROUP: u8 = 0x26;
pub const PP2_SUBTYPE_SSL_SIG_SCHEME: u8 = 0x27;
/// The client certificate, DER. Reserved in the spec by HAProxy commit
/// 6f5def3cb ("DOC: proxy-protocol: Add SSL client certificate TLV", 2026);
/// HAProxy's code does not send it yet (include/haproxy/connection-t.h stops
/// at 0x25); pires/go-proxyproto (tlv.go) and ghostunnel use 0x28.
pub const PP2_SUBTYPE_SSL_CLIENT_CERT: u8 = 0x28;
/// Bits of the SSL TLV's `client` field.
pub const PP2_CLIENT_SSL: u8 = 0x01;
pub const PP2_CLIENT_CERT_CONN: u8 = 0x02;
pub const PP2_CLIENT_CERT_SESS: u8 = 0x04;

// Version 2 in the high nibble, the command in the low one.
const CMD_LOCAL: u8 = 0x20;
const CMD_PROXY: u8 = 0x21;
// Address family in the high nibble, transport in the low one.
const UNSPEC: u8 = 0x00;
const TCP4: u8 = 0x11;
const TCP6: u8 = 0x21;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Command {
    /// A connection the proxy made itself (a health check): use the socket's addresses.
    Local,
    /// A relayed connection: the header carries the client's addresses.
    Proxy,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tlv {
    pub kind: u8,
    pub value: Vec<u8>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Header {
    pub command: Command,
    /// The client; `None` for LOCAL and UNSPEC (use the socket's peer).
    pub source: Option<SocketAddr>,
    pub destination: Option<SocketAddr>,
    /// In wire order, unknown types kept; a CRC32C one has been checked.
    pub tlvs: Vec<Tlv>,
}

/// The value of a `PP2_TYPE_SSL` TLV (spec 2.2.6). Strings are the sub-TLVs
/// of the same name; `None` means absent.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Ssl {
    /// `PP2_CLIENT_*` bits.
    pub client: u8,
    /// 0 when the client's certificate was verified.
    pub verify: u32,
    pub version: Option<String>,
    pub cn: Option<String>,
    pub cipher: Option<String>,
    pub sig_alg: Option<String>,
    pub key_alg: Option<String>,
    pub group: Option<String>,
    pub sig_scheme: Option<String>,
    pub client_cert: Option<Vec<u8>>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Error {
    BadSignature,
    Version(u8),
    Command(u8),
    Family(u8),
    TooLong(usize),
    Truncated { need: usize, got: usize },
    TrailingBytes { need: usize, got: usize },
    TruncatedAddress,
    TlvOverrun,
    BadCrc,
    CrcTlv,
    BadSsl(&'static str),
    ValueTooLong,
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::BadSignature => f.write_str("not a PROXY v2 header (bad signature)"),
            Error::Version(v) => write!(f, "unsupported version {v} (only PROXY v2)"),
            Error::Command(c) => write!(f, "unsupported command {c:#x}"),
            Error::Family(b) => write!(
                f,
                "unsupported address family {b:#04x} (TCP over IPv4/IPv6, or UNSPEC, only)"
            ),
            Error::TooLong(n) => write!(f, "header longer than {MAX_HEADER} bytes ({n})"),
            Error::Truncated { need, got } => write!(f, "truncated header ({got} of {need} bytes)"),
            Error::TrailingBytes { need, got } => {
                write!(f, "{got} bytes given for a {need}-byte header")
            }
            Error::TruncatedAddress => f.write_str("truncated address block"),
            Error::TlvOverrun => f.write_str("TLV overruns header"),
            Error::BadCrc => f.write_str("bad CRC32c"),
            Error::CrcTlv => f.write_str("bad CRC32c TLV (not 4 bytes, or repeated)"),
            Error::BadSsl(why) => write!(f, "bad SSL TLV: {why}"),
            Error::ValueTooLong => f.write_str("TLV value or header longer than 65535 bytes"),
        }
    }
}

impl std::error::Error for Error {}

/// Checks the fixed part and returns the whole header's length (16 + its
/// length field), so the caller reads exactly that many bytes. Refuses early
/// what [`parse`] would refuse from these 16 bytes alone.
pub fn header_len(fixed: &[u8; FIXED_LEN]) -> Result<usize, Error> {
    let [.., ver_cmd, fam, hi, lo] = *fixed;
    if fixed[..12] != SIGNATURE {
        return Err(Error::BadSignature);
    }
    if ver_cmd >> 4 != 2 {
        return Err(Error::Version(ver_cmd >> 4));
    }
    let block = usize::from(u16::from_be_bytes([hi, lo]));
    match ver_cmd {
        CMD_LOCAL => {}
        CMD_PROXY => {
            if block < address_len(fam)? {
                return Err(Error::TruncatedAddress);
            }
        }
        _ => return Err(Error::Command(ver_cmd & 0x0f)),
    }
    let len = FIXED_LEN + block;
    if len > MAX_HEADER {
        return Err(Error::TooLong(len));
    }
    Ok(len)
}

/// The address block's length for a PROXY command's family byte.
fn address_len(fam: u8) -> Result<usize, Error> {
    match fam {
        UNSPEC => Ok(0),
        TCP4 => Ok(12),
        TCP6 => Ok(36),
        _ => Err(Error::Family(fam)),
    }
}

/// Parses one whole header: exactly the [`header_len`] bytes, no more.
pub fn parse(header: &[u8]) -> Result<Header, Error> {
    let Some((fixed, block)) = header.split_first_chunk::<FIXED_LEN>() else {
        return Err(Error::Truncated {
            need: FIXED_LEN,
            got: header.len(),
        });
    };
    let need = header_len(fixed)?;
    let got = header.len();
    if got < need {
        return Err(Error::Truncated { need, got });
    }
    if got > need {
        // Refused rather than ignored: the excess is a ClientHello the
        // caller would otherwise lose.
        return Err(Error::TrailingBytes { need, got });
    }
    let [.., ver_cmd, fam, _, _] = *fixed;
    let (source, destination, addr_len) = match (ver_cmd, fam) {
        (CMD_PROXY, TCP4) => (addr::<4>(block, 0, 8), addr::<4>(block, 4, 10), 12),
        (CMD_PROXY, TCP6) => (addr::<16>(block, 0, 32), addr::<16>(block, 16, 34), 36),
        // LOCAL with any family, PROXY with UNSPEC: see the module doc.
        _ => {
            let command = if ver_cmd == CMD_LOCAL {
                Command::Local
            } else {
                Command::Proxy
            };
            return Ok(Header {
                command,
                source: None,
                destination: None,
                tlvs: Vec::new(),
            });
        }
    };
    let (Some(source), Some(destination)) = (source, destination) else {
        return Err(Error::TruncatedAddress);
    };
    let found = block
        .get(addr_len..)
        .and_then(split_tlvs)
        .ok_or(Error::TlvOverrun)?;
    let mut crc_at = None;
    for &(at, kind, value) in &found {
        if kind == PP2_TYPE_CRC32C {
            if value.len() != 4 || crc_at.is_some() {
                return Err(Error::CrcTlv);
            }
            crc_at = Some(FIXED_LEN + addr_len + at);
        }
    }
    if crc_at.is_some_and(|at| !crc_matches(header, at)) {
        return Err(Error::BadCrc);
    }
    let tlvs = found
        .into_iter()
        .map(|(_, kind, value)| Tlv {
            kind,
            value: value.to_vec(),
        })
        .collect();
    Ok(Header {
        command: Command::Proxy,
        source: Some(source),
        destination: Some(destination),
        tlvs,
    })
}

/// A PROXY header over TCP. Mixed families are sent as TCP over IPv6 with
/// the IPv4 address IPv4-mapped (`::ffff:a.b.c.d`), since one header holds
/// one family. IPv6 flow info and scope are not carried. A `PP2_TYPE_CRC32C`
/// TLV gets the computed checksum whatever its value. Errs, never truncates,
/// when a value or the header passes the 16-bit length fields.
pub fn encode(source: SocketAddr, destination: SocketAddr, tlvs: &[Tlv]) -> Result<Vec<u8>, Error> {
    let mut out = Vec::with_capacity(64);
    out.extend_from_slice(&SIGNATURE);
    out.push(CMD_PROXY);
    if let (SocketAddr::V4(s), SocketAddr::V4(d)) = (source, destination) {
        out.extend_from_slice(&[TCP4, 0, 0]);
        out.extend_from_slice(&s.ip().octets());
        out.extend_from_slice(&d.ip().octets());
    } else {
        out.extend_from_slice(&[TCP6, 0, 0]);
        out.extend_from_slice(&ipv6(source).octets());
        out.extend_from_slice(&ipv6(destination).octets());
    }
    out.extend_from_slice(&source.port().to_be_bytes());
    out.extend_from_slice(&destination.port().to_be_bytes());
    let mut crc_at = None;
    for t in tlvs {
        let value = if t.kind == PP2_TYPE_CRC32C {
            if crc_at.replace(out.len() + 3).is_some() {
                return Err(Error::CrcTlv);
            }
            &[0; 4][..]
        } else {
            &t.value[..]
        };
        push_tlv(&mut out, t.kind, value)?;
    }
    let len = u16::try_from(out.len() - FIXED_LEN).map_err(|_| Error::ValueTooLong)?;
    out[14..16].copy_from_slice(&len.to_be_bytes()); // ok: out starts with the 16-byte fixed part
    if let Some(at) = crc_at {
        // The field is still zero, as the checksum is defined.
        let crc = crc32c(&out);
        out[at..at + 4].copy_from_slice(&crc.to_be_bytes()); // ok: the 4 zeros pushed above
    }
    Ok(out)
}

/// A LOCAL header (a health check from the proxy itself): no addresses.
pub fn encode_local() -> Vec<u8> {
    let mut out = SIGNATURE.to_vec();
    out.extend_from_slice(&[CMD_LOCAL, UNSPEC, 0, 0]);
    out
}

/// `N` bytes of `b` from `at`, if there are that many.
fn take<const N: usize>(b: &[u8], at: usize) -> Option<[u8; N]> {
    b.get(at..)?.first_chunk::<N>().copied()
}

/// The address with its IP at `ip` and port at `port`; IPv6 ones get no
/// flow info or scope (the header carries none).
fn addr<const N: usize>(b: &[u8], ip: usize, port: usize) -> Option<SocketAddr>
where
    IpAddr: From<[u8; N]>,
{
    let ip = IpAddr::from(take::<N>(b, ip)?);
    Some(SocketAddr::from((ip, u16::from_be_bytes(take(b, port)?))))
}

fn ipv6(a: SocketAddr) -> Ipv6Addr {
    match a {
        SocketAddr::V4(a) => a.ip().to_ipv6_mapped(),
        SocketAddr::V6(a) => *a.ip(),
    }
}

/// Splits TLVs into (offset of the value in `b`, type, value); `None` if
/// the last one overruns `b`.
fn split_tlvs(mut b: &[u8]) -> Option<Vec<(usize, u8, &[u8])>> {
    let mut out = Vec::new();
    let mut at = 0;
    while let Some((&[kind, hi, lo], rest)) = b.split_first_chunk::<3>() {
        let len = usize::from(u16::from_be_bytes([hi, lo]));
        let (value, next) = rest.split_at_checked(len)?;
        out.push((at + 3, kind, value));
        at += 3 + len;
        b = next;
    }
    // One or two bytes left: a TLV cut inside its type and length.
    b.is_empty().then_some(out)
}

fn push_tlv(out: &mut Vec<u8>, kind: u8, value: &[u8]) -> Result<(), Error> {
    let len = u16::try_from(value.len()).map_err(|_| Error::ValueTooLong)?;
    out.push(kind);
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(value);
    Ok(())
}

/// Whether the CRC32c field at `at` holds the checksum of `header` with
/// that field read as zeros (spec 2.2.3), without copying the header.
fn crc_matches(header: &[u8], at: usize) -> bool {
    let Some((before, rest)) = header.split_at_checked(at) else {
        return false;
    };
    let Some((sent, after)) = rest.split_first_chunk::<4>() else {
        return false;
    };
    let crc = [before, &[0; 4], after].into_iter().fold(!0, crc32c_update);
    !crc == u32::from_be_bytes(*sent)
}

/// CRC32c (Castagnoli, reflected, as in RFC 4960 appendix B).
fn crc32c(data: &[u8]) -> u32 {
    !crc32c_update(!0, data)
}

/// Bit by bit: a header is tens of bytes, not worth a 1 KiB table.
fn crc32c_update(mut crc: u32, data: &[u8]) -> u32 {
    for &b in data {
        crc ^= u32::from(b);
        for _ in 0..8 {
            // Subtracting the low bit from 0 gives an all-ones mask when it is set.
            crc = (crc >> 1) ^ (0x82F6_3B78 & 0u32.wrapping_sub(crc & 1));
        }
    }
    crc
}
