//! Chatting: messages, commands, leaving, takeover and ordering.

use crate::util::*;

/// alice, bob and carol, all chatting, with every joined line consumed.
fn trio(s: &Server) -> (Client, Client, Client) {
    let mut alice = register(s.addr, "alice", &pw("alice"));
    let mut bob = join(s.addr, "bob", &mut [&mut alice]);
    let carol = join(s.addr, "carol", &mut [&mut alice, &mut bob]);
    (alice, bob, carol)
}

#[test]
fn message_reaches_everybody_else_without_echo() {
    let s = Server::start(&[]);
    let (mut alice, mut bob, mut carol) = trio(&s);
    alice.send("hello\n");
    bob.expect("alice: hello");
    carol.expect("alice: hello");
    alice.quiet();
    bob.send("hi alice\n");
    alice.expect("bob: hi alice");
    carol.expect("bob: hi alice");
    bob.quiet();
}

#[test]
fn text_is_delivered_exactly_as_typed() {
    let s = Server::start(&[]);
    let (mut alice, mut bob, _carol) = trio(&s);
    for text in [
        "  leading and trailing  ",
        "unicode: ü 日本 🎉",
        "? not a prompt",
        "! not an error",
        "* not a notice",
        "@bob: not private",
        "a / b",
        " /who",
    ] {
        alice.send(&format!("{text}\n"));
        bob.expect(&format!("alice: {text}"));
    }
    alice.quiet();
}

#[test]
fn empty_and_blank_lines_are_ignored() {
    let s = Server::start(&[]);
    let (mut alice, mut bob, mut carol) = trio(&s);
    alice.send("\n   \n\t\n \t \r\n\n");
    alice.send("after\n");
    bob.expect("alice: after");
    carol.expect("alice: after");
    alice.quiet();
}

#[test]
fn double_slash_sends_literal_slash() {
    let s = Server::start(&[]);
    let (mut alice, mut bob, mut carol) = trio(&s);
    alice.send("//text\n");
    bob.expect("alice: /text");
    carol.expect("alice: /text");
    alice.send("//msg bob not a command\n");
    bob.expect("alice: /msg bob not a command");
    carol.expect("alice: /msg bob not a command");
    alice.send("///\n");
    bob.expect("alice: //");
    alice.quiet();
}

#[test]
fn private_message() {
    let s = Server::start(&[]);
    let (mut alice, mut bob, mut carol) = trio(&s);
    alice.send("/msg bob hi there\n");
    bob.expect("@alice: hi there");
    alice.send("/msg BOB case does not matter\n");
    bob.expect("@alice: case does not matter");
    alice.send("/MSG Carol also for commands\n");
    carol.expect("@alice: also for commands");
    alice.quiet();
    bob.quiet();
    carol.quiet();
}

#[test]
fn private_message_errors() {
    let s = Server::start(&[]);
    create_account(s.addr, "dave", &pw("dave"));
    let (mut alice, mut bob, mut carol) = trio(&s);
    alice.send("/msg nobody x\n");
    alice.expect("! no such user nobody");
    alice.send("/msg dave are you there\n");
    alice.expect("* dave is offline; they will get it when they log in");
    alice.send("/msg\n");
    alice.expect("! usage: /msg <user> <text>");
    alice.send("/msg bob\n");
    alice.expect("! usage: /msg <user> <text>");
    bob.quiet();
    carol.quiet();
}

#[test]
fn me_action() {
    let s = Server::start(&[]);
    let (mut alice, mut bob, mut carol) = trio(&s);
    alice.send("/me waves\n");
    bob.expect("* alice waves");
    carol.expect("* alice waves");
    alice.send("/ME waves again\n");
    bob.expect("* alice waves again");
    carol.expect("* alice waves again");
    alice.quiet();
}

#[test]
fn who_command_any_case() {
    let s = Server::start(&[]);
    let (mut alice, mut bob, mut carol) = trio(&s);
    for cmd in ["/who", "/WHO", "/Who"] {
        alice.send(&format!("{cmd}\n"));
        alice.expect("* online (3): alice, bob, carol");
    }
    bob.quiet();
    carol.quiet();
}

