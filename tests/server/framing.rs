//! Transport and framing: CRLF, split and batched input, unterminated last
//! lines, line length, UTF-8 and control characters, in every state.

use std::time::Duration;

use crate::util::*;

#[test]
fn crlf_accepted_and_cr_not_delivered() {
    let s = Server::start(&[]);
    let mut bob = register(s.addr, "bob", &pw("bob"));
    let mut c = Client::connect_welcomed(s.addr).with_label("alice");
    c.send("R\r\n");
    c.expect(USERNAME);
    c.send("alice\r\n");
    c.expect(PASSWORD);
    c.send("password1\r\n");
    c.expect("* registered and logged in as alice");
    c.expect("* online (2): alice, bob");
    bob.expect("* alice joined");
    c.send("hi there\r\n");
    bob.expect("alice: hi there");
    c.send("/WHO\r\n");
    c.expect("* online (2): alice, bob");
    c.quit();
    bob.expect("* alice left");
    // The password was stored without the CR.
    let _again = login(s.addr, "alice", "password1");
}

#[test]
fn input_split_byte_by_byte() {
    let s = Server::start(&[]);
    let mut bob = register(s.addr, "bob", &pw("bob"));
    let mut c = Client::connect(s.addr).with_label("alice");
    c.send_slowly(b"R\nalice\npassword1\n", Duration::from_millis(3));
    c.expect_welcome();
    c.expect(USERNAME);
    c.expect(PASSWORD);
    c.expect("* registered and logged in as alice");
    c.expect("* online (2): alice, bob");
    bob.expect("* alice joined");
    // Multi-byte characters split between writes, and CR split from its LF.
    c.send_slowly("héllo wörld €\r\n".as_bytes(), Duration::from_millis(3));
    bob.expect("alice: héllo wörld €");
    c.send_slowly(b"/msg bob psst\n", Duration::from_millis(3));
    bob.expect("@alice: psst");
    c.quiet();
}

#[test]
fn many_lines_in_one_write() {
    let s = Server::start(&[]);
    let mut alice = register(s.addr, "alice", &pw("alice"));
    let mut bob = join(s.addr, "bob", &mut [&mut alice]);
    let batch: String = (0..10).map(|i| format!("line {i}\n")).collect();
    alice.send(&format!("{batch}/who\n"));
    for i in 0..10 {
        bob.expect(&format!("alice: line {i}"));
    }
    alice.expect("* online (2): alice, bob");
    alice.quiet();
    bob.quiet();
}

#[test]
fn unterminated_last_line_at_eof() {
    let s = Server::start(&[]);
    let mut alice = register(s.addr, "alice", &pw("alice"));
    let mut bob = join(s.addr, "bob", &mut [&mut alice]);
    alice.send("first\nbye-text");
    alice.shutdown_write();
    bob.expect("alice: first");
    bob.expect("alice: bye-text");
    bob.expect("* alice left");
}

#[test]
fn long_line_while_chatting() {
    let s = Server::start(&["--max-line", "16"]);
    let mut alice = register(s.addr, "alice", "password1");
    let mut bob = register(s.addr, "bob", "password2");
    alice.expect("* bob joined");

    alice.send("abcdefghijklmnopq\n"); // 17 bytes
    alice.expect("! line too long (max 16 bytes)");
    alice.send("still usable\n");
    bob.expect("alice: still usable");

    // 16 bytes, not counting CR LF or LF.
    alice.send("0123456789abcdef\r\n");
    bob.expect("alice: 0123456789abcdef");
    alice.send("fedcba9876543210\n");
    bob.expect("alice: fedcba9876543210");
    // Bytes, not characters: 8 × 2 bytes fits, 9 × 2 does not.
    alice.send(&format!("{}\n", "é".repeat(8)));
    bob.expect(&format!("alice: {}", "é".repeat(8)));
    alice.send(&format!("{}\n", "é".repeat(9)));
    alice.expect("! line too long (max 16 bytes)");
    alice.send("abcdefghijklmnopq\r\n"); // 17 bytes + CRLF
    alice.expect("! line too long (max 16 bytes)");
    alice.send("ok\n");
    bob.expect("alice: ok");
    alice.quiet();
    bob.quiet();
}

#[test]
fn long_line_before_chatting_repeats_prompt() {
    let s = Server::start(&["--max-line", "16"]);
    let too_long = "!".repeat(17);
    let mut c = Client::connect_welcomed(s.addr);
    c.send(&format!("{}\n", "R".repeat(17)));
    c.expect("! line too long (max 16 bytes)");
    c.expect(CHOICE);
    c.send("  R  \n");
    c.expect(USERNAME);
    c.send(&format!("{too_long}\n"));
    c.expect("! line too long (max 16 bytes)");
    c.expect(USERNAME);
    c.send("alice\n");
    c.expect(PASSWORD);
    c.send("seventeen-byte-pw\n");
    c.expect("! line too long (max 16 bytes)");
    c.expect(PASSWORD);
    c.send("sixteen-byte-pw!\n");
    c.expect("* registered and logged in as alice");
    c.expect("* online (1): alice");
}

#[test]
fn huge_line_with_default_limit() {
    let s = Server::start(&[]);
    let mut alice = register(s.addr, "alice", &pw("alice"));
    let mut bob = join(s.addr, "bob", &mut [&mut alice]);

    let max = "b".repeat(4096);
    alice.send(&format!("{max}\n"));
    bob.expect(&format!("alice: {max}"));
    alice.send(&format!("{max}b\n"));
    alice.expect("! line too long (max 4096 bytes)");

    let chunk = vec![b'a'; 1 << 20];
    for _ in 0..10 {
        alice.send_bytes(&chunk);
    }
    alice.send("\nstill here\n");
    alice.expect("! line too long (max 4096 bytes)");
    bob.expect("alice: still here");
    alice.quiet();
    bob.quiet();
}

