//! Rules of rooms, history, catch-up, offline messages and several
//! connections per account, checked on the sans-IO core: sessions and the
//! hub, with the store thread played in memory (`session::tests::World`).

use super::hub::HubConfig;
use super::session::SessionConfig;
use super::testkit::{World, hub_config};

const T: &str = "2026-12-01T10:38:05Z";

fn config() -> SessionConfig {
    SessionConfig {
        max_line: 4096,
        rate: None,
        rate_bytes: None,
    }
}

fn world(hub: HubConfig) -> World {
    World::with_hub(config(), hub)
}

impl World {
    /// Logs `name` (registered by `chatter`) in on a new connection,
    /// returning it and what it was sent after the prompts.
    fn login(&mut self, name: &str) -> (usize, String) {
        let i = self.connect();
        self.take(i);
        self.send(i, format!("L\n{name}\npassword-{name}\n").as_bytes());
        self.answer(i);
        let out = self.take(i);
        let out = out
            .strip_prefix("? username\n? password\n")
            .unwrap_or(&out)
            .to_owned();
        (i, out)
    }

    fn say(&mut self, i: usize, line: &str) {
        self.send(i, format!("{line}\n").as_bytes());
    }
}

#[test]
fn a_room_is_joined_talked_in_and_left_and_only_its_members_hear_it() {
    let mut w = world(hub_config());
    let a = w.chatter("alice");
    let b = w.chatter("bob");
    let c = w.chatter("carol");
    for i in [a, b, c] {
        w.take(i);
    }
    w.say(a, "/join #Rust");
    assert_eq!(w.take(a), "#rust * online (1): alice\n");
    assert_eq!(w.take(b), "");
    w.say(b, "/join #rust");
    assert_eq!(w.take(b), "#rust * online (2): alice, bob\n");
    assert_eq!(w.take(a), "#rust * bob joined\n");
    w.say(a, "hi rust");
    assert_eq!(w.take(b), "#rust alice: hi rust\n");
    assert_eq!(w.take(c), "", "not a member");
    w.say(a, "/me waves");
    assert_eq!(w.take(b), "#rust * alice waves\n");
    // The lobby is still there, with no prefix.
    w.say(b, "/join #lobby");
    assert_eq!(w.take(b), "* talking in #lobby\n");
    w.say(b, "hi all");
    assert_eq!(w.take(a), "bob: hi all\n");
    assert_eq!(w.take(c), "bob: hi all\n");
    w.say(b, "/to #rust from the side");
    assert_eq!(w.take(a), "#rust bob: from the side\n");
    assert_eq!(w.take(c), "");
    w.say(b, "/join #rust");
    assert_eq!(w.take(b), "* talking in #rust\n");
    w.say(c, "/to #rust sneaky");
    assert_eq!(w.take(c), "! you are not in #rust\n");
    w.say(a, "/part");
    assert_eq!(w.take(a), "#rust * bye\n");
    assert_eq!(w.take(b), "#rust * alice left\n");
    w.say(a, "back in the lobby");
    assert_eq!(w.take(c), "alice: back in the lobby\n");
    assert_eq!(w.take(b), "alice: back in the lobby\n");
    w.say(a, "/part #lobby");
    assert_eq!(w.take(a), "! you cannot leave the lobby\n");
    w.say(a, "/part #rust");
    assert_eq!(w.take(a), "! you are not in #rust\n");
}

#[test]
fn bad_room_names_and_usage_get_clear_errors() {
    let mut w = world(hub_config());
    let a = w.chatter("alice");
    w.take(a);
    let bad = "! invalid room name: '#' and 1-32 letters, digits, '_', '-' or '.'\n";
    for line in ["/join rust", "/join #", "/join #a/b", "/join #été"] {
        w.say(a, line);
        assert_eq!(w.take(a), bad, "{line}");
    }
    w.say(a, &format!("/join #{}", "x".repeat(33)));
    assert_eq!(w.take(a), bad);
    w.say(a, "/join");
    assert_eq!(w.take(a), "! usage: /join #room\n");
    w.say(a, "/to #rust");
    assert_eq!(w.take(a), "! usage: /to #room <text>\n");
    w.say(a, "/who #nowhere");
    assert_eq!(w.take(a), "! no such room #nowhere\n");
}

