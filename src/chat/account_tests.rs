//! Rules of tokens, `/passwd`, roles, kicks, bans and mutes, checked on
//! the sans-IO core with the store thread played in memory.

use super::testkit::World;

const CHOICE: &str = "? choice Sign up (R) or Login (L)\n";

impl World {
    fn line(&mut self, i: usize, line: &str) -> String {
        self.send(i, format!("{line}\n").as_bytes());
        while self.asked[i].is_some() {
            self.answer(i);
        }
        self.take(i)
    }

    /// A token for the account chatting on `i`.
    fn token(&mut self, i: usize) -> String {
        let out = self.line(i, "/token");
        out.strip_prefix("* token ")
            .and_then(|t| t.strip_suffix('\n'))
            .unwrap_or_else(|| panic!("a token, not {out:?}"))
            .to_owned()
    }

    fn op(&mut self, name: &str) {
        self.hub.server_ops.insert(name.to_ascii_lowercase());
    }
}

#[test]
fn a_token_logs_in_without_a_password_until_it_is_revoked() {
    let mut w = World::new();
    let a = w.chatter("alice");
    let token = w.token(a);
    assert_eq!(token.len(), 32);
    let b = w.connect();
    w.take(b);
    let out = w.line(b, &format!("T\n  {token}  "));
    assert!(
        out.starts_with("? token\n* logged in as alice\n* online (1): alice\n"),
        "{out}"
    );
    // `/logout` revokes the token this connection logged in with.
    assert_eq!(w.line(b, "/logout"), "* bye\n");
    assert!(w.closed[b]);
    let c = w.connect();
    w.take(c);
    assert_eq!(
        w.line(c, &format!("token\n{token}")),
        format!("? token\n! invalid or expired token\n{CHOICE}")
    );
    // A password session's `/logout` revokes nothing, and says bye.
    let d = w.chatter("bob");
    let kept = w.token(d);
    let e = w.chatter("carol");
    assert_eq!(w.line(e, "/logout"), "* bye\n");
    assert!(w.store.tokens.values().any(|(a, _)| a == "bob"), "{kept}");
}

#[test]
fn malformed_unknown_and_expired_tokens_are_login_failures() {
    let mut w = World::new();
    let a = w.chatter("alice");
    let token = w.token(a);
    let b = w.connect();
    w.take(b);
    let bad = format!("? token\n! invalid or expired token\n{CHOICE}");
    assert_eq!(w.line(b, "T\nshort"), bad);
    assert_eq!(w.line(b, &format!("T\n{}", "é".repeat(16))), bad);
    assert_eq!(
        w.line(b, "T\nAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"),
        "? token\n! invalid or expired token\n! too many failed attempts\n"
    );
    assert!(w.closed[b]);
    // Past its days it is refused.
    w.wall += 31 * 86_400;
    let c = w.connect();
    w.take(c);
    assert_eq!(w.line(c, &format!("T\n{token}")), bad);
}

#[test]
fn logout_all_revokes_every_token_and_closes_every_session() {
    let mut w = World::new();
    let a = w.chatter("alice");
    let b = w.chatter("bob");
    w.take(a);
    let t1 = w.token(a);
    let _t2 = w.token(a);
    let a2 = w.connect();
    w.take(a2);
    w.line(a2, &format!("T\n{t1}"));
    w.take(b);
    assert_eq!(w.line(a, "/logout all"), "* bye\n");
    assert_eq!(w.take(a2), "* logged out from another connection\n");
    assert!(w.closed[a] && w.closed[a2]);
    assert_eq!(w.take(b), "* alice left\n");
    assert!(w.store.tokens.is_empty());
    assert_eq!(w.line(b, "/logout everything"), "! usage: /logout [all]\n");
}

#[test]
fn passwd_asks_twice_checks_the_current_one_and_revokes_tokens() {
    let mut w = World::new();
    let a = w.chatter("alice");
    let a2 = w.login_again("alice");
    let _t = w.token(a);
    assert_eq!(w.line(a, "/passwd now"), "! usage: /passwd\n");
    assert_eq!(w.line(a, "/passwd"), "? password current\n");
    assert_eq!(w.line(a, "/who"), "? password new\n", "never a command");
    assert_eq!(
        w.line(a, "short"),
        "! password must be 8-72 bytes\n? password new\n"
    );
    assert_eq!(w.line(a, "new-password"), "! wrong password\n");
    assert_eq!(w.line(a, "/passwd"), "? password current\n");
    w.line(a, "password-alice");
    assert_eq!(w.line(a, " new password "), "* password changed\n");
    assert_eq!(w.take(a2), "* password changed from another connection\n");
    assert!(w.closed[a2] && !w.closed[a]);
    assert!(w.store.tokens.is_empty());
    assert_eq!(w.accounts["alice"].1, " new password ");
}

