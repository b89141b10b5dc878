//! Attacks on the transport layer (TLS, HTTP, WebSocket, PROXY) found by a
//! hostile review, one test each: all of them failed against the first
//! version of the layer (two crashed the server) and pass since the fixes.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::util::*;

/// Sends `bytes` on a fresh connection, then gives the server a moment.
fn send_raw(addr: SocketAddr, bytes: &[u8]) {
    let mut s = TcpStream::connect(addr).unwrap();
    s.write_all(bytes).unwrap();
    s.set_read_timeout(Some(Duration::from_millis(500)))
        .unwrap();
    let mut buf = [0u8; 256];
    let _ = s.read(&mut buf);
}

#[track_caller]
fn assert_alive(server: &mut Server, what: &str) {
    if let Some(status) = server.wait_exit(Duration::from_millis(300)) {
        panic!("{what} killed the server ({status})");
    }
    // And it still serves.
    let mut c = Client::connect(server.addr);
    c.expect_welcome();
}

/// CRASH. One TLS handshake record whose handshake header claims a
/// 64 KiB message (over rustls's limit): rustls errs, `collect_alert`
/// drops the input and calls `process_tls_records(&mut [])`, and rustls
/// indexes its stale deframer offsets into the empty buffer: panic in
/// rustls conn.rs ("range start index 9 out of range for slice of length
/// 0"), the whole server exits 101.
#[test]
fn tls_oversized_handshake_message_does_not_kill_the_server() {
    let mut server = Server::start(&[]);
    send_raw(
        server.addr,
        &[0x16, 0x03, 0x01, 0x00, 0x04, 0x01, 0x01, 0x00, 0x00],
    );
    assert_alive(&mut server, "a 9-byte TLS record");
}

/// CRASH. A ClientHello split over records (legal), whose second record
/// is a fatal alert (a client giving up): same panic.
#[test]
fn tls_partial_client_hello_then_alert_does_not_kill_the_server() {
    let mut server = Server::start(&[]);
    let mut bytes = vec![0x16, 0x03, 0x01, 0x00, 0x0e, 0x01, 0x00, 0x00, 0x64];
    bytes.extend_from_slice(&[0; 10]);
    bytes.extend_from_slice(&[0x15, 0x03, 0x01, 0x00, 0x02, 0x02, 0x28]);
    send_raw(server.addr, &bytes);
    assert_alive(&mut server, "a partial ClientHello and an alert");
}

fn ws_upgrade(addr: SocketAddr) -> TcpStream {
    let sock = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    sock.set_recv_buffer_size(4096).unwrap();
    sock.connect(&addr.into()).unwrap();
    let mut s: TcpStream = sock.into();
    write!(
        s,
        "GET /ws HTTP/1.1\r\nHost: {addr}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
    )
    .unwrap();
    let mut head = Vec::new();
    let mut b = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        s.read_exact(&mut b).unwrap();
        head.push(b[0]);
    }
    assert!(
        head.starts_with(b"HTTP/1.1 101"),
        "{}",
        String::from_utf8_lossy(&head)
    );
    s
}

/// DoS. A WebSocket client (not logged in) sends pings and never reads.
/// tungstenite answers each into `Transport::wire` through `Mem::write`
/// (`push_always`, no bound); neither `--max-output` nor
/// `--max-total-output` sees that buffer, and `wants_bytes` keeps reading.
/// Measured: 1 GiB of pings from one connection = 1 GB of server RSS.
#[test]
fn websocket_ping_flood_from_a_client_that_never_reads_is_bounded() {
    let server = Server::start(&["--max-output", "1048576"]);
    let mut s = ws_upgrade(server.addr);
    let mut ping = vec![0x89, 0x80 | 125, 1, 2, 3, 4];
    ping.extend((0..125).map(|i| b'x' ^ [1, 2, 3, 4][i % 4]));
    let burst: Vec<u8> = ping
        .iter()
        .copied()
        .cycle()
        .take(ping.len() * 512)
        .collect();
    s.set_write_timeout(Some(Duration::from_secs(5))).unwrap();
    let mut sent = 0usize;
    while sent < 256 << 20 {
        if s.write_all(&burst).is_err() {
            break; // cut off: what should happen
        }
        sent += burst.len();
    }
    std::thread::sleep(Duration::from_millis(500));
    let rss = server.peak_rss_kib();
    assert!(
        rss < 64 * 1024,
        "sent {} MiB of pings without reading: server peak RSS {rss} KiB",
        sent >> 20
    );
}