#[test]
fn rooms_are_capped_and_an_account_owns_at_most_ten() {
    let mut w = world(HubConfig {
        max_rooms: 12,
        ..hub_config()
    });
    let a = w.chatter("alice");
    let b = w.chatter("bob");
    w.take(a);
    for i in 0..10 {
        w.say(a, &format!("/join #a{i}"));
    }
    w.take(a);
    w.say(a, "/join #a10");
    assert_eq!(w.take(a), "! you own too many rooms (max 10)\n");
    w.say(b, "/join #b1");
    w.say(b, "/join #b2");
    w.take(b);
    w.say(b, "/join #b3");
    assert_eq!(
        w.take(b),
        "! too many rooms (max 12): join an existing one\n"
    );
    // Joining an existing one is always possible.
    w.say(b, "/join #a3");
    assert_eq!(w.take(b), "#a3 * online (2): alice, bob\n");
}

#[test]
fn the_last_member_leaving_deletes_the_room_and_rooms_lists_them() {
    let mut w = world(hub_config());
    let a = w.chatter("alice");
    let b = w.chatter("bob");
    w.say(a, "/join #rust");
    w.say(a, "one");
    w.say(b, "/join #go");
    w.take(a);
    w.take(b);
    w.say(b, "/rooms");
    assert_eq!(
        w.take(b),
        "* rooms (3): #lobby (2 online), #go (1 online, 1 members), #rust (1 online, 1 members)\n"
    );
    w.say(a, "/part");
    w.take(a);
    assert!(w.store.ops.iter().any(|o| o.contains("DeleteRoom")));
    w.say(b, "/rooms");
    assert_eq!(
        w.take(b),
        "* rooms (2): #lobby (2 online), #go (1 online, 1 members)\n"
    );
    // A new #rust starts afresh: no history of the old one.
    w.say(b, "/join #rust");
    assert_eq!(w.take(b), "#rust * online (1): bob\n");
}

#[test]
fn joining_shows_the_topic_and_the_last_ten_messages() {
    let mut w = world(hub_config());
    let a = w.chatter("alice");
    let b = w.chatter("bob");
    w.say(a, "/join #rust");
    w.say(a, "/topic borrow checking");
    for i in 1..=12 {
        w.say(a, &format!("m{i}"));
    }
    w.take(a);
    w.take(b);
    w.say(b, "/join #rust");
    let mut expected =
        String::from("#rust * online (2): alice, bob\n#rust * topic: borrow checking\n");
    for i in 3..=12 {
        expected.push_str(&format!("~{T} #rust alice: m{i}\n"));
    }
    assert_eq!(w.take(b), expected);
    w.say(b, "/topic mine now");
    assert_eq!(w.take(b), "! you are not an operator of #rust\n");
    w.say(b, "/topic");
    assert_eq!(w.take(b), "#rust * topic: borrow checking\n");
    w.say(b, "/topic #lobby lobby things");
    assert_eq!(w.take(b), "! only server operators can do that\n");
    w.take(a);
    w.say(a, "/topic #rust new topic");
    assert_eq!(w.take(b), "#rust * topic: new topic (set by alice)\n");
    assert_eq!(w.take(a), "#rust * topic: new topic (set by alice)\n");
}

#[test]
fn a_first_login_gets_the_last_ten_and_a_return_gets_what_it_missed() {
    let mut w = world(hub_config());
    let a = w.chatter("alice");
    for i in 1..=12 {
        w.say(a, &format!("m{i}"));
    }
    w.take(a);
    let b = w.connect();
    w.take(b);
    w.send(b, b"R\nbob\npassword-bob\n");
    w.answer(b);
    let out = w.take(b);
    assert!(out.contains("* online (2): alice, bob\n"), "{out}");
    assert!(out.ends_with(&format!("~{T} alice: m12\n")), "{out}");
    assert_eq!(out.matches('~').count(), 10, "{out}");
    w.close(b);
    w.say(a, "while you were away");
    w.say(a, "/me waves");
    w.take(a);
    let (b, out) = w.login("bob");
    assert_eq!(
        out,
        format!(
            "* logged in as bob\n* online (2): alice, bob\n\
             ~{T} alice: while you were away\n~{T} * alice waves\n"
        )
    );
    assert_eq!(w.take(a), "* bob joined\n");
    // Nothing more next time.
    w.close(b);
    let (_, out) = w.login("bob");
    assert_eq!(out, "* logged in as bob\n* online (2): alice, bob\n");
}

#[test]
fn more_than_fifty_missed_are_announced_and_the_last_fifty_shown() {
    let mut w = world(hub_config());
    let a = w.chatter("alice");
    let b = w.chatter("bob");
    w.close(b);
    for i in 1..=123 {
        w.say(a, &format!("m{i}"));
    }
    let (_, out) = w.login("bob");
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(
        lines[2],
        "* 123 messages since you left; the last 50 follow (/history for more)"
    );
    assert_eq!(lines[3], format!("~{T} alice: m74"));
    assert_eq!(lines.last().copied(), Some(&*format!("~{T} alice: m123")));
    assert_eq!(lines.len(), 3 + 50);
}