/// "The server never holds much more than the limit for one pending line."
#[test]
fn huge_line_memory_stays_bounded() {
    let s = Server::start(&[]);
    let mut c = Client::connect_welcomed(s.addr);
    let before = s.peak_rss_kib();
    let chunk = vec![b'x'; 1 << 20];
    for _ in 0..64 {
        c.send_bytes(&chunk);
    }
    c.send("\n");
    c.expect("! line too long (max 4096 bytes)");
    c.expect(CHOICE);
    let after = s.peak_rss_kib();
    assert!(
        after < before + 16 * 1024,
        "server peak RSS grew from {before} KiB to {after} KiB while discarding a 64 MiB line"
    );
    c.send("R\n");
    c.expect(USERNAME);
}

const INVALID_UTF8: [&[u8]; 6] = [
    b"\xff",
    b"caf\xe9",          // Latin-1
    b"\xc0\xaf",         // overlong '/'
    b"\xed\xa0\x80",     // surrogate
    b"abc\xe2\x82",      // truncated sequence
    b"\xf4\x90\x80\x80", // above U+10FFFF
];

#[test]
fn invalid_utf8_in_every_state() {
    let s = Server::start(&["--rate", "off"]);
    let mut bob = register(s.addr, "bob", &pw("bob"));
    let mut c = Client::connect_welcomed(s.addr).with_label("alice");
    for bad in INVALID_UTF8 {
        c.send_bytes(&[bad, b"\n"].concat());
        c.expect(BAD_UTF8);
        c.expect(CHOICE);
    }
    c.send("R\n");
    c.expect(USERNAME);
    for bad in INVALID_UTF8 {
        c.send_bytes(&[b"ali", bad, b"ce\n"].concat());
        c.expect(BAD_UTF8);
        c.expect(USERNAME);
    }
    c.send("alice\n");
    c.expect(PASSWORD);
    for bad in INVALID_UTF8 {
        c.send_bytes(&[b"password", bad, b"\n"].concat());
        c.expect(BAD_UTF8);
        c.expect(PASSWORD);
    }
    c.send("password\n");
    c.expect("* registered and logged in as alice");
    c.expect("* online (2): alice, bob");
    bob.expect("* alice joined");
    for bad in INVALID_UTF8 {
        c.send_bytes(&[b"msg ", bad, b"\n"].concat());
        c.expect(BAD_UTF8);
    }
    c.send("fine\n");
    bob.expect("alice: fine");
    c.quiet();
}

const CONTROL_LINES: [&str; 15] = [
    "\x1b[31mred",
    "nul\0byte",
    "del\x7f",
    "bell\x07",
    "\x08backspace",
    "vt\x0bff\x0c",
    "nel\u{85}x",
    "csi\u{9b}31m",
    "lre\u{202a}x",
    "rlo\u{202e}x",
    "lri\u{2066}x",
    "pdi\u{2069}x",
    "mid\rcr",
    "lone-cr-before-crlf\r\r",
    "\u{9f}",
];

#[test]
fn control_characters_in_every_state() {
    let s = Server::start(&["--rate", "off"]);
    let mut bob = register(s.addr, "bob", &pw("bob"));
    let mut c = Client::connect_welcomed(s.addr).with_label("alice");
    // Not even a choice hides behind a control character.
    for bad in ["R\x1b", "\x1b[0mL", "R\r\r"].iter().chain(&CONTROL_LINES) {
        c.send(&format!("{bad}\n"));
        c.expect(CONTROL);
        c.expect(CHOICE);
    }
    c.send("R\n");
    c.expect(USERNAME);
    for bad in CONTROL_LINES {
        c.send(&format!("alice{bad}\n"));
        c.expect(CONTROL);
        c.expect(USERNAME);
    }
    c.send("alice\n");
    c.expect(PASSWORD);
    for bad in CONTROL_LINES {
        c.send(&format!("password{bad}\n"));
        c.expect(CONTROL);
        c.expect(PASSWORD);
    }
    c.send("password\n");
    c.expect("* registered and logged in as alice");
    c.expect("* online (2): alice, bob");
    bob.expect("* alice joined");
    for bad in CONTROL_LINES {
        c.send(&format!("{bad}\n"));
        c.expect(CONTROL);
    }
    for bad in ["/me \x1b[2J", "/msg bob \x1b]0;pwned\x07", "//\u{202e}x"] {
        c.send(&format!("{bad}\n"));
        c.expect(CONTROL);
    }
    bob.quiet();
    c.send("clean\n");
    bob.expect("alice: clean");
    c.quiet();
}

#[test]
fn tab_is_allowed() {
    let s = Server::start(&[]);
    let mut alice = register(s.addr, "alice", &pw("alice"));
    let mut bob = join(s.addr, "bob", &mut [&mut alice]);
    alice.send("a\tb\n");
    bob.expect("alice: a\tb");
    alice.send("\tindented\n");
    bob.expect("alice: \tindented");
    alice.quiet();

    let tab_pw = "tab\tpassword";
    let mut carol = register(s.addr, "carol", tab_pw);
    alice.expect("* carol joined");
    bob.expect("* carol joined");
    carol.quit();
    alice.expect("* carol left");
    bob.expect("* carol left");
    let _carol = login(s.addr, "carol", tab_pw);
}
