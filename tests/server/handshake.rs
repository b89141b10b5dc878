//! AwaitingChoice and Credentials: the welcome, the choice, registration,
//! login, failures, takeover-free rules and pipelined input.

use crate::util::*;

#[test]
fn welcome_then_choice_prompt() {
    let s = Server::start(&[]);
    let mut c = Client::connect(s.addr);
    c.expect("* welcome to NeoChat (0 online)");
    c.expect(CHOICE);
    c.quiet();
}

#[test]
fn welcome_counts_only_chatting_connections() {
    let s = Server::start(&[]);
    let _waiting = Client::connect_welcomed(s.addr);
    let mut alice = register(s.addr, "alice", &pw("alice"));
    let _bob = join(s.addr, "bob", &mut [&mut alice]);
    let mut c = Client::connect(s.addr);
    c.expect("* welcome to NeoChat (2 online)");
    c.expect(CHOICE);
}

#[test]
fn choice_r_and_l_case_insensitive_with_spaces() {
    let s = Server::start(&[]);
    create_account(s.addr, "alice", &pw("alice"));
    for (i, answer) in ["R", "r", "  R", "R  ", " r ", "register", "  register  "]
        .iter()
        .enumerate()
    {
        let mut c = Client::connect_welcomed(s.addr).with_label(&format!("choice {answer:?}"));
        c.send(&format!("{answer}\n"));
        c.expect(USERNAME);
        let name = format!("user{i}");
        c.send(&format!("{name}\n"));
        c.expect(PASSWORD);
        c.send(&format!("{}\n", pw(&name)));
        c.expect(&format!("* registered and logged in as {name}"));
        c.expect_online();
        c.quit();
    }
    for answer in ["L", "l", "  L", "L  ", " l ", "login", "  login  "] {
        let mut c = Client::connect_welcomed(s.addr).with_label(&format!("choice {answer:?}"));
        c.send(&format!("{answer}\n"));
        c.expect(USERNAME);
        c.send("alice\n");
        c.expect(PASSWORD);
        c.send(&format!("{}\n", pw("alice")));
        c.expect("* logged in as alice");
        c.expect("* online (1): alice");
        c.quit();
    }
}

/// Interpretation: "case-insensitive" covers the words too.
#[test]
fn choice_words_case_insensitive() {
    let s = Server::start(&[]);
    create_account(s.addr, "alice", &pw("alice"));
    for (i, answer) in ["REGISTER", "Register"].iter().enumerate() {
        let mut c = Client::connect_welcomed(s.addr).with_label(answer);
        let name = format!("user{i}");
        c.send(&format!("{answer}\n"));
        c.expect(USERNAME);
        c.send(&format!("{name}\n"));
        c.expect(PASSWORD);
        c.send(&format!("{}\n", pw(&name)));
        c.expect(&format!("* registered and logged in as {name}"));
        c.expect_online();
        c.quit();
    }
    for answer in ["LOGIN", "Login"] {
        let mut c = Client::connect_welcomed(s.addr).with_label(answer);
        c.send(&format!("{answer}\n"));
        c.expect(USERNAME);
        c.send("alice\n");
        c.expect(PASSWORD);
        c.send(&format!("{}\n", pw("alice")));
        c.expect("* logged in as alice");
        c.expect("* online (1): alice");
        c.quit();
    }
}

#[test]
fn bad_choice_repeats_prompt() {
    let s = Server::start(&[]);
    let mut c = Client::connect_welcomed(s.addr);
    for answer in ["x", "RL", "yes", "R L", "regist", "logins", "Rr", "1"] {
        c.send(&format!("{answer}\n"));
        c.expect(BAD_CHOICE);
        c.expect(CHOICE);
    }
    c.register_here("alice", &pw("alice"));
}

/// An empty or blank answer is "anything else" too.
#[test]
fn bad_choice_empty_line() {
    let s = Server::start(&[]);
    let mut c = Client::connect_welcomed(s.addr);
    for answer in ["", "   "] {
        c.send(&format!("{answer}\n"));
        c.expect(BAD_CHOICE);
        c.expect(CHOICE);
    }
}

