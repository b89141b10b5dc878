//! Rooms over real sockets: joining, talking in a room, `/to`, `/part`,
//! `/rooms`, and the history a `/join` shows (PROTOCOL.md "Rooms").

use crate::util::*;

/// A history line's time and the line as delivered.
#[track_caller]
fn history_line(line: &str) -> &str {
    let rest = line
        .strip_prefix('~')
        .unwrap_or_else(|| panic!("not a history line: {line:?}"));
    let (time, line) = rest.split_once(' ').expect("a time, a space, a line");
    assert_eq!(time.len(), "2026-12-01T10:38:05Z".len(), "{time}");
    assert!(time.ends_with('Z') && time.as_bytes()[10] == b'T', "{time}");
    line
}

#[test]
fn members_of_a_room_hear_it_and_nobody_else_does() {
    let s = Server::start(&[]);
    let mut alice = register(s.addr, "alice", &pw("alice"));
    let mut bob = join(s.addr, "bob", &mut [&mut alice]);
    let mut carol = join(s.addr, "carol", &mut [&mut alice, &mut bob]);
    alice.send("/join #Rust\n");
    alice.expect("#rust * online (1): alice");
    bob.send("/join #rust\n");
    bob.expect("#rust * online (2): alice, bob");
    alice.expect("#rust * bob joined");
    alice.send("hi rust\n");
    bob.expect("#rust alice: hi rust");
    bob.send("/join #lobby\n");
    bob.expect("* talking in #lobby");
    bob.send("/to #rust aside\n");
    alice.expect("#rust bob: aside");
    bob.send("in the lobby\n");
    alice.expect("bob: in the lobby");
    carol.expect("bob: in the lobby");
    carol.send("/rooms\n");
    carol.expect("* rooms (2): #lobby (3 online), #rust (2 online, 2 members)");
    carol.send("/to #rust let me in\n");
    carol.expect("! you are not in #rust");
    alice.send("/part\n");
    alice.expect("#rust * bye");
    bob.expect("#rust * alice left");
    carol.quiet();
}

#[test]
fn joining_shows_the_last_ten_messages_as_history() {
    let s = Server::start(&[]);
    let mut alice = register(s.addr, "alice", &pw("alice"));
    alice.send("/join #rust\n");
    alice.expect("#rust * online (1): alice");
    for i in 1..=12 {
        alice.send(&format!("m{i}\n"));
    }
    let mut bob = register(s.addr, "bob", &pw("bob")).with_history();
    alice.expect("* bob joined");
    bob.send("/join #rust\n");
    bob.expect("#rust * online (2): alice, bob");
    for i in 3..=12 {
        assert_eq!(history_line(&bob.line()), format!("#rust alice: m{i}"));
    }
    bob.send("/history 2\n");
    assert_eq!(history_line(&bob.line()), "#rust alice: m11");
    assert_eq!(history_line(&bob.line()), "#rust alice: m12");
    bob.expect("* end of history");
    alice.expect("#rust * bob joined");
}