#[test]
fn a_wrong_current_password_counts_toward_the_three_failures() {
    let mut w = World::new();
    let a = w.chatter("alice");
    for n in 1..=3 {
        w.line(a, "/passwd");
        w.line(a, "not-it-at-all");
        let out = w.line(a, "new-password");
        if n < 3 {
            assert_eq!(out, "! wrong password\n");
        } else {
            assert_eq!(out, "! wrong password\n! too many failed attempts\n");
        }
    }
    assert!(w.closed[a]);
}

#[test]
fn room_operators_kick_and_ban_and_members_cannot() {
    let mut w = World::new();
    let a = w.chatter("alice");
    let b = w.chatter("bob");
    let c = w.chatter("carol");
    w.line(a, "/join #rust");
    w.line(b, "/join #rust");
    w.line(c, "/join #rust");
    w.take(a);
    w.take(b);
    assert_eq!(
        w.line(b, "/kick carol"),
        "! you are not an operator of #rust\n"
    );
    assert_eq!(
        w.line(a, "/op #rust bob"),
        "#rust * bob is now an operator of #rust (by alice)\n"
    );
    assert_eq!(
        w.take(b),
        "#rust * bob is now an operator of #rust (by alice)\n"
    );
    w.take(c);
    assert_eq!(
        w.line(b, "/kick alice"),
        "! alice is an operator of #rust\n"
    );
    assert_eq!(w.line(b, "/kick bob"), "! you cannot do that to yourself\n");
    assert_eq!(w.line(b, "/kick nobody"), "! no such user nobody\n");
    assert_eq!(
        w.line(b, "/kick"),
        "! usage: /kick [#room] <user> [reason]\n"
    );
    assert_eq!(
        w.line(b, "/kick carol  spamming links "),
        "#rust * carol was kicked by bob: spamming links\n"
    );
    assert_eq!(
        w.take(c),
        "#rust ! you were kicked from #rust by bob: spamming links\n"
    );
    assert_eq!(
        w.take(a),
        "#rust * carol was kicked by bob: spamming links\n"
    );
    assert_eq!(w.line(c, "back"), "", "the lobby is current again");
    assert_eq!(w.take(b), "carol: back\n");
    assert_eq!(w.line(b, "/kick carol"), "! carol is not in #rust\n");
    // A ban keeps them out until it ends.
    w.line(c, "/join #rust");
    w.take(a);
    w.take(b);
    assert_eq!(
        w.line(b, "/ban carol 2h"),
        "#rust * carol was banned by bob until 2026-12-01T12:39Z: no reason given\n"
    );
    assert_eq!(
        w.take(c),
        "#rust ! you were banned from #rust by bob until 2026-12-01T12:39Z: no reason given\n"
    );
    assert_eq!(
        w.line(c, "/join #rust"),
        "! you are banned from #rust until 2026-12-01T12:39Z\n"
    );
    assert_eq!(
        w.line(b, "/ban carol -5m"),
        "! invalid duration -5m: use 30m, 2h or 7d (at most 365d); none means forever\n"
    );
    assert_eq!(
        w.line(b, "/unban carol"),
        "#rust * carol is no longer banned\n"
    );
    assert_eq!(
        w.line(b, "/unban carol"),
        "! carol is not banned in #rust\n"
    );
    assert!(w.line(c, "/join #rust").starts_with("#rust * online"));
}

#[test]
fn mutes_refuse_lines_in_the_room_and_server_mutes_everywhere() {
    let mut w = World::new();
    let a = w.chatter("alice");
    let b = w.chatter("bob");
    w.op("alice");
    w.line(a, "/join #rust");
    w.line(b, "/join #rust");
    w.take(a);
    assert_eq!(
        w.line(a, "/mute #rust bob 30m"),
        "#rust * bob is muted until 2026-12-01T11:09Z\n"
    );
    assert_eq!(
        w.take(b),
        "#rust ! you are muted in #rust until 2026-12-01T11:09Z\n"
    );
    let refused = "#rust ! you are muted in #rust until 2026-12-01T11:09Z\n";
    assert_eq!(w.line(b, "hello"), refused);
    assert_eq!(w.line(b, "/me waves"), refused);
    assert_eq!(w.line(b, "/to #rust hi"), refused);
    assert_eq!(w.line(b, "/to #lobby hi"), "");
    assert_eq!(w.take(a), "bob: hi\n", "only #rust is muted");
    w.wall += 30 * 60;
    assert_eq!(w.line(b, "hello"), refused, "until the minute shown");
    w.wall += 60;
    assert_eq!(w.line(b, "hello"), "", "it ended");
    assert_eq!(w.take(a), "#rust bob: hello\n");
    assert_eq!(
        w.line(a, "/mute #lobby bob"),
        "* bob is muted until forever\n"
    );
    assert_eq!(w.take(b), "! you are muted until forever\n");
    assert_eq!(
        w.line(b, "/msg alice psst"),
        "! you are muted until forever\n"
    );
    assert_eq!(w.line(b, "hello"), "! you are muted until forever\n");
    assert_eq!(w.take(a), "");
    assert_eq!(
        w.line(a, "/unmute #lobby bob"),
        "* bob is no longer muted\n"
    );
    assert_eq!(w.take(b), "* bob is no longer muted\n");
    assert_eq!(w.line(b, "/msg alice psst"), "");
    assert_eq!(w.take(a), "@bob: psst\n");
}

