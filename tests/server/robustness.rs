//! Robustness: what a closing or vanishing client must not cost others.

use std::io::Read;
use std::net::{SocketAddr, TcpStream};
use std::thread;
use std::time::Duration;

use crate::util::*;

/// A client whose receive buffer is tiny, so that what the server sends
/// piles up in the server's own send queue.
fn small_window_client(addr: SocketAddr) -> Client {
    use socket2::{Domain, Socket, Type};
    let socket = Socket::new(Domain::IPV4, Type::STREAM, None).expect("socket");
    socket.set_recv_buffer_size(4096).expect("SO_RCVBUF");
    socket.connect(&addr.into()).expect("connect");
    Client::from_stream(TcpStream::from(socket)).with_label("slowreader")
}

/// `/quit` followed by input the server will never read: closing a socket
/// with unread input makes the kernel send a reset and throw away whatever
/// it has not transmitted yet, which would lose the user's last lines. The
/// server must finish sending (FIN after the data) and linger instead.
#[test]
fn last_lines_survive_unread_input_after_quit() {
    let s = Server::start(&["--rate", "off"]);
    let mut carol = small_window_client(s.addr);
    carol.expect_welcome();
    carol.register_here("carol", &pw("carol"));
    let mut alice = join(s.addr, "alice", &mut [&mut carol]);
    // ~400 KB for carol, far more than her window: most of it waits in the
    // server's send queue.
    let big = "m".repeat(4000);
    let burst: String = (0..100).map(|i| format!("{i:03} {big}\n")).collect();
    alice.send(&burst);
    // Let the server move it all into its kernel send queue.
    thread::sleep(Duration::from_millis(300));
    let mut tail = b"/quit\n".to_vec();
    tail.extend(std::iter::repeat_n(b'j', 200_000));
    carol.send_bytes(&tail);
    thread::sleep(Duration::from_millis(300));
    for i in 0..100 {
        carol.expect(&format!("alice: {i:03} {big}"));
    }
    carol.expect("* bye");
    carol.expect_closed();
    alice.expect("* carol left");
}

/// Login checks of clients that reset their connection are dropped, not run:
/// otherwise a burst of cheap abandoned logins keeps the workers busy with
/// bcrypt for nobody while real users wait. The server logs (at debug) each
/// check it drops; counting them, not timing, shows it.
#[test]
fn abandoned_login_checks_are_not_run() {
    // One worker, slow enough (about a second a hash) to be busy with the
    // first check while the other 39 connections come and go.
    let s = Server::start_with_debug_log(&["--workers", "1", "--bcrypt-cost", "13"]);
    // Nobody has an account: each check verifies against the dummy hash,
    // at the server's cost.
    for _ in 0..40 {
        let mut c = Client::connect(s.addr);
        // Speaking first: no 0.3 s wait for the greeting, so the 40 come
        // and go faster than the worker hashes.
        c.send("L\nmallory\nnot-a-password\n");
        c.expect_welcome();
        // The prompts go out after the job is queued: then vanish.
        c.expect("? username");
        c.expect("? password");
        c.reset();
    }
    let mut last = Client::connect(s.addr).with_label("last");
    last.expect_welcome();
    last.send("L\nmallory\nnot-a-password\n");
    last.expect("? username");
    last.expect("? password");
    // Without cancellation this takes 40 hashes; the count below, not this
    // wait, is what tells.
    let got = last.line_within(Duration::from_secs(90));
    assert_eq!(got, WRONG);
    let log = s.output();
    let dropped = log.matches("password check dropped unrun").count();
    // At most the check the worker had already started (and one more if a
    // reset was slow to arrive) ran.
    assert!(
        dropped >= 38,
        "only {dropped} of 40 abandoned checks dropped:\n{log}"
    );
    assert!(!log.contains("panicked"), "{log}");
}

#[test]
fn out_of_range_limits_are_usage_errors() {
    for args in [
        ["--login-timeout", "86401"],
        ["--login-timeout", "18446744073709551615"],
        ["--max-clients", "1000001"],
        ["--max-clients", "18446744073709551615"],
    ] {
        let dir = tempfile::tempdir().unwrap();
        let all = server_args(&dir.path().join("db"), &args);
        let all: Vec<&str> = all.iter().map(String::as_str).collect();
        let (status, output) = run_binary(&all, Duration::from_secs(10));
        assert!(
            status.is_some_and(|s| !s.success()) && !output.contains("listening on"),
            "{args:?}: {status:?} {output}"
        );
    }
    // The largest allowed timeout works (no overflow computing deadlines).
    let s = Server::start(&["--login-timeout", "86400"]);
    let mut c = Client::connect(s.addr);
    c.expect_welcome();
    let mut buf = [0u8; 1];
    let mut raw = TcpStream::connect(s.addr).expect("connect");
    raw.set_read_timeout(Some(READ_TIMEOUT)).unwrap();
    assert!(raw.read(&mut buf).is_ok_and(|n| n == 1));
}