#[test]
fn help_lists_commands() {
    let s = Server::start(&[]);
    let (mut alice, mut bob, _carol) = trio(&s);
    alice.send("/help\n");
    let first = alice.line();
    assert!(first.starts_with("* "), "help line {first:?}");
    let mut lines = vec![first];
    lines.extend(alice.sync());
    for l in &lines {
        assert!(l.starts_with("* "), "help line {l:?} in {lines:?}");
    }
    let all = lines.join("\n");
    for cmd in ["/msg", "/me", "/who", "/help", "/quit"] {
        assert!(all.contains(cmd), "/help does not mention {cmd}: {lines:?}");
    }
    bob.quiet();
    alice.send("/HELP\n");
    assert_eq!(alice.sync(), lines);
}

#[test]
fn unknown_command() {
    let s = Server::start(&[]);
    let (mut alice, mut bob, _carol) = trio(&s);
    alice.send("/frob x\n");
    alice.expect("! unknown command /frob; try /help");
    alice.send("/frob\n");
    alice.expect("! unknown command /frob; try /help");
    alice.send("/whoami\n");
    alice.expect("! unknown command /whoami; try /help");
    bob.quiet();
}

#[test]
fn quit_says_bye_and_ignores_the_rest() {
    let s = Server::start(&[]);
    let (mut alice, mut bob, mut carol) = trio(&s);
    alice.send("/quit\nafter quit\n/me should not\n");
    alice.expect("* bye");
    alice.expect_closed();
    bob.expect("* alice left");
    carol.expect("* alice left");
    bob.quiet();
    bob.send("/who\n");
    bob.expect("* online (2): bob, carol");
    carol.quiet();
}

#[test]
fn quit_command_any_case() {
    let s = Server::start(&[]);
    let mut alice = register(s.addr, "alice", &pw("alice"));
    let mut bob = join(s.addr, "bob", &mut [&mut alice]);
    bob.send("/QUIT\n");
    bob.expect("* bye");
    bob.expect_closed();
    alice.expect("* bob left");
}

#[test]
fn disconnect_while_chatting_announces_left() {
    let s = Server::start(&[]);
    let (alice, mut bob, mut carol) = trio(&s);
    drop(alice);
    bob.expect("* alice left");
    carol.expect("* alice left");
    bob.send("/who\n");
    bob.expect("* online (2): bob, carol");
}

#[test]
fn login_takes_over_older_connection() {
    // Version 1's rule: one connection per account.
    let s = Server::start(&["--sessions-per-account", "1"]);
    let mut old = register(s.addr, "alice", &pw("alice"));
    let mut bob = join(s.addr, "bob", &mut [&mut old]);

    // A failed login does not disturb the session.
    let mut new = Client::connect_welcomed(s.addr).with_label("alice (new)");
    new.login_fails("alice", "wrong-password");
    old.quiet();

    new.send("L\nALICE\n");
    new.expect(USERNAME);
    new.expect(PASSWORD);
    new.send(&format!("{}\n", pw("alice")));
    new.expect("* logged in as alice");
    new.expect("* online (2): alice, bob");
    old.expect(TAKEN_OVER);
    old.expect_closed();
    bob.quiet();
    new.send("back again\n");
    bob.expect("alice: back again");
    bob.send("/who\n");
    bob.expect("* online (2): alice, bob");
    bob.send("/msg alice private\n");
    new.expect("@bob: private");
}

#[test]
fn messages_arrive_in_order() {
    let s = Server::start(&["--rate", "off"]);
    let (mut alice, mut bob, mut carol) = trio(&s);
    for batch in 0..4 {
        let text: String = (batch * 50..(batch + 1) * 50)
            .map(|i| format!("message {i}\n"))
            .collect();
        alice.send(&text);
    }
    for i in 0..200 {
        bob.expect(&format!("alice: message {i}"));
    }
    for i in 0..200 {
        carol.expect(&format!("alice: message {i}"));
    }
    alice.quiet();
}