#[test]
fn membership_is_restored_silently_with_what_was_missed_in_each_room() {
    let mut w = world(hub_config());
    let a = w.chatter("alice");
    let b = w.chatter("bob");
    w.say(b, "/join #zed");
    w.say(b, "/join #rust");
    w.say(b, "/topic all things rust");
    w.say(a, "/join #rust");
    w.take(a);
    w.close(b);
    assert_eq!(
        w.take(a),
        "* bob left\n",
        "offline is told in the lobby only"
    );
    w.say(a, "/to #rust missed this");
    w.say(a, "/to #lobby and this");
    let (_, out) = w.login("bob");
    assert_eq!(
        out,
        format!(
            "* logged in as bob\n* online (2): alice, bob\n~{T} alice: and this\n\
             #rust * online (2): alice, bob\n#rust * topic: all things rust\n\
             ~{T} #rust alice: missed this\n#zed * online (1): bob\n"
        )
    );
    assert_eq!(w.take(a), "* bob joined\n", "no #rust joined line");
}

#[test]
fn offline_private_messages_are_stored_and_delivered_at_the_next_login() {
    let mut w = world(hub_config());
    let a = w.chatter("alice");
    let b = w.chatter("Bob");
    w.close(b);
    w.take(a);
    w.say(a, "/msg bob are you there?");
    assert_eq!(
        w.take(a),
        "* Bob is offline; they will get it when they log in\n"
    );
    w.say(a, "/msg nobody hello");
    assert_eq!(w.take(a), "! no such user nobody\n");
    let (b, out) = w.login("Bob");
    assert!(
        out.ends_with(&format!("~{T} @alice: are you there?\n")),
        "{out}"
    );
    // Delivered once only.
    w.close(b);
    let (_, out) = w.login("Bob");
    assert!(!out.contains("@alice"), "{out}");
}

#[test]
fn past_two_hundred_offline_messages_the_older_are_counted() {
    let mut w = world(hub_config());
    let a = w.chatter("alice");
    let b = w.chatter("bob");
    w.close(b);
    for i in 1..=257 {
        w.say(a, &format!("/msg bob n{i}"));
    }
    let (_, out) = w.login("bob");
    let lines: Vec<&str> = out.lines().collect();
    let first = lines
        .iter()
        .position(|l| l.contains("older"))
        .expect("notice");
    assert_eq!(
        lines[first],
        "* 57 older private messages; /history @alice shows them"
    );
    assert_eq!(lines[first + 1], format!("~{T} @alice: n58"));
    assert_eq!(lines.len() - first - 1, 200);
}

#[test]
fn a_message_to_an_account_logging_in_right_now_is_not_lost() {
    let mut w = world(hub_config());
    let a = w.chatter("alice");
    let b = w.chatter("bob");
    w.close(b);
    w.take(a);
    w.eager = false;
    let b = w.connect();
    w.take(b);
    w.send(b, b"L\nbob\npassword-bob\n");
    w.answer(b);
    // The store is reading bob's state: he is not online yet.
    w.say(a, "/msg bob just in time");
    w.eager = true;
    w.settle();
    let out = w.take(b);
    assert!(out.ends_with("@alice: just in time\n"), "{out}");
    assert_eq!(out.matches("just in time").count(), 1);
    w.close(b);
    let (_, out) = w.login("bob");
    assert!(!out.contains("just in time"), "{out}");
}

#[test]
fn an_account_may_be_online_four_times_and_the_fifth_takes_over_the_oldest() {
    let mut w = world(hub_config());
    let a = w.chatter("alice");
    let b1 = w.chatter("bob");
    w.take(a);
    let (b2, out) = w.login("bob");
    assert!(out.starts_with("* logged in as bob\n* online (2): alice, bob\n"));
    assert_eq!(w.take(a), "", "the account was online already");
    // What one connection sends, the others see.
    w.say(b2, "from the phone");
    assert_eq!(w.take(a), "bob: from the phone\n");
    assert_eq!(w.take(b1), "bob: from the phone\n");
    assert_eq!(w.take(b2), "");
    w.say(b2, "/msg alice psst");
    assert_eq!(w.take(a), "@bob: psst\n");
    assert_eq!(w.take(b1), "-> @alice: psst\n");
    assert_eq!(w.take(b2), "");
    w.say(a, "/msg BOB hello both");
    assert_eq!(w.take(b1), "@alice: hello both\n");
    assert_eq!(w.take(b2), "@alice: hello both\n");
    let (b3, _) = w.login("bob");
    let (b4, _) = w.login("bob");
    assert!(!w.closed[b1]);
    let (_b5, _) = w.login("bob");
    assert!(w.closed[b1]);
    assert_eq!(w.take(b1), "! logged in from another connection\n");
    assert_eq!(w.take(a), "", "no left or joined notices");
    // Leaving is per account: only the last connection's close is told.
    for i in [b2, b3, b4] {
        w.close(i);
    }
    assert_eq!(w.take(a), "");
    w.say(a, "/who");
    assert_eq!(w.take(a), "* online (2): alice, bob\n");
}

