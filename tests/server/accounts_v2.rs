//! A second, independent reading of issue 12's account rules, written from
//! `shared/PROTOCOL.md` ("Credentials": the `T` login; "Accounts (v2)") and
//! the contract (`spec12.md`: "Tokens") alone, before the server
//! had them: `/token`, logging in with a token, `/logout`, `/logout all`
//! and `/passwd`. One test per rule, over real sockets, exact lines.

use std::net::SocketAddr;
use std::time::Duration;

use crate::util::*;

pub const TOKEN_PROMPT: &str = "? token";
pub const BAD_TOKEN: &str = "! invalid or expired token";
const CURRENT: &str = "? password current";
const NEW: &str = "? password new";
const WRONG_PASSWORD: &str = "! wrong password";
const OTHER_LOGGED_OUT: &str = "* logged out from another connection";
const OTHER_CHANGED: &str = "* password changed from another connection";

/// How long a login's catch-up may pause before it counts as finished.
const GAP: Duration = Duration::from_millis(500);

/// `/token` on a Chatting client: the token of its `* token <token>`
/// answer, checked for form (32 characters of `A-Z a-z 0-9 - _`).
#[track_caller]
pub fn new_token(c: &mut Client) -> String {
    c.send("/token\n");
    let line = c.line();
    let token = line
        .strip_prefix("* token ")
        .unwrap_or_else(|| panic!("{}: expected `* token <token>`, got {line:?}", c.label))
        .to_string();
    assert_eq!(
        token.len(),
        32,
        "{}: token {token:?} is not 32 long",
        c.label
    );
    assert!(
        token
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'),
        "{}: token {token:?} is not base64url",
        c.label
    );
    token
}

/// From the choice prompt: logs in with `token` as `name` and consumes the
/// online line.
#[track_caller]
pub fn token_login_here(c: &mut Client, token: &str, name: &str) -> Vec<String> {
    c.send("T\n");
    c.expect(TOKEN_PROMPT);
    c.send(&format!("{token}\n"));
    c.expect(&format!("* logged in as {name}"));
    let names = c.expect_online();
    assert!(
        names.iter().any(|n| n == name),
        "{}: {name} missing from {names:?}",
        c.label
    );
    names
}

/// Connects and logs in with `token` as `name`.
#[track_caller]
pub fn token_login(addr: SocketAddr, token: &str, name: &str) -> Client {
    let mut c = Client::connect(addr).with_label(name);
    c.expect_welcome();
    token_login_here(&mut c, token, name);
    c
}

/// From the choice prompt: a token login that must fail (not the third
/// failure of the connection).
#[track_caller]
pub fn token_fails_here(c: &mut Client, token: &str) {
    c.send("T\n");
    c.expect(TOKEN_PROMPT);
    c.send(&format!("{token}\n"));
    c.expect(BAD_TOKEN);
    c.expect(CHOICE);
}

/// On a fresh connection, `token` must be refused.
#[track_caller]
pub fn token_refused(addr: SocketAddr, token: &str) {
    let mut c = Client::connect(addr).with_label(&format!("token {token:?}"));
    c.expect_welcome();
    token_fails_here(&mut c, token);
}

/// `/passwd` from `old` to `new`, every prompt answered in turn.
#[track_caller]
fn change_password(c: &mut Client, old: &str, new: &str) {
    c.send("/passwd\n");
    c.expect(CURRENT);
    c.send(&format!("{old}\n"));
    c.expect(NEW);
    c.send(&format!("{new}\n"));
    c.expect("* password changed");
}

/// `/passwd` with a wrong current password, up to `! wrong password`.
///
/// AMBIGUOUS: neither document says whether the current password is
/// checked before `? password new` or after both answers; either is
/// accepted (a new password is given if it is asked for).
#[track_caller]
fn passwd_wrong(c: &mut Client, wrong: &str) {
    c.send("/passwd\n");
    c.expect(CURRENT);
    c.send(&format!("{wrong}\n"));
    let line = c.line();
    if line == NEW {
        c.send("a-perfectly-good-new-pw\n");
        c.expect(WRONG_PASSWORD);
    } else {
        assert_eq!(line, WRONG_PASSWORD, "{}: after a wrong password", c.label);
    }
}

/// Restarts the server on `db` (SIGTERM, wait for the exit, start again).
#[track_caller]
fn restart(mut s: Server, db: &std::path::Path, extra: &[&str]) -> Server {
    s.sigterm();
    let status = s.wait_exit(Duration::from_secs(20));
    assert!(
        status.is_some_and(|st| st.success()),
        "the server did not exit 0 on SIGTERM: {status:?}"
    );
    drop(s);
    Server::start_with_db(db, extra)
}

