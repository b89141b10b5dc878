//! Per-source limits: connections per address, pending logins, failed
//! logins per account and per address, registrations per address, the
//! bounded password-check queue, the exempt list, and wrong protocols on the
//! port. Loopback is exempt by default, so most tests pass `--exempt none`
//! and connect from distinct 127.0.0.x addresses (all of 127/8 is local).

use std::thread;
use std::time::{Duration, Instant};

use crate::util::*;

const PER_IP: &str = "! too many connections from your address";
const BUSY: &str = "! server busy, try again";
const TOO_MANY_REGS: &str = "! too many registrations, try again later";

/// `! too many attempts, try again in N s`: returns N.
#[track_caller]
fn expect_throttled(c: &mut Client) -> u64 {
    throttle_secs(&c.line())
}

/// N of a `! too many attempts, try again in N s` line; panics on any other.
#[track_caller]
fn throttle_secs(line: &str) -> u64 {
    let secs = line
        .strip_prefix("! too many attempts, try again in ")
        .and_then(|rest| rest.strip_suffix(" s"))
        .and_then(|n| n.parse::<u64>().ok())
        .unwrap_or_else(|| panic!("expected a too-many-attempts line, got {line:?}"));
    assert!((1..=60).contains(&secs), "wait of {secs} s: {line:?}");
    secs
}

/// After a login was sent: true if its password was checked (and was
/// wrong), false if it was refused by the throttle.
#[track_caller]
fn guess_was_checked(c: &mut Client) -> bool {
    c.expect(USERNAME);
    c.expect(PASSWORD);
    let line = c.line();
    if line == WRONG {
        return true;
    }
    throttle_secs(&line);
    false
}

/// Sends a login and expects the throttle answer, then the choice prompt.
#[track_caller]
fn login_throttled(c: &mut Client, name: &str, password: &str) -> u64 {
    c.send(&format!("L\n{name}\n{password}\n"));
    c.expect(USERNAME);
    c.expect(PASSWORD);
    let secs = expect_throttled(c);
    c.expect(CHOICE);
    secs
}

#[test]
fn connections_per_address_are_capped() {
    // A pool big enough that one address's share of it (a quarter) is not
    // what stops it.
    let server = Server::start(&["--exempt", "none", "--max-pending-logins", "200"]);
    let addr = server.addr;
    let probe = Probe::start(addr);
    let mut held: Vec<Client> = (0..16)
        .map(|_| {
            let mut c = connect_from(addr, 2);
            c.expect_welcome();
            c
        })
        .collect();
    // The 17th from the same address is told why and closed.
    for _ in 0..3 {
        let mut c = connect_from(addr, 2);
        c.expect(PER_IP);
        c.expect_closed();
    }
    // Another address is not affected.
    let mut other = connect_from(addr, 3);
    other.expect_welcome();
    probe.wait_progress(3);
    // When one goes, there is room again.
    drop(held.pop());
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let mut c = connect_from(addr, 2);
        let line = c.line();
        if parse_welcome(&line).is_some() {
            c.expect(CHOICE);
            break;
        }
        assert_eq!(line, PER_IP);
        assert!(Instant::now() < deadline, "the freed slot never came back");
        thread::sleep(Duration::from_millis(50));
    }
    // Logged-in users count too: the cap is on connections.
    let log = server.output();
    let warnings = log
        .lines()
        .filter(|l| l.contains("127.0.0.2") && l.contains("--max-per-ip"))
        .count();
    assert_eq!(warnings, 1, "one warning per source per minute:\n{log}");
    probe.finish();
}