#[test]
fn register_first_user() {
    let s = Server::start(&[]);
    let mut c = Client::connect_welcomed(s.addr);
    c.send("R\n");
    c.expect(USERNAME);
    c.send("alice\n");
    c.expect(PASSWORD);
    c.send("correct horse\n");
    c.expect("* registered and logged in as alice");
    c.expect("* online (1): alice");
    c.quiet();
}

#[test]
fn online_list_sorted_by_lowercase_shown_as_registered() {
    let s = Server::start(&[]);
    let mut bob = Client::connect_welcomed(s.addr).with_label("bob");
    assert_eq!(bob.register_here("bob", &pw("bob")), ["bob"]);

    let mut alice = Client::connect_welcomed(s.addr).with_label("Alice");
    assert_eq!(alice.register_here("Alice", &pw("Alice")), ["Alice", "bob"]);
    bob.expect("* Alice joined");

    let mut carol = Client::connect_welcomed(s.addr).with_label("carol");
    assert_eq!(
        carol.register_here("carol", &pw("carol")),
        ["Alice", "bob", "carol"]
    );
    bob.expect("* carol joined");
    alice.expect("* carol joined");

    // "Zed" sorts before "bob" in plain byte order, after it by lowercase.
    let mut zed = Client::connect_welcomed(s.addr).with_label("Zed");
    assert_eq!(
        zed.register_here("Zed", &pw("Zed")),
        ["Alice", "bob", "carol", "Zed"]
    );
    for c in [&mut bob, &mut alice, &mut carol] {
        c.expect("* Zed joined");
    }
    bob.send("/who\n");
    bob.expect("* online (4): Alice, bob, carol, Zed");
    alice.quiet();
}

#[test]
fn invalid_usernames_rejected() {
    let s = Server::start(&[]);
    let mut c = Client::connect_welcomed(s.addr);
    c.send("R\n");
    c.expect(USERNAME);
    let long33 = "a".repeat(33);
    for name in [
        "",
        "   ",
        long33.as_str(),
        "_alice",
        "-alice",
        ".alice",
        "al ice",
        "alice!",
        "bob@home",
        "a/b",
        "émile",
        "ali\tce",
    ] {
        c.send(&format!("{name}\n"));
        c.expect(BAD_NAME);
        c.expect(USERNAME);
    }
    // 32 characters, surrounded by spaces that are trimmed.
    let name32 = format!("A{}z", "b".repeat(30));
    assert_eq!(name32.len(), 32);
    c.send(&format!("  {name32}  \n"));
    c.expect(PASSWORD);
    c.send("password\n");
    c.expect(&format!("* registered and logged in as {name32}"));
    c.expect(&format!("* online (1): {name32}"));
}

#[test]
fn usernames_with_allowed_characters() {
    let s = Server::start(&[]);
    let mut a = register(s.addr, "9lives", &pw("a"));
    let _b = join(s.addr, "a_b-c.D", &mut [&mut a]);
    let mut c = Client::connect_welcomed(s.addr);
    c.send("R\n");
    c.expect(USERNAME);
    c.send(" \t \n");
    c.expect(BAD_NAME);
    c.expect(USERNAME);
    c.send("   spaced   \n");
    c.expect(PASSWORD);
    c.send("password\n");
    c.expect("* registered and logged in as spaced");
    c.expect("* online (3): 9lives, a_b-c.D, spaced");
    a.expect("* spaced joined");
}

#[test]
fn password_length_counted_in_bytes() {
    let s = Server::start(&[]);
    let mut c = Client::connect_welcomed(s.addr);
    c.send("R\nalice\n");
    c.expect(USERNAME);
    c.expect(PASSWORD);
    let a73 = "a".repeat(73);
    let e37 = "é".repeat(37); // 37 characters, 74 bytes
    let e4a = "ééé".to_string() + "a"; // 4 characters... 7 bytes
    for bad in ["", "1234567", e4a.as_str(), a73.as_str(), e37.as_str()] {
        c.send(&format!("{bad}\n"));
        c.expect(BAD_PW);
        c.expect(PASSWORD);
    }
    // 4 characters, 8 bytes: long enough.
    c.send(&format!("{}\n", "é".repeat(4)));
    c.expect("* registered and logged in as alice");
    c.expect("* online (1): alice");
    c.quit();
    let _again = login(s.addr, "alice", &"é".repeat(4));
}