// ---------------------------------------------------------------- /token

#[test]
fn token_is_32_url_safe_characters_and_new_each_time() {
    let s = Server::start(&[]);
    let mut alice = register(s.addr, "alice", &pw("alice"));
    // `new_token` checks each one's form.
    let tokens: Vec<String> = (0..5).map(|_| new_token(&mut alice)).collect();
    let mut unique = tokens.clone();
    unique.sort();
    unique.dedup();
    assert_eq!(unique.len(), tokens.len(), "tokens repeat: {tokens:?}");
    for token in &tokens {
        let mut c = token_login(s.addr, token, "alice");
        c.quit();
    }
    alice.quiet();
}

#[test]
fn a_token_login_enters_chatting_like_a_password_login() {
    let s = Server::start(&[]);
    let mut alice = register(s.addr, "Alice", &pw("Alice"));
    alice.send("/join #rust\n");
    alice.expect("#rust * online (1): Alice");
    let token = new_token(&mut alice);
    alice.quit();
    let mut bob = register(s.addr, "bob", &pw("bob"));
    bob.send("/join #rust\n");
    bob.expect("#rust * online (1): bob");
    bob.send("in rust\n/to #lobby in the lobby\n");
    assert_eq!(bob.sync(), Vec::<String>::new());

    let mut c = Client::connect(s.addr).with_label("Alice").with_history();
    c.expect_welcome();
    c.send("T\n");
    c.expect(TOKEN_PROMPT);
    c.send(&format!("{token}\n"));
    c.expect("* logged in as Alice");
    let lines = shown(&c.lines_until_quiet(GAP));
    assert_eq!(
        lines,
        [
            "* online (2): Alice, bob",
            "~ bob: in the lobby",
            "#rust * online (2): Alice, bob",
            "~ #rust bob: in rust",
        ]
    );
    bob.expect("* Alice joined");
    c.send("/to #rust back\n");
    bob.expect("#rust Alice: back");
}

#[test]
fn token_choice_is_t_or_token_in_any_case_and_the_token_is_trimmed() {
    let s = Server::start(&[]);
    let mut alice = register(s.addr, "alice", &pw("alice"));
    let token = new_token(&mut alice);
    for choice in ["T", "t", "token", "TOKEN", "  Token  "] {
        let mut c = Client::connect(s.addr).with_label(choice);
        c.expect_welcome();
        c.send(&format!("{choice}\n"));
        c.expect(TOKEN_PROMPT);
        c.send(&format!("   {token}  \n"));
        c.expect("* logged in as alice");
        assert_eq!(c.expect_online(), ["alice"]);
        c.quit();
    }
    alice.quiet();
}

#[test]
fn a_token_of_the_wrong_length_or_alphabet_is_refused() {
    let s = Server::start(&[]);
    let mut alice = register(s.addr, "alice", &pw("alice"));
    let good = new_token(&mut alice);
    let bad = [
        good[..31].to_string(),
        format!("{good}A"),
        format!("{}+", &good[..31]),
        format!("{}/", &good[..31]),
        format!("{}=", &good[..31]),
        format!("{} {}", &good[..15], &good[16..]),
        format!("{}\u{e9}", &good[..30]),
        String::new(),
    ];
    for token in &bad {
        token_refused(s.addr, token);
    }
    // None of that harmed the real one.
    let mut c = token_login(s.addr, &good, "alice");
    c.quit();
}

#[test]
fn an_unknown_or_altered_token_is_refused() {
    let s = Server::start(&[]);
    let mut alice = register(s.addr, "alice", &pw("alice"));
    let good = new_token(&mut alice);
    let swapped: String = good
        .chars()
        .map(|c| {
            if c.is_ascii_uppercase() {
                c.to_ascii_lowercase()
            } else {
                c.to_ascii_uppercase()
            }
        })
        .collect();
    let last = if good.ends_with('A') { 'B' } else { 'A' };
    let altered = format!("{}{last}", &good[..31]);
    for token in ["A".repeat(32), "-".repeat(32), swapped, altered] {
        token_refused(s.addr, &token);
    }
    let mut c = token_login(s.addr, &good, "alice");
    c.quit();
}