#[test]
fn loopback_is_exempt_by_default_and_off_disables_the_cap() {
    let off = [
        "--exempt",
        "none",
        "--max-per-ip",
        "off",
        "--max-pending-logins",
        "off",
    ];
    for flags in [&[][..], &off[..]] {
        let server = Server::start(flags);
        let addr = server.addr;
        let mut held = Vec::new();
        for _ in 0..20 {
            let mut c = connect_from(addr, 1);
            c.expect_welcome();
            held.push(c);
        }
    }
    // A listed block is exempt; an address outside it is not.
    let server = Server::start(&["--exempt", "127.0.0.5/32,::1", "--max-per-ip", "1"]);
    let addr = server.addr;
    let mut a = connect_from(addr, 5);
    a.expect_welcome();
    let mut b = connect_from(addr, 5);
    b.expect_welcome();
    let mut c = connect_from(addr, 6);
    c.expect_welcome();
    let mut d = connect_from(addr, 6);
    d.expect(PER_IP);
    d.expect_closed();
}

#[test]
fn pending_logins_are_capped_server_wide() {
    let server = Server::start(&["--exempt", "none", "--max-per-ip", "off"]);
    let addr = server.addr;
    // Logged-in users do not count against the limit.
    let probe = Probe::start(addr);
    // 50 waiting from 40 addresses: the first ten hold two places each.
    // (All connected first, in order, then welcomed: each welcome waits
    // 0.3 s for a silent client.)
    let mut waiting: Vec<Client> = (0..50)
        .map(|i| connect_from(addr, 10 + (i % 40) as u8))
        .collect();
    for c in &mut waiting {
        c.expect_welcome();
    }
    // The pool is full. A newcomer from an address holding none takes the
    // oldest place of an address holding the most (127.0.0.10's first).
    let mut newcomer = connect_from(addr, 99);
    newcomer.expect_welcome();
    waiting[0].expect(BUSY);
    waiting[0].expect_closed();
    // And the next one 127.0.0.11's first.
    let mut second = connect_from(addr, 98);
    second.expect_welcome();
    waiting[1].expect(BUSY);
    waiting[1].expect_closed();
    // An address already holding a place waits its turn.
    let mut refused = connect_from(addr, 99);
    refused.expect(BUSY);
    refused.expect_closed();
    probe.wait_progress(3);
    // One of the waiting logs in: a place is free for it.
    waiting[5].register_here("pendc", &pw("pendc"));
    let mut again = connect_from(addr, 99);
    again.expect_welcome();
    // Nobody else lost a place (a sample; the one at 5 is chatting).
    for i in [2, 3, 9, 10, 30, 49] {
        waiting[i].quiet();
    }
    probe.finish();
}

#[test]
fn an_exempt_address_gets_in_when_pending_logins_are_full() {
    let server = Server::start(&[
        "--exempt",
        "127.0.0.7",
        "--max-pending-logins",
        "2",
        "--max-per-ip",
        "off",
    ]);
    let addr = server.addr;
    let mut a = connect_from(addr, 2);
    a.expect_welcome();
    let mut b = connect_from(addr, 3);
    b.expect_welcome();
    // A share of a pool of two is one place.
    let mut again = connect_from(addr, 3);
    again.expect(PER_IP);
    again.expect_closed();
    // Full: a third address takes the oldest place.
    let mut c = connect_from(addr, 4);
    c.expect_welcome();
    a.expect(BUSY);
    a.expect_closed();
    for _ in 0..5 {
        let mut local = connect_from(addr, 7);
        local.expect_welcome();
    }
    b.quiet();
    c.quiet();
}

