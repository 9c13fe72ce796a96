//! The smuggling and path table: each row is the raw request a partner sends
//! over its own TLS connection, and either the status it must get (and then
//! nothing of it may reach the upstream) or what the upstream must receive:
//! exactly one request, its request line byte for byte, selected fields.

mod harness;

use crate::common::{self, pki::Pki, raw};
use harness::*;

fn default_rows() -> Vec<Row> {
    let mut rows = vec![
        // Percent-encoded unreserved characters are decoded before routing.
        get(A, b"/%6frders", st(403)),
        get(C, b"/%6frders", fwd("GET /orders HTTP/1.1")),
        get(A, b"/orde%72s", st(403)),
        get(C, b"/orde%72s/1", fwd("GET /orders/1 HTTP/1.1")),
        get(A, b"/%6F%72%64%65%72%73", st(403)),
        get(A, b"/x/%7euser/%41%2d%5f", fwd("GET /x/~user/A-_ HTTP/1.1")),
        // Neighbours of /orders (a string prefix, not a segment) keep its allow-list.
        get(A, b"/public/%25%32%65%25%32%65/orders", st(400)),
        get(A, b"/public/%25%32e", st(400)),
        get(A, b"/orders%2e", st(403)),
        get(C, b"/orders%2e", fwd("GET /orders. HTTP/1.1")),
        get(A, b"/orders.json", st(403)),
        // Other escapes are kept, upper-cased; the query is kept as sent.
        get(A, b"/a%3a", fwd("GET /a%3A HTTP/1.1")),
        get(
            A,
            b"/public/caf%c3%a9",
            fwd("GET /public/caf%C3%A9 HTTP/1.1"),
        ),
        get(A, b"/public/100%25", fwd("GET /public/100%25 HTTP/1.1")),
        get(
            A,
            b"/public/x?q=%6f&r=%2f;s=1",
            fwd("GET /public/x?q=%6f&r=%2f;s=1 HTTP/1.1"),
        ),
        get(
            A,
            b"/public/-._~!$&'()*+,=:@",
            fwd("GET /public/-._~!$&'()*+,=:@ HTTP/1.1"),
        ),
        // Case-sensitive by default; prefixes match on segment boundaries.
        get(A, b"/orders", st(403)),
        get(C, b"/orders", fwd("GET /orders HTTP/1.1")),
        get(A, b"/Orders", fwd("GET /Orders HTTP/1.1")),
        get(A, b"/ordersx", st(403)),
        get(C, b"/ordersx", fwd("GET /ordersx HTTP/1.1")),
        // Path parameters are refused unless the listener allows them.
        get(A, b"/orders;x", st(400)),
        get(A, b"/public/..;/orders", st(400)),
        get(A, b"/public;v=1", st(400)),
        get(A, b"/orders%3bx", st(400)),
        get(A, b"/orders%3Bx", st(400)),
        // Escapes of controls, space, slash, backslash; malformed and double escapes.
        get(A, b"/orders%00", st(400)),
        get(A, b"/orders%09", st(400)),
        get(A, b"/orders%20", st(400)),
        get(A, b"/orders%7f", st(400)),
        get(A, b"/orders%zz", st(400)),
        get(A, b"/orders%", st(400)),
        get(A, b"/orders%4", st(400)),
        get(A, b"/public%2forders", st(400)),
        get(A, b"/public%2Forders", st(400)),
        get(A, b"/public%5corders", st(400)),
        get(A, b"/public/%252e%252e/orders", st(400)),
        get(A, b"/public/%2525", st(400)),
        get(A, b"/public/%c0%ae%c0%ae/orders", st(400)),
        get(A, b"/public/%ff", st(400)),
        // Dot and empty segments, also once decoded.
        get(A, b"/public/%2e%2e/orders", st(400)),
        get(A, b"/public/%2E/orders", st(400)),
        get(A, b"/public/./x", st(400)),
        get(A, b"/public//x", st(400)),
        // Raw bytes outside the allowed set, in the path or the query.
        get(A, b"/orders\xc3\xa9", st(400)),
        get(A, b"/public/\xff", st(400)),
        get(A, b"/public/a\"b", st(400)),
        get(A, b"/public/<x>", st(400)),
        get(A, b"/public/a\\b", st(400)),
        get(A, b"/public/a^b", st(400)),
        get(A, b"/public/a`b", st(400)),
        get(A, b"/public/{x}", st(400)),
        get(A, b"/public/a|b", st(400)),
        get(A, b"/public/x?caf\xc3\xa9", st(400)),
        get(A, b"/public/x?a\x7fb", st(400)),
        get(A, b"/public/x?a#b", st(400)),
        get(A, b"/public/x#frag", st(400)),
        // Request targets other than origin-form.
        get(A, b"public", st(400)),
        get(A, b"http://evil/orders", st(400)),
        get(A, b"*", st(400)),
        row(
            "OPTIONS *",
            A,
            b"OPTIONS * HTTP/1.1\r\nHost: localhost\r\n\r\n",
            fwd("OPTIONS * HTTP/1.1"),
        ),
        row(
            "CONNECT authority",
            A,
            b"CONNECT localhost:443 HTTP/1.1\r\nHost: localhost:443\r\n\r\n",
            st(405),
        ),
        row(
            "CONNECT path",
            A,
            b"CONNECT /orders HTTP/1.1\r\nHost: localhost\r\n\r\n",
            st(405),
        ),
        // Host.
        host("a b", st(400)),
        host("evil/x?", st(400)),
        host("user@evil", st(400)),
        host("evil#x", st(400)),
        host("localhost:44x", st(400)),
        host("a%00b", st(400)),
        host("localhost:99999999999999999999", st(400)),
        host("a,b", st(400)),
        host_kept("localhost:8443"),
        host_kept("[::1]:8443"),
        host_kept("127.0.0.1"),
        host_kept(""),
        row(
            "two equal Hosts",
            A,
            b"GET /public/h HTTP/1.1\r\nHost: a\r\nHost: a\r\n\r\n",
            st(400),
        ),
        row(
            "two Hosts",
            A,
            b"GET /public/h HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n",
            st(400),
        ),
        row(
            "Connection: close, host",
            A,
            b"GET /public/h HTTP/1.1\r\nHost: localhost\r\nConnection: close, host\r\n\r\n",
            fwd_with("GET /public/h HTTP/1.1", vec![Is("host", "localhost")]),
        ),
        row(
            "HTTP/1.0 without Host",
            A,
            b"GET /public/old HTTP/1.0\r\n\r\n",
            fwd_with("GET /public/old HTTP/1.1", vec![Is("host", "localhost")]),
        ),
        row(
            "HTTP/1.0 with Host",
            A,
            b"GET /public/old HTTP/1.0\r\nHost: h10.example\r\n\r\n",
            fwd_with("GET /public/old HTTP/1.1", vec![Is("host", "h10.example")]),
        ),
    ];
    rows.extend(framing_rows());
    rows
}

