//! Self-tests of the harness against a fake peer: each assertion helper the
//! suite relies on must really fail when the server misbehaves.

use std::io::Write;
use std::net::{SocketAddr, TcpListener};
use std::thread;
use std::time::Duration;

use crate::util::*;

/// A fake server that writes `bytes` to its first connection, then closes
/// it (`close`) or holds it open for a while.
fn fake_peer(bytes: &'static [u8], close: bool) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    thread::spawn(move || {
        let (mut stream, _) = listener.accept().unwrap();
        stream.write_all(bytes).unwrap();
        if !close {
            thread::sleep(Duration::from_secs(3));
        }
    });
    addr
}

#[test]
fn expect_accepts_the_exact_line() {
    let mut c = Client::connect(fake_peer(b"hello\nbye\n", true));
    c.expect("hello");
    c.expect("bye");
    c.expect_closed();
}

#[test]
#[should_panic(expected = "unexpected line")]
fn expect_rejects_another_line() {
    let mut c = Client::connect(fake_peer(b"hello\n", true));
    c.expect("hell");
}

#[test]
#[should_panic(expected = "unexpected line")]
fn expect_sees_a_stray_cr() {
    let mut c = Client::connect(fake_peer(b"hello\r\n", true));
    c.expect("hello");
}

#[test]
#[should_panic(expected = "unterminated line")]
fn line_rejects_an_unterminated_line() {
    let mut c = Client::connect(fake_peer(b"hello", true));
    c.line();
}

#[test]
#[should_panic(expected = "expected silence")]
fn quiet_fails_when_a_line_arrives() {
    let mut c = Client::connect(fake_peer(b"surprise\n", false));
    c.quiet();
}

#[test]
#[should_panic(expected = "the connection closed")]
fn quiet_fails_on_close() {
    let mut c = Client::connect(fake_peer(b"", true));
    c.quiet();
}

#[test]
#[should_panic(expected = "expected the connection to close")]
fn expect_closed_fails_on_data() {
    let mut c = Client::connect(fake_peer(b"more\n", true));
    c.expect_closed();
}

#[test]
fn parsers() {
    assert_eq!(parse_welcome("* welcome to NeoChat (12 online)"), Some(12));
    assert_eq!(parse_welcome("* welcome to NeoChat (x online)"), None);
    assert_eq!(
        parse_online("* online (2): a, B"),
        Some(vec!["a".to_string(), "B".to_string()])
    );
    assert_eq!(parse_online("* online (3): a, B"), None);
}