#[test]
fn failed_logins_throttle_the_account_without_a_password_check() {
    // Loopback is exempt from per-address limits, never from this one.
    let server = Server::start_with_debug_log(&[]);
    let addr = server.addr;
    create_account(addr, "alice", &pw("alice"));
    let probe = Probe::start(addr);
    // Five wrong guesses, across connections (three end a connection).
    let mut c = Client::connect_welcomed(addr);
    for _ in 0..3 {
        c.send("L\nalice\nguess\n");
        c.expect(USERNAME);
        c.expect(PASSWORD);
        c.expect(WRONG);
        if c.line() == TOO_MANY {
            break;
        }
    }
    c.expect_closed();
    let mut c = Client::connect_welcomed(addr);
    c.login_fails("alice", "guess-4");
    c.login_fails("ALICE", "guess-5");
    let mut c = Client::connect_welcomed(addr);
    login_throttled(&mut c, "alice", "guess-6");
    // The owner, with the right password, is slowed down too.
    let mut owner = Client::connect_welcomed(addr);
    login_throttled(&mut owner, "Alice", &pw("alice"));
    // Unknown names are not accounts: nothing to throttle (loopback has no
    // per-address count).
    for _ in 0..2 {
        let mut c = Client::connect_welcomed(addr);
        for i in 0..3 {
            c.send(&format!("L\nnobody\nguess-{i}\n"));
            c.expect(USERNAME);
            c.expect(PASSWORD);
            c.expect(WRONG);
            if i < 2 {
                c.expect(CHOICE);
            }
        }
        c.expect(TOO_MANY);
    }
    login_throttled(&mut c, "alice", "guess-7");
    // Proof that the refused attempts never reached a worker: the server
    // logs (at debug) each password check it starts, and there is none for
    // these two connections (nothing else but throttled attempts came over
    // them). A check started for them would have been logged before its
    // answer, and they got theirs, so the log is complete for them.
    let throttled = [c.local_addr(), owner.local_addr()];
    drop((c, owner));
    // A later check, to be sure the log has caught up: its start is logged.
    let mut later = Client::connect_welcomed(addr);
    later.login_fails("nobody", "whatever");
    let later_addr = later.local_addr();
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while !connection_log(&server.output(), later_addr)
        .iter()
        .any(|l| l.contains("password check started"))
    {
        assert!(
            std::time::Instant::now() < deadline,
            "no check logged for a login that was checked:\n{}",
            server.output()
        );
        thread::sleep(Duration::from_millis(20));
    }
    let log = server.output();
    for peer in throttled {
        let mine = connection_log(&log, peer);
        assert!(
            !mine.iter().any(|l| l.contains("password check")),
            "a throttled attempt from {peer} reached a worker: {mine:#?}"
        );
    }
    probe.finish();
}

#[test]
fn failed_logins_throttle_the_address() {
    let server = Server::start(&["--exempt", "none"]);
    let addr = server.addr;
    create_account(addr, "carol", &pw("carol"));
    let probe = Probe::start(addr);
    // Five wrong guesses at names nobody holds, from 127.0.0.2.
    for i in 0..5 {
        let mut c = connect_from(addr, 2);
        c.expect_welcome();
        c.login_fails(&format!("ghost{i}"), "guess");
    }
    let mut c = connect_from(addr, 2);
    c.expect_welcome();
    // Now even the right password for a real account is refused from there.
    login_throttled(&mut c, "carol", &pw("carol"));
    // From another address, carol is welcome.
    let mut carol = connect_from(addr, 3);
    carol.expect_welcome();
    carol.login_here("carol", &pw("carol"), "carol");
    probe.finish();
}

#[test]
fn brute_force_from_several_addresses_gets_five_guesses_in_all() {
    let server = Server::start(&["--exempt", "none"]);
    let addr = server.addr;
    create_account(addr, "dave", &pw("dave"));
    let probe = Probe::start(addr);
    // Ten attackers take turns, two guesses each; the account allows five
    // failures a minute whoever makes them.
    let mut wrong = 0;
    let mut throttled = 0;
    for host in 20..30u8 {
        let mut c = connect_from(addr, host);
        c.expect_welcome();
        for g in 0..2 {
            c.send(&format!("L\ndave\nguess-{host}-{g}\n"));
            if guess_was_checked(&mut c) {
                wrong += 1;
            } else {
                throttled += 1;
            }
            c.expect(CHOICE);
        }
    }
    assert_eq!(wrong, 5, "guesses that ran a password check");
    assert_eq!(throttled, 15);
    probe.wait_progress(3);
    // The owner is slowed down as well (README: why).
    let mut owner = connect_from(addr, 40);
    owner.expect_welcome();
    login_throttled(&mut owner, "dave", &pw("dave"));
    probe.finish();
}