#[test]
fn password_of_72_bytes_is_never_truncated() {
    let s = Server::start(&[]);
    let p72: String = (0..72).map(|i| (b'a' + (i % 26) as u8) as char).collect();
    assert_eq!(p72.len(), 72);
    let mut c = Client::connect_welcomed(s.addr);
    c.send("R\nalice\n");
    c.expect(USERNAME);
    c.expect(PASSWORD);
    c.send(&format!("{}\n", "b".repeat(73)));
    c.expect(BAD_PW);
    c.expect(PASSWORD);
    c.send(&format!("{p72}\n"));
    c.expect("* registered and logged in as alice");
    c.expect("* online (1): alice");
    c.quit();

    let mut ok = login(s.addr, "alice", &p72);
    ok.quit();

    // The last byte matters.
    let mut last_changed = p72[..71].to_string();
    last_changed.push('X');
    let mut c = Client::connect_welcomed(s.addr);
    c.login_fails("alice", &last_changed);
    // A 73-byte password whose first 72 bytes match is not the password.
    c.login_fails("alice", &format!("{p72}Z"));
    c.login_here("alice", &p72, "alice");
}

#[test]
fn password_is_not_trimmed() {
    let s = Server::start(&[]);
    let spaced = "  spaced pw  ";
    create_account(s.addr, "alice", spaced);
    let mut c = Client::connect_welcomed(s.addr);
    c.login_fails("alice", "spaced pw");
    c.login_here("alice", spaced, "alice");
}

#[test]
fn username_taken_without_regard_to_case() {
    let s = Server::start(&[]);
    let mut alice = register(s.addr, "alice", &pw("alice"));
    let mut c = Client::connect_welcomed(s.addr);
    c.send("R\n");
    c.expect(USERNAME);
    c.send("ALICE\n");
    // The name is found taken only after the password.
    c.expect(PASSWORD);
    c.send("other-password\n");
    c.expect(TAKEN);
    c.expect(CHOICE);
    c.register_here("alice2", &pw("alice2"));
    alice.expect("* alice2 joined");
    alice.quiet();
}

#[test]
fn login_shows_name_as_registered() {
    let s = Server::start(&[]);
    create_account(s.addr, "Alice", &pw("Alice"));
    let mut c = Client::connect_welcomed(s.addr);
    c.send("L\n");
    c.expect(USERNAME);
    c.send("  ALICE \n");
    c.expect(PASSWORD);
    c.send(&format!("{}\n", pw("Alice")));
    c.expect("* logged in as Alice");
    c.expect("* online (1): Alice");
}

#[test]
fn login_failures_then_lockout() {
    let s = Server::start(&[]);
    create_account(s.addr, "alice", &pw("alice"));
    let mut c = Client::connect_welcomed(s.addr);
    c.login_fails("alice", "wrong-password");
    c.login_fails("nobody", "whatever-pw");
    c.send("L\nalice\nstill-wrong\n");
    c.expect(USERNAME);
    c.expect(PASSWORD);
    c.expect(WRONG);
    c.expect(TOO_MANY);
    c.expect_closed();
}

#[test]
fn login_after_two_failures_succeeds() {
    let s = Server::start(&[]);
    create_account(s.addr, "alice", &pw("alice"));
    let mut c = Client::connect_welcomed(s.addr);
    c.login_fails("alice", "wrong-password");
    c.login_fails("ALICE", "");
    c.login_here("alice", &pw("alice"), "alice");
    c.send("/who\n");
    c.expect("* online (1): alice");
}

#[test]
fn login_does_not_check_form() {
    let s = Server::start(&[]);
    create_account(s.addr, "alice", &pw("alice"));
    let mut c = Client::connect_welcomed(s.addr);
    // A name that could never be registered, and a too-short password: plain
    // failures, not form errors.
    c.login_fails("_not a name!", "whatever-pw");
    c.login_fails("alice", "x");
}