#[test]
fn the_third_token_failure_closes_the_connection() {
    let s = Server::start(&[]);
    create_account(s.addr, "alice", &pw("alice"));
    let mut c = Client::connect_welcomed(s.addr);
    token_fails_here(&mut c, &"x".repeat(32));
    token_fails_here(&mut c, "short");
    c.send("T\n");
    c.expect(TOKEN_PROMPT);
    c.send(&format!("{}\n", "y".repeat(32)));
    c.expect(BAD_TOKEN);
    c.expect(TOO_MANY);
    c.expect_closed();
}

#[test]
fn token_and_password_failures_count_together() {
    let s = Server::start(&[]);
    let mut alice = register(s.addr, "alice", &pw("alice"));
    let token = new_token(&mut alice);

    let mut c = Client::connect_welcomed(s.addr).with_label("password last");
    c.login_fails("alice", "not-the-password");
    token_fails_here(&mut c, &"z".repeat(32));
    c.send("L\nalice\nstill-not-it\n");
    c.expect(USERNAME);
    c.expect(PASSWORD);
    c.expect(WRONG);
    c.expect(TOO_MANY);
    c.expect_closed();

    let mut c = Client::connect_welcomed(s.addr).with_label("token last");
    token_fails_here(&mut c, &"z".repeat(32));
    c.login_fails("alice", "not-the-password");
    c.send("T\n");
    c.expect(TOKEN_PROMPT);
    c.send(&format!("{}\n", "q".repeat(32)));
    c.expect(BAD_TOKEN);
    c.expect(TOO_MANY);
    c.expect_closed();

    // Two failures then a good token: in.
    let mut c = Client::connect_welcomed(s.addr).with_label("two then good");
    token_fails_here(&mut c, &"z".repeat(32));
    c.login_fails("alice", "not-the-password");
    token_login_here(&mut c, &token, "alice");
    alice.quiet();
}

// ---------------------------------------------------------------- /logout

#[test]
fn logout_revokes_only_the_token_this_connection_logged_in_with() {
    let s = Server::start(&[]);
    let mut bob = register(s.addr, "bob", &pw("bob"));
    let mut alice = join(s.addr, "alice", &mut [&mut bob]);
    let first = new_token(&mut alice);
    let second = new_token(&mut alice);
    alice.quit();
    bob.expect("* alice left");

    let mut c = token_login(s.addr, &first, "alice");
    bob.expect("* alice joined");
    c.send("/logout\n");
    c.expect("* bye");
    c.expect_closed();
    bob.expect("* alice left");
    token_refused(s.addr, &first);

    let mut c = token_login(s.addr, &second, "alice");
    bob.expect("* alice joined");
    c.quit();
    bob.expect("* alice left");
    let mut c = login(s.addr, "alice", &pw("alice"));
    bob.expect("* alice joined");
    c.quit();
    bob.expect("* alice left");
    bob.quiet();
}

#[test]
fn logout_after_a_password_login_says_bye_and_revokes_nothing() {
    let s = Server::start(&[]);
    let mut alice = register(s.addr, "alice", &pw("alice"));
    let token = new_token(&mut alice);
    alice.send("/logout\n");
    alice.expect("* bye");
    alice.expect_closed();
    let mut c = token_login(s.addr, &token, "alice");
    c.quit();
}

#[test]
fn logout_with_another_argument_is_a_usage_error() {
    let s = Server::start(&[]);
    let mut alice = register(s.addr, "alice", &pw("alice"));
    let token = new_token(&mut alice);
    let mut c = token_login(s.addr, &token, "alice");
    for line in ["/logout now", "/logout everything", "/logout all of them"] {
        c.send(&format!("{line}\n"));
        c.expect("! usage: /logout [all]");
    }
    assert_eq!(c.sync(), Vec::<String>::new());
    c.send("still in\n");
    alice.expect("alice: still in");
    c.quit();
    let mut again = token_login(s.addr, &token, "alice");
    again.quit();
}

#[test]
fn logout_all_revokes_every_token_and_closes_every_connection() {
    let s = Server::start(&[]);
    let mut bob = register(s.addr, "bob", &pw("bob"));
    let mut laptop = join(s.addr, "alice", &mut [&mut bob]);
    let tokens: Vec<String> = (0..3).map(|_| new_token(&mut laptop)).collect();
    let mut phone = token_login(s.addr, &tokens[0], "alice");
    let mut tablet = token_login(s.addr, &tokens[1], "alice");
    let mut desk = login(s.addr, "alice", &pw("alice"));
    bob.quiet();

    phone.send("/logout all\n");
    phone.expect("* bye");
    phone.expect_closed();
    for c in [&mut laptop, &mut tablet, &mut desk] {
        c.expect(OTHER_LOGGED_OUT);
        c.expect_closed();
    }
    bob.expect("* alice left");
    bob.quiet();
    bob.send("/who\n");
    bob.expect("* online (1): bob");
    for token in &tokens {
        token_refused(s.addr, token);
    }
}