/// Wrong answer. "Request heads ... must arrive within 10 s": the 10 s
/// deadline `begin_http` sets is never handed to the reactor as
/// `Input::Deadline`, so no timer fires; the client is closed silently by
/// the login timeout instead (60 s), without the 408.
#[test]
fn a_stalled_http_head_gets_408_after_10_s() {
    let server = Server::start(&[]);
    let mut s = TcpStream::connect(server.addr).unwrap();
    s.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")
        .unwrap();
    s.set_read_timeout(Some(Duration::from_secs(15))).unwrap();
    let start = Instant::now();
    let mut got = Vec::new();
    let _ = s.read_to_end(&mut got);
    let text = String::from_utf8_lossy(&got);
    assert!(
        text.starts_with("HTTP/1.1 408"),
        "after {:?}: {text:?}",
        start.elapsed()
    );
}

/// Cosmetic. "over TLS also Strict-Transport-Security": the 400/431 that
/// `parse_head` makes always pass `tls: false` to `error`.
#[test]
fn https_refusals_carry_hsts() {
    let server = Server::start(&[]);
    let mut child = Command::new("openssl")
        .args(["s_client", "-quiet", "-alpn", "http/1.1", "-connect"])
        .arg(server.addr.to_string())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("openssl");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(b"GET / HTTP/1.1\r\nno colon here\r\n\r\n")
        .unwrap();
    let out = child.wait_with_output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.starts_with("HTTP/1.1 400"), "{text:?}");
    assert!(text.contains("Strict-Transport-Security"), "{text:?}");
}

/// Wrong answer (issue: "a PROXY header from an untrusted address: ... a
/// close"). A v1 header from a peer outside --proxy-from is taken for the
/// line protocol and answered as a chat line; v2's signature starts with
/// CR LF, so it is not binary junk either.
#[test]
fn proxy_header_from_an_untrusted_peer_is_closed() {
    let server = Server::start(&["--proxy-from", "127.0.0.9/32"]);
    for header in [
        &b"PROXY TCP4 203.0.113.5 127.0.0.1 1234 59000\r\n"[..],
        &b"\r\n\r\n\0\r\nQUIT\n\x21\x11\x00\x0c\xcb\x00\x71\x05\x7f\x00\x00\x01\x00\x01\x00\x02"[..],
    ] {
        let mut c = Client::connect(server.addr);
        c.send_bytes(header);
        c.expect_closed();
    }
}

/// Opens 16 line connections through the trusted proxy naming `client`
/// (the default --max-per-ip), so the next one from it is over the limit.
fn fill_per_ip(addr: SocketAddr, client: &str) -> Vec<TcpStream> {
    (0..16)
        .map(|i| {
            let sock =
                socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
            sock.bind(&"127.0.0.9:0".parse::<SocketAddr>().unwrap().into())
                .unwrap();
            sock.connect(&addr.into()).unwrap();
            let mut s: TcpStream = sock.into();
            write!(s, "PROXY TCP4 {client} 127.0.0.1 {} 59000\r\n", 1000 + i).unwrap();
            s
        })
        .collect()
}

/// Wrong answer. An HTTP (or HTTPS, or WebSocket upgrade) request whose
/// X-Forwarded-For names an address over a per-address limit gets the
/// chat line `! too many connections from your address` as its whole
/// answer, not an HTTP response: `rehome` pushes `refusal.line()` into the
/// session's output whatever the framing (reactor/sockets.rs).
#[test]
fn an_http_client_over_a_limit_gets_an_http_answer() {
    let server = Server::start(&["--proxy-from", "127.0.0.9/32"]);
    let _held = fill_per_ip(server.addr, "203.0.113.7");
    std::thread::sleep(Duration::from_millis(500));
    let got = exchange_from(
        server.addr,
        9,
        "GET /healthz HTTP/1.1\r\nHost: x\r\nX-Forwarded-For: 203.0.113.7\r\n\r\n",
    );
    assert!(got.starts_with("HTTP/1.1 "), "{got:?}");
}