#[test]
fn pipelined_login_then_message() {
    let s = Server::start(&[]);
    create_account(s.addr, "alice", &pw("alice"));
    let mut bob = register(s.addr, "bob", &pw("bob"));
    let mut c = Client::connect(s.addr).with_label("alice");
    c.send(&format!("L\nalice\n{}\nhello\n", pw("alice")));
    c.expect_welcome();
    c.expect(USERNAME);
    c.expect(PASSWORD);
    c.expect("* logged in as alice");
    c.expect("* online (2): alice, bob");
    bob.expect("* alice joined");
    bob.expect("alice: hello");
    c.quiet();
}

#[test]
fn pipelined_registration_then_messages() {
    let s = Server::start(&[]);
    let mut bob = register(s.addr, "bob", &pw("bob"));
    let mut c = Client::connect(s.addr).with_label("carol");
    c.send(&format!(
        "R\ncarol\n{}\nhi all\n/me waves\n/who\n",
        pw("carol")
    ));
    c.expect_welcome();
    c.expect(USERNAME);
    c.expect(PASSWORD);
    c.expect("* registered and logged in as carol");
    c.expect("* online (2): bob, carol");
    c.expect("* online (2): bob, carol");
    bob.expect("* carol joined");
    bob.expect("carol: hi all");
    bob.expect("* carol waves");
}

#[test]
fn pipelined_failure_then_success() {
    let s = Server::start(&[]);
    create_account(s.addr, "alice", &pw("alice"));
    let mut bob = register(s.addr, "bob", &pw("bob"));
    let mut c = Client::connect(s.addr).with_label("alice");
    c.send(&format!(
        "L\nalice\nbad-password\nx\nL\nalice\n{}\nmade it\n",
        pw("alice")
    ));
    c.expect_welcome();
    c.expect(USERNAME);
    c.expect(PASSWORD);
    c.expect(WRONG);
    c.expect(CHOICE);
    c.expect(BAD_CHOICE);
    c.expect(CHOICE);
    c.expect(USERNAME);
    c.expect(PASSWORD);
    c.expect("* logged in as alice");
    c.expect("* online (2): alice, bob");
    bob.expect("* alice joined");
    bob.expect("alice: made it");
}

#[test]
fn pipelined_taken_name_then_register() {
    let s = Server::start(&[]);
    let mut bob = register(s.addr, "bob", &pw("bob"));
    let mut c = Client::connect(s.addr).with_label("carol");
    c.send("R\nBOB\nsome-password\nR\ncarol\nsome-password\nhey\n");
    c.expect_welcome();
    c.expect(USERNAME);
    c.expect(PASSWORD);
    c.expect(TAKEN);
    c.expect(CHOICE);
    c.expect(USERNAME);
    c.expect(PASSWORD);
    c.expect("* registered and logged in as carol");
    c.expect("* online (2): bob, carol");
    bob.expect("* carol joined");
    bob.expect("carol: hey");
}

/// A password check that outlives its connection must not log in whoever
/// got the connection's slot next.
#[test]
fn abandoned_login_does_not_leak_to_next_connection() {
    // A higher cost keeps the checks in flight while new connections arrive.
    let s = Server::start(&["--bcrypt-cost", "8"]);
    create_account(s.addr, "alice", &pw("alice"));
    for _ in 0..10 {
        let mut c = Client::connect(s.addr);
        c.send(&format!("L\nalice\n{}\n", pw("alice")));
        c.reset();
    }
    // The newcomers wait for checks of their own when the stale results land.
    let mut fresh: Vec<Client> = (0..10).map(|_| Client::connect(s.addr)).collect();
    // (Names of their own: more than five checks in flight for one account
    // would be throttled.)
    for (i, c) in fresh.iter_mut().enumerate() {
        c.send(&format!("L\nnobody{i}\nwrong-password\n"));
    }
    for c in &mut fresh {
        c.expect_welcome();
        c.expect(USERNAME);
        c.expect(PASSWORD);
        c.expect(WRONG);
        c.expect(CHOICE);
    }
    for c in &mut fresh {
        c.no_line_within(std::time::Duration::from_millis(1));
    }
    fresh[0].register_here("bob", &pw("bob"));
}
