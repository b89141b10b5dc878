//! Rooms over real sockets: joining, talking in a room, `/to`, `/part`,
//! `/rooms`, and the history a `/join` shows (PROTOCOL.md "Rooms").

use crate::util::*;

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

/// Lines after the login's online line that are history, as delivered.
#[track_caller]
fn catch_up(c: &mut Client) -> Vec<String> {
    c.lines_until_quiet(QUIET)
}

/// Logs `name` in on a client that sees history; returns it with every
/// line after `* logged in as` (the online line included).
#[track_caller]
fn login_seeing(addr: std::net::SocketAddr, name: &str) -> (Client, Vec<String>) {
    enter_seeing(addr, name, false, QUIET)
}

fn shown(lines: &[String]) -> Vec<&str> {
    lines
        .iter()
        .map(|l| {
            if l.starts_with('~') {
                history_line(l)
            } else {
                l.as_str()
            }
        })
        .collect()
}

#[test]
fn a_returning_user_gets_what_was_said_while_away_and_nothing_twice() {
    let s = Server::start(&[]);
    let mut alice = register(s.addr, "alice", &pw("alice"));
    let mut bob = join(s.addr, "bob", &mut [&mut alice]);
    bob.send("/join #rust\n");
    bob.expect("#rust * online (1): bob");
    alice.send("/join #rust\n");
    alice.expect("#rust * online (2): alice, bob");
    bob.expect("#rust * alice joined");
    bob.quit();
    alice.expect("* bob left");
    // (#rust is alice's current room now.)
    alice.send("/to #lobby lobby while away\nrust while away\n/msg bob private while away\n");
    alice.expect("* bob is offline; they will get it when they log in");
    let (mut bob, lines) = login_seeing(s.addr, "bob");
    assert_eq!(
        shown(&lines),
        [
            "* online (2): alice, bob",
            "alice: lobby while away",
            "#rust * online (2): alice, bob",
            "#rust alice: rust while away",
            "@alice: private while away",
        ]
    );
    assert!(lines[1].starts_with('~') && lines[3].starts_with('~') && lines[4].starts_with('~'));
    alice.expect("* bob joined");
    bob.quit();
    alice.expect("* bob left");
    let (_, lines) = login_seeing(s.addr, "bob");
    assert_eq!(
        lines,
        ["* online (2): alice, bob", "#rust * online (2): alice, bob"],
        "nothing twice"
    );
}

#[test]
fn history_rooms_and_offline_messages_survive_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("chat.db");
    let server = Server::start_with_db(&db, &[]);
    let mut alice = register(server.addr, "alice", &pw("alice"));
    create_account(server.addr, "bob", &pw("bob"));
    alice.expect("* bob joined");
    alice.expect("* bob left");
    alice.send("/join #rust\n");
    alice.expect("#rust * online (1): alice");
    alice.send("/topic all things rust\n");
    alice.expect("#rust * topic: all things rust (set by alice)");
    alice.send("kept\n/msg bob for later\n");
    alice.expect("* bob is offline; they will get it when they log in");
    server.sigterm();
    alice.expect(SHUTTING_DOWN);
    let mut server = server;
    assert!(
        server
            .wait_exit(std::time::Duration::from_secs(10))
            .is_some()
    );
    drop(server);

    let server = Server::start_with_db(&db, &[]);
    let (mut bob, lines) = login_seeing(server.addr, "bob");
    assert_eq!(
        shown(&lines),
        ["* online (1): bob", "@alice: for later"],
        "offline message kept"
    );
    bob.send("/rooms\n");
    bob.expect("* rooms (2): #lobby (1 online), #rust (0 online, 1 members)");
    let (mut alice, lines) = login_seeing(server.addr, "alice");
    assert_eq!(
        shown(&lines),
        [
            "* online (2): alice, bob",
            "#rust * online (1): alice",
            "#rust * topic: all things rust",
        ],
        "membership and topic kept, nothing missed"
    );
    bob.expect("* alice joined");
    alice.send("/history #rust 5\n");
    assert_eq!(history_line(&alice.line()), "#rust alice: kept");
    alice.expect("* end of history");
    alice.send("/history @bob\n");
    assert_eq!(history_line(&alice.line()), "-> @bob: for later");
    alice.expect("* end of history");
}

#[test]
fn sigkill_loses_at_most_the_last_second() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("chat.db");
    let mut server = Server::start_with_db(&db, &["--rate", "off"]);
    let mut alice = register(server.addr, "alice", &pw("alice"));
    let mut bob = join(server.addr, "bob", &mut [&mut alice]);
    for i in 0..100 {
        alice.send(&format!("line {i}\n"));
    }
    for i in 0..100 {
        bob.expect(&format!("alice: line {i}"));
    }
    // Messages are on disk within a second of being sent (a few times that
    // on a loaded machine's disk): read the database beside the server, as
    // the restart will, until all are there.
    let reader =
        rusqlite::Connection::open_with_flags(&db, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)
            .expect("open the database beside the server");
    let t0 = std::time::Instant::now();
    loop {
        let stored: i64 = reader
            .query_row(
                "SELECT count(*) FROM messages WHERE sender = 'alice'",
                [],
                |r| r.get(0),
            )
            .unwrap_or(0);
        if stored >= 100 {
            break;
        }
        assert!(
            t0.elapsed() < std::time::Duration::from_secs(10),
            "only {stored} of 100 messages on disk after 10 s"
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    println!(
        "all 100 on disk {:?} after the last was heard",
        t0.elapsed()
    );
    drop(reader);
    server.kill();
    drop(server);
    let server = Server::start_with_db(&db, &[]);
    let mut carol = register(server.addr, "carol", &pw("carol"));
    // (Its first login's last ten go by.)
    carol.quiet();
    let mut carol = carol.with_history();
    carol.send("/history 200\n");
    let lines = catch_up(&mut carol);
    let got: Vec<&str> = shown(&lines);
    let want: Vec<String> = (0..100).map(|i| format!("alice: line {i}")).collect();
    assert_eq!(got[..100], want[..], "{got:?}");
    assert_eq!(got[100], "* end of history");
}

#[test]
fn an_account_is_online_from_four_connections_and_they_see_each_other() {
    let s = Server::start(&[]);
    let mut alice = register(s.addr, "alice", &pw("alice"));
    let mut laptop = join(s.addr, "bob", &mut [&mut alice]);
    let mut phone = login(s.addr, "bob", &pw("bob"));
    alice.quiet();
    phone.send("from the phone\n");
    alice.expect("bob: from the phone");
    laptop.expect("bob: from the phone");
    phone.send("/msg alice psst\n");
    alice.expect("@bob: psst");
    laptop.expect("-> @alice: psst");
    phone.quiet();
    let _third = login(s.addr, "bob", &pw("bob"));
    let _fourth = login(s.addr, "bob", &pw("bob"));
    let _fifth = login(s.addr, "bob", &pw("bob"));
    laptop.expect(TAKEN_OVER);
    laptop.expect_closed();
    phone.quit();
    alice.quiet();
    alice.send("/who\n");
    alice.expect("* online (2): alice, bob");
}