/// Wrong answer (spoofing). Behind a trusted proxy that adds its own
/// X-Forwarded-For line, a value the parser cannot read (`ip:port`, as
/// some proxies write it) makes `.or(request.forwarded_for)` fall back to
/// the client's own earlier header: the client picks its address.
/// Here the client claims 203.0.113.7 (over its limit) and is refused as
/// that address, instead of being counted as the proxy-named one.
#[test]
fn x_forwarded_for_does_not_fall_back_to_a_client_supplied_header() {
    let server = Server::start(&["--proxy-from", "127.0.0.9/32"]);
    let _held = fill_per_ip(server.addr, "203.0.113.7");
    std::thread::sleep(Duration::from_millis(500));
    let got = exchange_from(
        server.addr,
        9,
        "GET /healthz HTTP/1.1\r\nHost: x\r\nX-Forwarded-For: 203.0.113.7\r\n\
         X-Forwarded-For: 198.51.100.2:5555\r\n\r\n",
    );
    assert!(!got.contains("too many connections"), "{got:?}");
}

/// Cosmetic. The 301 to https puts the request target after the Host
/// unchecked: `GET @evil.example` gives `Location: https://chat.example@evil.example`
/// (userinfo: a redirect to evil.example); an absolute-form target gives
/// `https://chat.examplehttp://...` (http.rs, `route`).
#[test]
fn the_https_redirect_keeps_the_host() {
    use neochat::transport::http::{Context, Head, Reply, parse_head, route};
    let ctx = Context {
        tls: false,
        plaintext_ok: false,
        allowed_origins: &[],
    };
    for target in ["@evil.example/", "http://evil.example/"] {
        let text = format!("GET {target} HTTP/1.1\r\nHost: chat.example\r\n\r\n");
        let Head::Complete { request, .. } = parse_head(text.as_bytes(), false) else {
            panic!("not parsed");
        };
        let Reply::Respond(bytes) = route(&request, ctx) else {
            panic!("upgrade?");
        };
        let answer = String::from_utf8_lossy(&bytes);
        if let Some(loc) = answer.lines().find(|l| l.starts_with("Location: ")) {
            assert!(
                loc.starts_with("Location: https://chat.example/"),
                "{target}: {loc}"
            );
        }
    }
}

/// A CRLF line client (telnet, a script) whose first line,
/// sent before the greeting, merely starts with "PROXY " is closed
/// without a word ("PROXY header from an address not in --proxy-from"),
/// although it is UTF-8 text, not a header, and no proxy is configured.
/// PROTOCOL.md: "anything else ...: the line protocol below"; only binary
/// junk is closed at once, and an untrusted PROXY header is "not
/// honoured", not a reason to drop a client.
#[test]
fn crlf_client_whose_first_line_starts_with_proxy_is_served() {
    let s = Server::start(&[]);
    let mut c = Client::connect(s.addr).with_label("PROXY-ish CRLF client");
    c.send("PROXY please\r\n");
    c.expect_welcome();
    // The line itself is an answer to the choice prompt like any other.
    let line = c.line_within(Duration::from_secs(5));
    assert!(
        line.starts_with('!'),
        "expected an error line, got {line:?}"
    );
}

/// Same for a LF client whose first bytes begin with "PROXY "
/// and run past 107 bytes without a CRLF (a pasted block of lines): the
/// v1 parser calls it Invalid and the connection is closed.
#[test]
fn lf_client_pasting_lines_after_proxy_word_is_served() {
    let s = Server::start(&[]);
    let mut c = Client::connect(s.addr).with_label("pasting LF client");
    let mut paste = String::from("PROXY is what I typed\n");
    while paste.len() < 120 {
        paste.push_str("more text\n");
    }
    c.send(&paste);
    c.expect_welcome();
}