fn framing_rows() -> Vec<Row> {
    const TE: &[u8] = b"Transfer-Encoding: chunked\r\n\r\n";
    const LINE: &str = "POST /public/c HTTP/1.1";
    let dechunked = |cl: &'static str, body: &'static [u8]| {
        let checks = vec![
            Is("content-length", cl),
            Absent("transfer-encoding"),
            Absent("x-trailer"),
            Body(body),
        ];
        fwd_with(LINE, checks)
    };
    let get_with = |name: &str, fields: &[u8]| {
        let raw = [b"GET /public/c HTTP/1.1\r\nHost: a\r\n", fields, b"\r\n"].concat();
        row(name, A, &raw, st(400))
    };
    vec![
        post(
            "CL and TE",
            &[b"Content-Length: 5\r\n", TE, b"0\r\n\r\n"],
            st(400),
        ),
        post(
            "two differing CLs",
            &[b"Content-Length: 5\r\nContent-Length: 6\r\n\r\nhello!"],
            st(400),
        ),
        get_with("obs-fold", b"X-A: b\r\n c\r\n"),
        get_with("bare LF in one field", b"X-A: b\nX-B: c\r\n"),
        row(
            "bare LF",
            A,
            b"GET /public/c HTTP/1.1\nHost: a\n\n",
            st(400),
        ),
        post(
            "junk after chunk data",
            &[TE, b"5\r\nhelloXX\r\n0\r\n\r\n"],
            st(400),
        ),
        post(
            "bad chunk size",
            &[TE, b"zz\r\nhello\r\n0\r\n\r\n"],
            st(400),
        ),
        post(
            "chunk size ended by bare LF",
            &[TE, b"5\nhello\r\n0\r\n\r\n"],
            st(400),
        ),
        post(
            "trailer without a colon",
            &[TE, b"5\r\nhello\r\n0\r\nnocolon\r\n\r\n"],
            st(400),
        ),
        post(
            "trailer with a control byte",
            &[TE, b"5\r\nhello\r\n0\r\nX-T: a\x01b\r\n\r\n"],
            st(400),
        ),
        post(
            "plain chunked body",
            &[TE, b"5\r\nhello\r\n0\r\n\r\n"],
            dechunked("5", b"hello"),
        ),
        post(
            "chunk extensions and trailers",
            &[
                TE,
                b"5;ext=1\r\nhello\r\n6;a=\"b\"\r\n world\r\n0\r\n",
                b"X-Trailer: t\r\nx-forwarded-client-cert: Hash=FORGED\r\n\r\n",
            ],
            dechunked("11", b"hello world"),
        ),
        post(
            "Content-Length body",
            &[b"Content-Length: 5\r\n\r\nhello"],
            fwd_with(LINE, vec![Is("content-length", "5"), Body(b"hello")]),
        ),
        post(
            "underscore spelling of Transfer-Encoding",
            &[b"Content-Length: 3\r\nTransfer_Encoding: chunked\r\n\r\nabc"],
            st(400),
        ),
        get_with("underscore spelling of Content-Length", b"Content_Length: 5\r\n"),
        row(
            "lower-case head",
            A,
            b"head /public/x HTTP/1.1\r\nHost: localhost\r\n\r\n",
            st(400),
        ),
        row(
            "lower-case connect",
            A,
            b"connect localhost:443 HTTP/1.1\r\nHost: localhost\r\n\r\n",
            st(405),
        ),
        row(
            "path override and httpoxy headers",
            A,
            b"GET /public/x HTTP/1.1\r\nHost: localhost\r\nX-Original-URL: /orders\r\nX_Rewrite_URL: /orders\r\nProxy: http://evil:1\r\n\r\n",
            fwd_with(
                "GET /public/x HTTP/1.1",
                vec![
                    Absent("x-original-url"),
                    Absent("x_rewrite_url"),
                    Absent("proxy"),
                ],
            ),
        ),
        row(
            "partner-sent XFCC in three spellings",
            A,
            &[
                b"GET /public/x HTTP/1.1\r\nHost: localhost\r\n".as_slice(),
                b"x-forwarded-client-cert: Hash=FORGED\r\n",
                b"X_Forwarded_Client_Cert: Hash=FORGED\r\n",
                b"X-FORWARDED-CLIENT-CERT: URI=FORGED\r\n\r\n",
            ]
            .concat(),
            fwd("GET /public/x HTTP/1.1"),
        ),
    ]
}