#[test]
fn after_logout_all_the_password_and_new_tokens_work_but_old_tokens_stay_dead() {
    let s = Server::start(&[]);
    let mut alice = register(s.addr, "alice", &pw("alice"));
    let old = new_token(&mut alice);
    alice.send("/logout all\n");
    alice.expect("* bye");
    alice.expect_closed();

    let mut alice = login(s.addr, "alice", &pw("alice"));
    let fresh = new_token(&mut alice);
    assert_ne!(fresh, old);
    token_refused(s.addr, &old);
    let mut c = token_login(s.addr, &fresh, "alice");
    c.quit();
    alice.quiet();
}

#[test]
fn logout_all_leaves_other_accounts_tokens_alone() {
    let s = Server::start(&[]);
    let mut alice = register(s.addr, "alice", &pw("alice"));
    let mut bob = join(s.addr, "bob", &mut [&mut alice]);
    let alices = new_token(&mut alice);
    let bobs = new_token(&mut bob);
    alice.send("/logout all\n");
    alice.expect("* bye");
    alice.expect_closed();
    bob.expect("* alice left");
    bob.quiet();
    token_refused(s.addr, &alices);
    let mut c = token_login(s.addr, &bobs, "bob");
    c.quit();
    bob.send("/who\n");
    bob.expect("* online (1): bob");
}

#[test]
fn tokens_and_their_revocation_survive_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("chat.db");
    let s = Server::start_with_db(&db, &[]);
    let mut alice = register(s.addr, "alice", &pw("alice"));
    let revoked = new_token(&mut alice);
    let kept = new_token(&mut alice);
    let mut c = token_login(s.addr, &revoked, "alice");
    c.send("/logout\n");
    c.expect("* bye");
    c.expect_closed();
    drop(alice);

    // `--token-days 1`: a day is plenty for a token made a moment ago.
    let s = restart(s, &db, &["--token-days", "1"]);
    token_refused(s.addr, &revoked);
    let mut c = token_login(s.addr, &kept, "alice");
    // Tokens made under the new setting work too.
    let third = new_token(&mut c);
    c.quit();
    let mut c = token_login(s.addr, &third, "alice");
    c.quit();
}

#[test]
fn logout_all_survives_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("chat.db");
    let s = Server::start_with_db(&db, &[]);
    let mut alice = register(s.addr, "alice", &pw("alice"));
    let mut bob = join(s.addr, "bob", &mut [&mut alice]);
    let alices = new_token(&mut alice);
    let bobs = new_token(&mut bob);
    alice.send("/logout all\n");
    alice.expect("* bye");
    alice.expect_closed();
    bob.expect("* alice left");
    drop(bob);

    let s = restart(s, &db, &[]);
    token_refused(s.addr, &alices);
    let mut c = token_login(s.addr, &bobs, "bob");
    c.quit();
}

// ---------------------------------------------------------------- /passwd

#[test]
fn passwd_changes_the_password_and_nobody_sees_the_answers() {
    let s = Server::start(&[]);
    let mut alice = register(s.addr, "alice", &pw("alice"));
    let mut bob = join(s.addr, "bob", &mut [&mut alice]);
    change_password(&mut alice, &pw("alice"), "brand-new-password");
    bob.quiet();
    // Still Chatting.
    alice.send("still here\n");
    bob.expect("alice: still here");

    let mut c = Client::connect_welcomed(s.addr).with_label("old password");
    c.login_fails("alice", &pw("alice"));
    c.login_here("alice", "brand-new-password", "alice");
    bob.quiet();
}

#[test]
fn passwd_asks_again_for_a_new_password_that_is_not_8_to_72_bytes() {
    let s = Server::start(&[]);
    let mut alice = register(s.addr, "alice", &pw("alice"));
    let mut bob = join(s.addr, "bob", &mut [&mut alice]);
    alice.send("/passwd\n");
    alice.expect(CURRENT);
    alice.send(&format!("{}\n", pw("alice")));
    alice.expect(NEW);
    // 7 bytes, 73 bytes, 7 bytes in 4 characters: all too short or long.
    for bad in [
        "1234567".to_string(),
        "x".repeat(73),
        "\u{e9}\u{e9}\u{e9}x".to_string(),
    ] {
        alice.send(&format!("{bad}\n"));
        alice.expect(BAD_PW);
        alice.expect(NEW);
    }
    // 72 bytes in 36 characters: fine.
    let new = "\u{e9}".repeat(36);
    alice.send(&format!("{new}\n"));
    alice.expect("* password changed");
    bob.quiet();
    let mut c = login(s.addr, "alice", &new);
    c.quit();
}