#[test]
fn registrations_per_address_are_throttled() {
    let server = Server::start(&["--exempt", "none"]);
    let addr = server.addr;
    create_account(addr, "taken", &pw("taken"));
    let probe = Probe::start(addr);
    let mut c = connect_from(addr, 2);
    c.expect_welcome();
    // A registration that makes no account does not count.
    c.send(&format!("R\ntaken\n{}\n", pw("x")));
    c.expect(USERNAME);
    c.expect(PASSWORD);
    c.expect(TAKEN);
    c.expect(CHOICE);
    let mut made = Vec::new();
    for i in 0..5 {
        let name = format!("reg{i}");
        let mut c = connect_from(addr, 2);
        c.expect_welcome();
        c.register_here(&name, &pw(&name));
        made.push(c);
    }
    c.send("R\nreg5\npassword-reg5\n");
    c.expect(USERNAME);
    c.expect(PASSWORD);
    c.expect(TOO_MANY_REGS);
    c.expect(CHOICE);
    // The connection is still usable: log in to an existing account.
    c.login_here("reg0", &pw("reg0"), "reg0");
    // Another address may register.
    let mut other = connect_from(addr, 3);
    other.expect_welcome();
    other.register_here("reg5", &pw("reg5"));
    probe.finish();
    // `off` lifts the limit.
    let server = Server::start(&["--exempt", "none", "--registrations-per-ip", "off"]);
    for i in 0..7 {
        let name = format!("free{i}");
        let mut c = connect_from(server.addr, 2);
        c.expect_welcome();
        c.register_here(&name, &pw(&name));
    }
}

#[test]
fn limit_flags_take_numbers_or_off() {
    for flag in [
        "--max-per-ip",
        "--max-pending-logins",
        "--login-attempts",
        "--registrations-per-ip",
        "--max-auth-queue",
    ] {
        for bad in ["0", "-1", "many", ""] {
            let (status, out) = run_binary(&[flag, bad], Duration::from_secs(10));
            let code = status.and_then(|s| s.code());
            assert_eq!(
                code,
                Some(2),
                "{flag} {bad:?} must be a usage error:\n{out}"
            );
        }
    }
    for bad in ["bogus", "10.0.0.0/33", "127.0.0.1,", ""] {
        let (status, out) = run_binary(&["--exempt", bad], Duration::from_secs(10));
        let code = status.and_then(|s| s.code());
        assert_eq!(
            code,
            Some(2),
            "--exempt {bad:?} must be a usage error:\n{out}"
        );
    }
    // All of them `off` at once: a server that starts and serves.
    let server = Server::start(&[
        "--max-per-ip",
        "off",
        "--max-pending-logins",
        "off",
        "--login-attempts",
        "off",
        "--registrations-per-ip",
        "off",
        "--max-auth-queue",
        "off",
        "--exempt",
        "none",
    ]);
    register(server.addr, "offuser", &pw("offuser"));
}

#[test]
fn http_tls_garbage_and_junk_get_the_shortest_answer() {
    let server = Server::start(&[]);
    let addr = server.addr;
    let probe = Probe::start(addr);
    // HTTP on the chat port is answered as HTTP, and closed.
    let mut http = Client::connect(addr);
    http.send("GET / HTTP/1.1\r\nHost: localhost:59000\r\nUser-Agent: curl/8\r\n\r\n");
    assert_eq!(http.line(), "HTTP/1.1 200 OK\r");
    http.drain_until_closed(Duration::from_secs(5));
    // A ClientHello that is not one: a TLS alert (a record of type 21), or
    // nothing, and the close; never a chat line.
    let mut tls = Client::connect(addr);
    let mut hello = vec![
        0x16, 0x03, 0x01, 0x00, 0xf4, 0x01, 0x00, 0x00, 0xf0, 0x03, 0x03,
    ];
    hello.extend(std::iter::repeat_n(0xab, 240));
    tls.send_bytes(&hello);
    let answer = tls.bytes_until_closed(Duration::from_secs(5));
    assert!(
        answer.is_empty() || answer[0] == 0x15,
        "not a TLS alert: {answer:?}"
    );
    // Binary junk as the first bytes (random bytes, NULs): closed at once,
    // with no reply at all.
    let mut x: u32 = 7;
    let noise: Vec<u8> = (0..4 * 1024)
        .map(|_| {
            x = x.wrapping_mul(1_103_515_245).wrapping_add(12345);
            (x >> 16) as u8
        })
        .collect();
    for bytes in [noise, vec![0u8; 512]] {
        let mut junk = Client::connect(addr);
        // The server may close while we are still writing.
        let _ = junk.try_send_bytes(&bytes);
        let started = Instant::now();
        assert_eq!(junk.drain_until_closed(Duration::from_secs(5)), 0);
        assert!(started.elapsed() < Duration::from_secs(2), "not at once");
    }
    probe.wait_progress(3);
    probe.finish();
}