#[test]
fn server_operators_kick_and_ban_from_the_server() {
    let mut w = World::new();
    let a = w.chatter("alice");
    let b = w.chatter("bob");
    let c = w.chatter("carol");
    w.take(b);
    assert_eq!(
        w.line(b, "/kick carol"),
        "! only server operators can do that\n"
    );
    w.op("alice");
    w.take(a);
    w.take(b);
    assert_eq!(
        w.line(a, "/kick carol bye"),
        "* carol was kicked by alice: bye\n"
    );
    assert_eq!(w.take(c), "! kicked by alice: bye\n");
    assert!(w.closed[c]);
    assert_eq!(
        w.take(b),
        "* carol was kicked by alice: bye\n",
        "no left notice"
    );
    assert_eq!(w.line(a, "/kick carol"), "! carol is not online\n");
    w.op("bob");
    assert_eq!(w.line(a, "/ban bob"), "! bob is a server operator\n");
    w.hub.server_ops.remove("bob");
    assert_eq!(
        w.line(a, "/ban bob 99999d"),
        "! invalid duration 99999d: use 30m, 2h or 7d (at most 365d); none means forever\n"
    );
    assert_eq!(
        w.line(a, "/ban bob trolling"),
        "* bob was banned by alice until forever: trolling\n"
    );
    assert_eq!(w.take(b), "! banned until forever: trolling\n");
    assert!(w.closed[b]);
    let again = w.connect();
    w.take(again);
    assert_eq!(
        w.line(again, "L\nbob\npassword-bob"),
        "? username\n? password\n! banned until forever: trolling\n"
    );
    assert!(w.closed[again]);
    assert_eq!(w.line(a, "/unban bob"), "* bob is no longer banned\n");
    let (_, out) = w.login_out("bob");
    assert!(out.starts_with("* logged in as bob\n"), "{out}");
}

#[test]
fn help_shows_each_user_what_they_may_use() {
    let mut w = World::new();
    let a = w.chatter("alice");
    let help = w.line(a, "/help");
    assert!(!help.contains("/kick") && !help.contains("/op "), "{help}");
    w.line(a, "/join #rust");
    let help = w.line(a, "/help");
    assert!(
        help.contains("/kick") && help.contains("/op #room"),
        "{help}"
    );
    let b = w.chatter("bob");
    w.line(b, "/join #rust");
    w.line(a, "/op #rust bob");
    let help = w.line(b, "/help");
    assert!(
        help.contains("/kick") && !help.contains("/op #room"),
        "{help}"
    );
}

impl World {
    fn login_again(&mut self, name: &str) -> usize {
        self.login_out(name).0
    }

    fn login_out(&mut self, name: &str) -> (usize, String) {
        let i = self.connect();
        self.take(i);
        let out = self.line(i, &format!("L\n{name}\npassword-{name}"));
        let out = out
            .strip_prefix("? username\n? password\n")
            .unwrap_or(&out)
            .to_owned();
        (i, out)
    }
}

#[test]
fn a_banned_room_operator_operates_no_more() {
    let mut w = World::new();
    let a = w.chatter("alice");
    let b = w.chatter("bob");
    let c = w.chatter("carol");
    for i in [a, b, c] {
        w.line(i, "/join #rust");
    }
    w.line(a, "/op #rust bob");
    w.line(a, "/ban #rust bob");
    w.take(b);
    assert_eq!(
        w.line(b, "/kick #rust carol"),
        "! you are not an operator of #rust\n"
    );
}

#[test]
fn a_login_whose_state_was_read_while_it_was_banned_is_refused() {
    let mut w = World::new();
    let a = w.chatter("alice");
    w.op("alice");
    w.account("bob", "password-bob");
    w.eager = false;
    let b = w.connect();
    w.take(b);
    w.send(b, b"L\nbob\npassword-bob\n");
    w.answer(b);
    // bob's state is being read: not online yet.
    w.send(a, b"/ban bob\n");
    w.settle();
    assert!(
        w.take(b)
            .ends_with("! banned until forever: no reason given\n")
    );
    assert!(w.closed[b]);
    assert!(!w.hub.is_online("bob"));
}

#[test]
fn a_server_operator_sets_the_topic_of_a_room_they_are_not_in() {
    let mut w = World::new();
    let a = w.chatter("alice");
    let b = w.chatter("bob");
    w.op("alice");
    w.line(b, "/join #rust");
    w.take(a);
    assert_eq!(
        w.line(a, "/topic #rust be kind"),
        "#rust * topic: be kind (set by alice)\n"
    );
}