#[test]
fn a_join_on_one_connection_is_seen_by_the_account_s_others() {
    let mut w = world(hub_config());
    let b1 = w.chatter("bob");
    let (b2, _) = w.login("bob");
    w.take(b1);
    w.say(b1, "/join #rust");
    assert_eq!(w.take(b1), "#rust * online (1): bob\n");
    assert_eq!(w.take(b2), "#rust * bob joined\n");
    let a = w.chatter("alice");
    w.take(b2);
    w.say(a, "/join #rust");
    w.say(a, "hi");
    assert_eq!(w.take(b2), "#rust * alice joined\n#rust alice: hi\n");
    // b2's current room is still the lobby.
    w.take(a);
    w.say(b2, "lobby line");
    assert_eq!(w.take(a), "bob: lobby line\n");
    assert!(w.take(b1).ends_with("bob: lobby line\n"));
    w.say(b1, "/part");
    assert_eq!(w.take(b1), "#rust * bye\n");
    assert_eq!(w.take(b2), "#rust * bye\n");
}

#[test]
fn history_reads_the_ring_or_the_store_and_checks_its_arguments() {
    let mut w = world(hub_config());
    let a = w.chatter("alice");
    let b = w.chatter("bob");
    for i in 1..=30 {
        w.say(a, &format!("m{i}"));
    }
    w.say(a, "/msg bob private one");
    w.say(b, "/msg alice private two");
    w.take(a);
    w.take(b);
    w.say(b, "/history 3");
    assert_eq!(
        w.take(b),
        format!("~{T} alice: m28\n~{T} alice: m29\n~{T} alice: m30\n* end of history\n")
    );
    w.say(b, "/history");
    assert_eq!(w.take(b).lines().count(), 21);
    w.say(b, "/history 100000");
    assert_eq!(w.take(b).lines().count(), 31, "all 30, capped at 200");
    w.say(b, "/history @Alice 5");
    assert_eq!(
        w.take(b),
        format!("~{T} @alice: private one\n~{T} -> @alice: private two\n* end of history\n")
    );
    w.say(b, "/history @nobody");
    assert_eq!(w.take(b), "! no such user nobody\n");
    for bad in ["/history 0", "/history -5", "/history ten", "/history 3 4"] {
        w.say(b, bad);
        assert_eq!(
            w.take(b),
            "! usage: /history [#room|@user] [N] (N from 1 to 200)\n",
            "{bad}"
        );
    }
    w.say(b, "/history #rust");
    assert_eq!(w.take(b), "! you are not in #rust\n");
}

#[test]
fn history_past_the_ring_is_read_by_the_store_and_input_waits_for_it() {
    use crate::store::ops::{LOBBY, Message, RoomRow, Snapshot};
    let mut w = world(hub_config());
    // After a restart the ring holds what the store gave it: here 5 of 300.
    let message = |n: u64| Message {
        id: n,
        room: Some(LOBBY.to_owned()),
        n,
        sender: "alice".to_owned(),
        recipient: None,
        at: 1_796_121_485,
        me: false,
        text: format!("m{n}"),
    };
    let lobby = RoomRow {
        name: LOBBY.to_owned(),
        count: 300,
        recent: (296..=300).map(message).collect(),
        ..RoomRow::default()
    };
    w.hub = crate::chat::hub::Hub::from_snapshot(
        hub_config(),
        &Snapshot {
            last_id: 300,
            rooms: vec![lobby],
            ..Snapshot::default()
        },
    );
    w.store.messages = (1..=300).map(|n| (message(n), false)).collect();
    let a = w.chatter("alice");
    let b = w.chatter("bob");
    w.take(a);
    w.take(b);
    w.say(b, "/history 5");
    assert_eq!(w.take(b).lines().count(), 6, "from the ring");
    w.eager = false;
    w.say(b, "/history 200\nafter");
    assert_eq!(w.take(b), "", "waiting for the store");
    assert_eq!(w.take(a), "", "the next line waits too");
    w.eager = true;
    w.settle();
    let out = w.take(b);
    assert_eq!(out.lines().count(), 201);
    assert!(out.starts_with(&format!("~{T} alice: m101\n")), "{out}");
    assert_eq!(w.take(a), "bob: after\n");
}