#[test]
fn guesses_sent_at_once_from_many_addresses_stop_at_the_limit() {
    // Slow checks, one worker: all twelve guesses are in before any answer.
    let server = Server::start(&["--exempt", "none", "--bcrypt-cost", "9", "--workers", "1"]);
    let addr = server.addr;
    create_account(addr, "erin", &pw("erin"));
    let probe = Probe::start(addr);
    let mut attackers: Vec<Client> = (50..62u8)
        .map(|host| {
            let mut c = connect_from(addr, host);
            c.expect_welcome();
            c
        })
        .collect();
    for (i, c) in attackers.iter_mut().enumerate() {
        c.send(&format!("L\nerin\nguess-{i}\n"));
    }
    let (mut wrong, mut throttled) = (0, 0);
    for c in &mut attackers {
        if guess_was_checked(c) {
            wrong += 1;
        } else {
            throttled += 1;
        }
    }
    assert_eq!((wrong, throttled), (5, 7), "password checks that ran");
    probe.finish();
}

#[test]
fn abandoned_guesses_count_for_their_address() {
    let server = Server::start(&["--exempt", "none"]);
    let addr = server.addr;
    create_account(addr, "fred", &pw("fred"));
    let probe = Probe::start(addr);
    // Send a guess, then reset before the answer: no answer is ever seen,
    // but the server may have hashed, so it counts.
    for i in 0..5 {
        let mut c = connect_from(addr, 2);
        c.expect_welcome();
        c.send(&format!("L\nfred\nguess-{i}\n"));
        c.expect(USERNAME);
        c.expect(PASSWORD);
        c.reset();
    }
    let mut c = connect_from(addr, 2);
    c.expect_welcome();
    login_throttled(&mut c, "fred", &pw("fred"));
    // fred's own account is not blocked by checks nobody waited for.
    let mut owner = connect_from(addr, 3);
    owner.expect_welcome();
    owner.login_here("fred", &pw("fred"), "fred");
    probe.finish();
}

/// A token that logs nobody in is a failed login of its address too: past
/// `--login-attempts` such guesses in a minute, even a good token (or
/// password) from there is refused without a look-up, and other addresses
/// are not affected.
#[test]
fn wrong_tokens_throttle_the_address_like_wrong_passwords() {
    let server = Server::start(&["--exempt", "none"]);
    let addr = server.addr;
    let mut owner = connect_from(addr, 3);
    owner.expect_welcome();
    owner.register_here("gina", &pw("gina"));
    owner.send("/token\n");
    let token = owner
        .line()
        .strip_prefix("* token ")
        .map(str::to_owned)
        .expect("a token");
    owner.quit();
    let wrong = "A".repeat(32);
    for _ in 0..5 {
        let mut c = connect_from(addr, 2);
        c.expect_welcome();
        c.send(&format!("T\n{wrong}\n"));
        c.expect("? token");
        c.expect("! invalid or expired token");
        c.expect(CHOICE);
    }
    let mut c = connect_from(addr, 2);
    c.expect_welcome();
    c.send(&format!("T\n{token}\n"));
    c.expect("? token");
    expect_throttled(&mut c);
    c.expect(CHOICE);
    login_throttled(&mut c, "gina", &pw("gina"));
    // From another address the token works.
    let mut other = connect_from(addr, 4);
    other.expect_welcome();
    other.send(&format!("T\n{token}\n"));
    other.expect("? token");
    other.expect("* logged in as gina");
}