#[test]
fn every_row_of_the_smuggling_table_gets_its_status_or_reaches_the_upstream_byte_for_byte() {
    let pki = Pki::new();
    let up = raw::RawUpstream::spawn(raw::ok("ok"));
    let gw = common::start(&pki.dir, &config(&pki, up.addr, "", ""));
    assert_rows(&gw, &up, &pki, &default_rows());
}

#[test]
fn the_table_holds_when_every_upstream_response_head_arrives_in_several_reads() {
    let pki = Pki::new();
    let reply = format!(
        "HTTP/1.1 200 OK\r\nX-Pad: {}\r\nContent-Length: 2\r\n\r\nok",
        "p".repeat(300)
    );
    let up = raw::RawUpstream::spawn(Vec::new());
    let n = reply.len();
    up.set_reply(reply.into_bytes(), &[1, 17, 200, n - 6, n - 4]);
    let gw = common::start(&pki.dir, &config(&pki, up.addr, "", ""));
    assert_rows(&gw, &up, &pki, &default_rows());
}

#[test]
fn a_case_insensitive_route_applies_its_allow_list_to_a_path_in_any_case() {
    let pki = Pki::new();
    let up = raw::RawUpstream::spawn(raw::ok("ok"));
    let gw = common::start(
        &pki.dir,
        &config(&pki, up.addr, "", "case_insensitive = true"),
    );
    let rows = vec![
        get(A, b"/Orders", st(403)),
        get(A, b"/ORDERS/1", st(403)),
        get(A, b"/oRdErS?x=1", st(403)),
        get(A, b"/%4Frders", st(403)),
        get(A, b"/orders", st(403)),
        get(C, b"/Orders/1", fwd("GET /Orders/1 HTTP/1.1")),
        get(A, b"/Ordersx", st(403)),
        get(A, b"/public/x", fwd("GET /public/x HTTP/1.1")),
    ];
    assert_rows(&gw, &up, &pki, &rows);
}