#[test]
fn past_quiet_presence_nobody_is_told_who_came_and_went() {
    let mut w = world(HubConfig {
        quiet_presence: Some(2),
        ..hub_config()
    });
    let a = w.chatter("alice");
    let b = w.chatter("bob");
    w.take(a);
    w.chatter("carol");
    assert_eq!(w.take(a), "", "three online: quiet");
    assert_eq!(w.take(b), "");
    w.say(a, "/who");
    assert_eq!(w.take(a), "* online (3): alice, bob, carol\n");
}

#[test]
fn the_login_s_online_line_names_a_hundred() {
    let mut w = world(HubConfig {
        quiet_presence: None,
        ..hub_config()
    });
    for i in 0..104 {
        w.chatter(&format!("u{i:03}"));
    }
    let i = w.connect();
    w.take(i);
    w.send(i, b"R\nzed\npassword-zed\n");
    w.answer(i);
    let out = w.take(i);
    let line = out
        .lines()
        .find(|l| l.starts_with("* online"))
        .expect("online line");
    assert!(line.starts_with("* online (105): u000, u001, "), "{line}");
    assert!(line.ends_with(", u099 and 5 more"), "{line}");
    w.say(i, "/who");
    assert!(w.take(i).ends_with("u103, zed\n"));
}

#[test]
fn with_history_off_nothing_is_stored_or_shown() {
    let mut w = world(HubConfig {
        history: false,
        ..hub_config()
    });
    let a = w.chatter("alice");
    w.say(a, "unrecorded");
    let b = w.chatter("bob");
    w.close(b);
    w.take(a);
    let (_, out) = w.login("bob");
    assert_eq!(out, "* logged in as bob\n* online (2): alice, bob\n");
    w.take(a);
    w.say(a, "/quit");
    let (a, _) = w.login("alice");
    w.take(a);
    w.say(a, "/history");
    assert_eq!(w.take(a), "! history is off on this server\n");
    w.say(a, "/msg carol x");
    assert_eq!(w.take(a), "! no such user carol\n");
    assert!(!w.store.ops.iter().any(|o| o.starts_with("Message")));
}

#[test]
fn parting_any_room_makes_the_lobby_current() {
    let mut w = world(hub_config());
    let a = w.chatter("alice");
    let b = w.chatter("bob");
    w.say(a, "/join #go");
    w.say(a, "/join #rust");
    w.take(a);
    w.take(b);
    // #rust is current; leaving #go still brings alice back to the lobby.
    w.say(a, "/part #go");
    assert_eq!(w.take(a), "#go * bye\n");
    w.say(a, "where am I");
    assert_eq!(w.take(b), "alice: where am I\n");
}

#[test]
fn a_topic_needs_a_member_owner_and_no_such_room_is_said() {
    let mut w = world(hub_config());
    let a = w.chatter("alice");
    w.say(a, "/join #rust");
    w.say(a, "/topic");
    w.take(a);
    w.say(a, "/topic #nowhere x");
    assert_eq!(w.take(a), "! no such room #nowhere\n");
    w.say(a, "/topic #rust");
    assert_eq!(w.take(a), "#rust * no topic\n");
    w.say(a, "/join #go");
    w.say(a, "/part #rust");
    w.take(a);
    // alice was its only member: the room went with her.
    w.say(a, "/topic #rust x");
    assert_eq!(w.take(a), "! no such room #rust\n");
}

#[test]
fn older_offline_messages_are_counted_per_sender() {
    let mut w = world(hub_config());
    let a = w.chatter("alice");
    let c = w.chatter("carol");
    let b = w.chatter("bob");
    w.close(b);
    for i in 1..=3 {
        w.say(c, &format!("/msg bob c{i}"));
    }
    for i in 1..=210 {
        w.say(a, &format!("/msg bob a{i}"));
    }
    let (_, out) = w.login("bob");
    let counts: Vec<&str> = out.lines().filter(|l| l.contains(" older ")).collect();
    assert_eq!(
        counts,
        [
            "* 10 older private messages; /history @alice shows them",
            "* 3 older private messages; /history @carol shows them",
        ]
    );
}