#[test]
fn a_wrong_current_password_is_refused_and_changes_nothing() {
    let s = Server::start(&[]);
    let mut alice = register(s.addr, "alice", &pw("alice"));
    let mut bob = join(s.addr, "bob", &mut [&mut alice]);
    let token = new_token(&mut alice);
    passwd_wrong(&mut alice, "not-my-password");
    assert_eq!(alice.sync(), Vec::<String>::new());
    alice.send("still chatting\n");
    bob.expect("alice: still chatting");
    bob.quiet();
    let mut c = login(s.addr, "alice", &pw("alice"));
    c.quit();
    let mut c = token_login(s.addr, &token, "alice");
    c.quit();
}

#[test]
fn the_third_wrong_current_password_closes_the_connection() {
    let s = Server::start(&[]);
    let mut bob = register(s.addr, "bob", &pw("bob"));
    let mut alice = join(s.addr, "alice", &mut [&mut bob]);
    passwd_wrong(&mut alice, "wrong-one-1");
    passwd_wrong(&mut alice, "wrong-one-2");
    passwd_wrong(&mut alice, "wrong-one-3");
    alice.expect(TOO_MANY);
    alice.expect_closed();
    bob.expect("* alice left");
    let mut c = login(s.addr, "alice", &pw("alice"));
    c.quit();
}

#[test]
fn failed_logins_before_passwd_count_toward_the_three() {
    let s = Server::start(&[]);
    create_account(s.addr, "alice", &pw("alice"));
    let mut c = Client::connect_welcomed(s.addr).with_label("alice");
    c.login_fails("alice", "guess-number-1");
    c.login_fails("alice", "guess-number-2");
    c.login_here("alice", &pw("alice"), "alice");
    // AMBIGUOUS: "the third on the connection" is read as counting the
    // login failures this connection had before it logged in.
    passwd_wrong(&mut c, "guess-number-3");
    c.expect(TOO_MANY);
    c.expect_closed();
}

#[test]
fn passwd_revokes_every_token_and_closes_the_other_connections() {
    let s = Server::start(&[]);
    let mut bob = register(s.addr, "bob", &pw("bob"));
    let mut laptop = join(s.addr, "alice", &mut [&mut bob]);
    let first = new_token(&mut laptop);
    let second = new_token(&mut laptop);
    let mut phone = token_login(s.addr, &first, "alice");
    let mut desk = login(s.addr, "alice", &pw("alice"));
    bob.quiet();

    // From the connection that logged in with a token: it stays.
    change_password(&mut phone, &pw("alice"), "another-password");
    for c in [&mut laptop, &mut desk] {
        c.expect(OTHER_CHANGED);
        c.expect_closed();
    }
    bob.quiet();
    phone.send("on the phone\n");
    bob.expect("alice: on the phone");
    token_refused(s.addr, &first);
    token_refused(s.addr, &second);
    bob.send("/who\n");
    bob.expect("* online (2): alice, bob");
}

#[test]
fn passwd_with_arguments_is_a_usage_error() {
    let s = Server::start(&[]);
    let mut alice = register(s.addr, "alice", &pw("alice"));
    alice.send(&format!("/passwd {} new-password-1\n", pw("alice")));
    alice.expect("! usage: /passwd");
    alice.send("/passwd new-password-1\n");
    alice.expect("! usage: /passwd");
    assert_eq!(alice.sync(), Vec::<String>::new());
    let mut c = Client::connect_welcomed(s.addr);
    c.login_fails("alice", "new-password-1");
    c.login_here("alice", &pw("alice"), "alice");
}

#[test]
fn a_changed_password_survives_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("chat.db");
    let s = Server::start_with_db(&db, &[]);
    let mut alice = register(s.addr, "alice", &pw("alice"));
    let token = new_token(&mut alice);
    change_password(&mut alice, &pw("alice"), "changed-before-restart");
    drop(alice);

    let s = restart(s, &db, &[]);
    token_refused(s.addr, &token);
    let mut c = Client::connect_welcomed(s.addr);
    c.login_fails("alice", &pw("alice"));
    c.login_here("alice", "changed-before-restart", "alice");
}