#[test]
fn with_path_params_allowed_a_param_neither_dodges_a_route_nor_hides_a_dot_segment() {
    let pki = Pki::new();
    let up = raw::RawUpstream::spawn(raw::ok("ok"));
    let gw = common::start(
        &pki.dir,
        &config(&pki, up.addr, "allow_path_params = true", ""),
    );
    let rows = vec![
        get(A, b"/orders;v=1", st(403)),
        get(A, b"/orders;v=1/2", st(403)),
        get(C, b"/orders;v=1", fwd("GET /orders;v=1 HTTP/1.1")),
        get(A, b"/public/..;/orders", st(400)),
        get(A, b"/public/.;x/orders", st(400)),
        get(A, b"/public;x/a", fwd("GET /public;x/a HTTP/1.1")),
        // An encoded `;` is refused even here: a decoding backend would strip a
        // parameter the router never saw (`/orders%3Bv=1` as `/orders`).
        get(A, b"/public/a%3bb", st(400)),
        get(A, b"/orders%3Bv=1", st(400)),
        get(A, b"/orders%00;x", st(400)),
    ];
    assert_rows(&gw, &up, &pki, &rows);
}

#[test]
fn bodies_over_max_body_bytes_get_413_before_anything_reaches_the_upstream() {
    let pki = Pki::new();
    let up = raw::RawUpstream::spawn(raw::ok("ok"));
    let gw = common::start(&pki.dir, &config(&pki, up.addr, "max_body_bytes = 100", ""));
    let big = "x".repeat(101);
    let chunked = format!("{:x}\r\n{big}\r\n0\r\n\r\n", big.len());
    let rows = vec![
        post(
            "Content-Length over the limit",
            &[b"Content-Length: 101\r\n\r\n", big.as_bytes()],
            st(413),
        ),
        post(
            "Content-Length over the limit, expecting 100-continue",
            &[b"Content-Length: 101\r\nExpect: 100-continue\r\n\r\n"],
            st(413),
        ),
        post(
            "chunked body over the limit",
            &[b"Transfer-Encoding: chunked\r\n\r\n", chunked.as_bytes()],
            st(413),
        ),
        post(
            "a body at the limit",
            &[b"Content-Length: 100\r\n\r\n", &big.as_bytes()[..100]],
            fwd("POST /public/c HTTP/1.1"),
        ),
    ];
    assert_rows(&gw, &up, &pki, &rows);
}
