//! Hostile input: each case attacks the real server over loopback while a
//! well-behaved [`Probe`] pair chats, and asserts both what the attacker
//! gets and that the probe kept every message, in order, without an error
//! or a lost connection.

use std::io::Write;
use std::net::{SocketAddr, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use crate::util::*;

/// Generous wait for what must eventually happen.
const EVENTUALLY: Duration = Duration::from_secs(30);

/// A client with a tiny receive buffer, set before connecting so that the
/// window is small from the first byte: what the server sends it piles up in
/// the server's own queue early and always at about the same point.
fn small_window_client(addr: SocketAddr, label: &str) -> Client {
    use socket2::{Domain, Socket, Type};
    let socket = Socket::new(Domain::IPV4, Type::STREAM, None).expect("socket");
    socket.set_recv_buffer_size(4096).expect("SO_RCVBUF");
    socket.connect(&addr.into()).expect("connect");
    Client::from_stream(TcpStream::from(socket)).with_label(label)
}

/// The lines of `heard` that are about `name`: its messages and notices.
fn about<'a>(heard: &'a [String], name: &str) -> Vec<&'a str> {
    let said = format!("{name}: ");
    let notice = format!("* {name} ");
    heard
        .iter()
        .filter(|l| l.starts_with(&said) || l.starts_with(&notice))
        .map(String::as_str)
        .collect()
}

// ---------------------------------------------------------------- 1. flood

/// A Chatting user sends 10,000 lines in bursts over ~2.5 s at the default
/// `--rate 10`: the burst of 20 and the refill pass, the rest is dropped,
/// `! slow down` comes at most about once a second, and the flooder can
/// still talk afterwards.
#[test]
fn flood_from_a_chatting_user_is_dropped() {
    const BATCHES: usize = 40;
    const PER_BATCH: usize = 250;
    let s = Server::start(&[]);
    let probe = Probe::start(s.addr);
    let mut flooder = register(s.addr, "flooder", &pw("flooder"));
    probe.wait_heard("* flooder joined");

    let t0 = Instant::now();
    for batch in 0..BATCHES {
        let text: String = (batch * PER_BATCH..(batch + 1) * PER_BATCH)
            .map(|i| format!("flood {i}\n"))
            .collect();
        flooder.send(&text);
        thread::sleep(Duration::from_millis(60));
    }
    let span = t0.elapsed();
    probe.wait_progress(3);
    // Whatever the server says to the flooder about it has come by now.
    let heard = flooder.lines_for(Duration::from_millis(1500));
    let warnings = heard.iter().filter(|l| *l == SLOW_DOWN).count();
    let unexpected: Vec<&String> = heard
        .iter()
        .filter(|l| *l != SLOW_DOWN && !probe.is_probe_line(l))
        .collect();
    assert!(unexpected.is_empty(), "the flooder got {unexpected:?}");
    // One warning per second of flooding at most: ~3 for a 2.5 s flood
    // (and a margin for a server that lags behind the flood).
    let most = span.as_secs_f64().ceil() as usize + 2;
    assert!(
        (1..=most).contains(&warnings),
        "{warnings} `! slow down` for a flood of {span:?} (expected 1..={most})"
    );

    // The flooder is still a user like any other.
    flooder.send("after the flood\n");
    probe.wait_heard("flooder: after the flood");
    let report = probe.finish();

    let passed: Vec<usize> = report
        .rx_heard
        .iter()
        .filter_map(|l| l.strip_prefix("flooder: flood "))
        .map(|n| n.parse().expect("a flood line's number"))
        .collect();
    // The burst, plus 10 a second while flooding (and a margin for lag).
    let allowed = 20 + (10.0 * (span.as_secs_f64() + 2.0)).ceil() as usize;
    assert!(
        (20..=allowed).contains(&passed.len()),
        "{} of {} flood lines reached the others (expected 20..={allowed})",
        passed.len(),
        BATCHES * PER_BATCH
    );
    assert_eq!(
        passed[..20],
        (0..20).collect::<Vec<_>>()[..],
        "the burst is the first 20 lines"
    );
    assert!(
        passed.windows(2).all(|w| w[0] < w[1]),
        "flood lines out of order: {passed:?}"
    );
    println!(
        "flood: {} lines in {span:?}, {} passed, {warnings} warnings; {} probe messages, \
         max latency {:?}",
        BATCHES * PER_BATCH,
        passed.len(),
        report.sent,
        report.max_latency
    );
}

/// A client floods `x` lines before logging in and never reads: every line
/// earns an error and a prompt, ~29 bytes out per byte in. The server must
/// cut it off at `--max-output` instead of queueing ~58 MB for it.
#[test]
fn flood_before_login_is_cut_off() {
    const CHUNK_LINES: usize = 32 * 1024;
    const CHUNKS: usize = 32; // a million lines, 2 MB
    let s = Server::start(&["--max-output", "65536"]);
    let probe = Probe::start(s.addr);
    let mut attacker = Client::connect(s.addr).with_label("pre-login flooder");
    let chunk = "x\n".repeat(CHUNK_LINES);
    let mut written = 0;
    let mut write_error = None;
    for _ in 0..CHUNKS {
        match attacker.try_send_bytes(chunk.as_bytes()) {
            Ok(()) => written += CHUNK_LINES,
            Err(e) => {
                write_error = Some(e);
                break;
            }
        }
    }
    probe.wait_progress(3);
    // Answering every line would take ~58 MB: the server must not hold it.
    let peak = s.peak_rss_kib();
    assert!(
        peak < 40 * 1024,
        "the server's peak RSS is {peak} KiB: it queued the flooder's output"
    );
    let answered = attacker.drain_until_closed(EVENTUALLY);
    println!(
        "pre-login flood: {written} lines written (then {write_error:?}), {answered} bytes \
         came back before the cut-off; server peak RSS {peak} KiB"
    );
    assert!(
        answered < 8 << 20,
        "the flooder got {answered} bytes back: never cut off"
    );

    // The server still takes newcomers.
    let mut newbie = register(s.addr, "newbie", &pw("newbie"));
    newbie.send("made it\n");
    probe.wait_heard("newbie: made it");
    probe.finish();
}

// ---------------------------------------------------------------- 2. slow reader

/// A Chatting user that never reads (4 KB receive buffer) while another
/// sends 4 KB lines: it is cut off once `--max-output` is queued for it; the
/// others, the probe included, get every line in order.
#[test]
fn slow_reader_is_cut_off() {
    const BATCH: usize = 10; // 10 × ~4 KB < the 64 KiB cap: readers never pass it
    const MAX_BATCHES: usize = 300; // 12 MB; the cut-off comes after ~3 MB
    let s = Server::start(&["--rate", "off", "--max-output", "65536"]);
    let probe = Probe::start(s.addr);
    let mut slow = small_window_client(s.addr, "slowpoke");
    slow.expect_welcome();
    slow.register_here("slowpoke", &pw("slowpoke"));
    // From here on `slowpoke` reads nothing until the end.
    let mut loud = register(s.addr, "loud", &pw("loud"));
    let mut bob = register(s.addr, "bob", &pw("bob"));
    loud.expect_past(&probe, "* bob joined");

    // In lockstep with bob and the probe, who read.
    let payload = "x".repeat(4000);
    let mut sent = 0;
    let mut left = false;
    for batch in 0..MAX_BATCHES {
        let text: String = (batch * BATCH..(batch + 1) * BATCH)
            .map(|i| format!("{i:05} {payload}\n"))
            .collect();
        loud.send(&text);
        sent += BATCH;
        let mut i = batch * BATCH;
        while i < sent {
            let line = bob.line_past(&probe);
            if line == "* slowpoke left" && !left {
                left = true;
                continue;
            }
            assert!(
                line == format!("loud: {i:05} {payload}"),
                "bob: message {i} is {:?}...",
                &line[..line.len().min(40)]
            );
            i += 1;
        }
        // The probe keeps up too, so only slowpoke can pass the cap.
        probe.wait_heard_by_both(&format!("loud: {:05} {payload}", sent - 1));
        if left {
            break;
        }
    }
    assert!(left, "slowpoke was never cut off ({sent} lines of 4 KB)");
    loud.expect_past(&probe, "* slowpoke left");
    probe.wait_heard("* slowpoke left");
    probe.wait_progress(3);
    let drained = slow.drain_until_closed(EVENTUALLY);
    println!("slowpoke cut off after {sent} lines; it had {drained} bytes to read");
    assert!(
        drained < sent * 4000,
        "slowpoke got everything: {drained} bytes"
    );

    bob.send("/who\n");
    let names = loop {
        let line = bob.line_past(&probe);
        if let Some(names) = parse_online(&line) {
            break names;
        }
    };
    assert!(!names.iter().any(|n| n == "slowpoke"), "{names:?}");
    assert_eq!(names.len(), 4, "{names:?}");

    let report = probe.finish();
    // The probe heard every line of `loud`, in order, and slowpoke leave once.
    let louds: Vec<&String> = report
        .rx_heard
        .iter()
        .filter(|l| l.starts_with("loud: "))
        .collect();
    assert_eq!(louds.len(), sent, "the probe missed lines of loud");
    for (i, line) in louds.iter().enumerate() {
        assert!(
            line.starts_with(&format!("loud: {i:05} ")),
            "line {i}: {line:.20}"
        );
    }
    let lefts = report
        .rx_heard
        .iter()
        .filter(|l| *l == "* slowpoke left")
        .count();
    assert_eq!(lefts, 1, "`* slowpoke left` {lefts} times");
    assert!(
        report.tx_heard.iter().any(|l| l == "* slowpoke left"),
        "{:?}",
        report.tx_heard
    );
}

// ---------------------------------------------------------------- 3. trickle

/// Logging in and chatting one byte per write, CRLF included, with
/// multi-byte characters split between writes: everything arrives intact.
#[test]
fn byte_at_a_time_sender() {
    let s = Server::start(&[]);
    let probe = Probe::start(s.addr);
    create_account(s.addr, "trickle", &pw("trickle"));
    let mut t = Client::connect(s.addr).with_label("trickle");
    t.expect_welcome();
    let pause = Duration::from_millis(3);
    t.send_slowly(b"L\r\n", pause);
    t.expect(USERNAME);
    t.send_slowly(b"trickle\r\n", pause);
    t.expect(PASSWORD);
    t.send_slowly(format!("{}\r\n", pw("trickle")).as_bytes(), pause);
    t.expect("* logged in as trickle");
    let online = t.line_past(&probe);
    assert!(parse_online(&online).is_some(), "{online:?}");

    // Slow enough that probe lines cross it on the server.
    let msg = "héllo, one byte at a time: ünïcode split too ✓";
    t.send_slowly(format!("{msg}\r\n").as_bytes(), Duration::from_millis(10));
    let want = format!("trickle: {msg}");
    probe.wait_heard(&want);
    t.quiet_past(&probe, QUIET);
    t.quit_past(&probe);
    probe.wait_heard("* trickle left");
    let report = probe.finish();
    let got = about(&report.rx_heard, "trickle");
    assert_eq!(
        got,
        [
            "* trickle joined",
            "* trickle left",
            "* trickle joined",
            want.as_str(),
            "* trickle left"
        ],
        "what the probe heard of trickle"
    );
}

// ---------------------------------------------------------------- 4. half-close

/// Login, two messages and a FIN in one go: the lines before the FIN still
/// count, then the user leaves.
#[test]
fn half_close_after_sending() {
    let s = Server::start(&[]);
    let probe = Probe::start(s.addr);
    create_account(s.addr, "halfer", &pw("halfer"));
    probe.wait_heard("* halfer left");
    let mut h = Client::connect(s.addr).with_label("halfer");
    h.send(&format!("L\nhalfer\n{}\nhello\nbye-line\n", pw("halfer")));
    h.shutdown_write();
    let lines: Vec<String> = h
        .lines_until_closed(EVENTUALLY)
        .into_iter()
        .filter(|l| !probe.is_probe_line(l))
        .collect();
    assert_eq!(lines.len(), 6, "halfer got {lines:?}");
    assert!(parse_welcome(&lines[0]).is_some(), "{lines:?}");
    assert_eq!(
        lines[1..5],
        [CHOICE, USERNAME, PASSWORD, "* logged in as halfer"],
        "{lines:?}"
    );
    assert!(parse_online(&lines[5]).is_some(), "{lines:?}");

    probe.wait_heard("halfer: bye-line");
    let report = probe.finish();
    let got = about(&report.rx_heard, "halfer");
    assert_eq!(
        got,
        [
            "* halfer joined",
            "* halfer left",
            "* halfer joined",
            "halfer: hello",
            "halfer: bye-line",
            "* halfer left"
        ],
        "what the probe heard of halfer"
    );
}

// ---------------------------------------------------------------- 5. reset

/// A client stops reading while megabytes are queued for it, then resets:
/// the server drops it and its queue, the others hear it left, and new
/// users still get in.
#[test]
fn reset_with_output_queued() {
    const BATCH: usize = 10;
    const BATCHES: usize = 150; // 6 MB: past the ~3 MB loopback buffers take
    // A cap above what is sent: the queue is dropped by the reset, not the cap.
    let s = Server::start(&["--rate", "off", "--max-output", "16777216"]);
    let probe = Probe::start(s.addr);
    let mut gone = small_window_client(s.addr, "resetter");
    gone.expect_welcome();
    gone.register_here("resetter", &pw("resetter"));
    let mut loud = register(s.addr, "loud", &pw("loud"));
    let mut bob = register(s.addr, "bob", &pw("bob"));
    loud.expect_past(&probe, "* bob joined");

    let rss_start = s.peak_rss_kib();
    let payload = "q".repeat(4000);
    for batch in 0..BATCHES {
        let text: String = (batch * BATCH..(batch + 1) * BATCH)
            .map(|i| format!("{i:05} {payload}\n"))
            .collect();
        loud.send(&text);
        for i in batch * BATCH..(batch + 1) * BATCH {
            let line = bob.line_past(&probe);
            assert!(
                line == format!("loud: {i:05} {payload}"),
                "bob: message {i} is {:?}...",
                &line[..line.len().min(40)]
            );
        }
    }
    // The premise: megabytes wait in the server for the resetter.
    let rss_before = s.peak_rss_kib();
    assert!(
        rss_before > rss_start + 1024,
        "peak RSS {rss_start} -> {rss_before} KiB: no output queued for the resetter?"
    );
    gone.reset();
    bob.expect_past(&probe, "* resetter left");
    loud.expect_past(&probe, "* resetter left");
    probe.wait_heard("* resetter left");
    println!("reset with output queued (server peak RSS {rss_start} -> {rss_before} KiB)");

    // Still accepting and logging people in.
    let mut newcomer = register(s.addr, "newcomer", &pw("newcomer"));
    bob.expect_past(&probe, "* newcomer joined");
    newcomer.send("hi after the reset\n");
    bob.expect_past(&probe, "newcomer: hi after the reset");
    probe.wait_heard("newcomer: hi after the reset");
    probe.wait_progress(3);
    let report = probe.finish();
    let lefts = report
        .rx_heard
        .iter()
        .filter(|l| *l == "* resetter left")
        .count();
    assert_eq!(lefts, 1, "`* resetter left` {lefts} times");
    assert!(!s.output().contains("panicked"), "{}", s.output());
}

// ---------------------------------------------------------------- 6. idle crowd

/// 1,000 connections that never log in: the probe chats on, a newcomer
/// registers and chats, and once they all drop the server lets go of them.
#[test]
fn thousand_idle_connections() {
    const IDLE: usize = 1000;
    let s = Server::start(&["--login-timeout", "600"]);
    let probe = Probe::start(s.addr);
    let fds_before = s.fds().len();
    let mut idle: Vec<Client> = Vec::with_capacity(IDLE);
    for _ in 0..IDLE / 100 {
        let start = idle.len();
        idle.extend((0..100).map(|_| Client::connect(s.addr)));
        for c in &mut idle[start..] {
            assert_eq!(c.expect_welcome(), 2, "{}: online count", c.label);
        }
    }
    probe.wait_progress(3);

    let mut newbie = register(s.addr, "newbie", &pw("newbie"));
    newbie.send("hello over the crowd\n");
    probe.wait_heard("newbie: hello over the crowd");
    newbie.send("/who\n");
    let online = newbie.line_past(&probe);
    assert_eq!(
        parse_online(&online).map(|n| n.len()),
        Some(3),
        "{online:?}"
    );
    // An idle one still gets answers.
    idle[IDLE - 1].send("R\n");
    idle[IDLE - 1].expect(USERNAME);
    let fds_crowded = s.fds().len();

    drop(idle);
    let deadline = Instant::now() + EVENTUALLY;
    while s.fds().len() > fds_before + 10 {
        assert!(
            Instant::now() < deadline,
            "the server still holds {} descriptors after the crowd left",
            s.fds().len()
        );
        thread::sleep(Duration::from_millis(20));
    }
    println!(
        "descriptors: {fds_before} -> {fds_crowded} -> {}",
        s.fds().len()
    );
    let mut late = Client::connect(s.addr);
    assert_eq!(late.expect_welcome(), 3);
    probe.wait_progress(3);
    probe.finish();
}

// ---------------------------------------------------------------- 7. EMFILE

/// (Supersedes the old `limits::emfile_recovery`.) Under RLIMIT_NOFILE 64,
/// connect until the server cannot accept: it keeps serving the probe,
/// does not spin (CPU over a 2 s window), and once descriptors free up it
/// accepts the waiting connections and new ones, which can log in.
#[test]
fn fd_exhaustion_does_not_spin_and_recovers() {
    const NOFILE: usize = 64;
    // Connecting one at a time takes a while on a loaded machine: the
    // first connections must not reach the login timeout meanwhile.
    let s = Server::start_with_nofile(&["--login-timeout", "600"], NOFILE as u64);
    let probe = Probe::start(s.addr);
    let mut accepted: Vec<Client> = Vec::new();
    let mut waiting: Vec<Client> = Vec::new();
    // One at a time until the server reports that accept failed; a client
    // not answered within 2 s is counted as waiting (on a slow machine it
    // may just be late: then it is answered later, which is fine too).
    while !s.output().contains("accept failed") {
        assert!(
            accepted.len() + waiting.len() < 2 * NOFILE,
            "still no accept failure after {} connections",
            accepted.len() + waiting.len()
        );
        let mut c = Client::connect(s.addr);
        if c.readable_within(Duration::from_secs(2)) {
            assert_eq!(c.expect_welcome(), 2);
            accepted.push(c);
        } else {
            waiting.push(c);
        }
    }
    waiting.extend((0..4).map(|_| Client::connect(s.addr)));
    let usable = s.fds().into_iter().filter(|&fd| fd < NOFILE).count();
    println!(
        "fd exhaustion: {} accepted, {} waiting, {usable} of {NOFILE} descriptors in use",
        accepted.len(),
        waiting.len()
    );

    // (a) It serves the probe.
    probe.wait_progress(3);
    // (b) It does not spin while connections wait in the backlog.
    let window = Duration::from_secs(2);
    let cpu0 = s.cpu_time();
    let t0 = Instant::now();
    thread::sleep(window);
    let cpu = s.cpu_time() - cpu0;
    let wall = t0.elapsed();
    println!(
        "fd exhaustion: server CPU {cpu:?} over {wall:?} ({:.1}% of a core)",
        100.0 * cpu.as_secs_f64() / wall.as_secs_f64()
    );
    assert!(
        cpu < wall / 2,
        "the server used {cpu:?} of CPU in {wall:?} while out of descriptors: spinning"
    );
    // Still out of descriptors: connections still wait in the backlog.
    let mut unanswered = 0;
    for c in &mut waiting {
        unanswered += usize::from(!c.readable_within(Duration::from_millis(1)));
    }
    assert!(unanswered > 0, "every waiting connection was accepted");

    // (c) It recovers once descriptors free up.
    accepted.truncate(accepted.len() - 10);
    for c in &mut waiting {
        let line = c.line_within(EVENTUALLY);
        assert!(parse_welcome(&line).is_some(), "{}: got {line:?}", c.label);
        c.expect(CHOICE);
    }
    let mut fresh = Client::connect(s.addr).with_label("fresh");
    let line = fresh.line_within(EVENTUALLY);
    assert!(parse_welcome(&line).is_some(), "fresh: got {line:?}");
    fresh.expect(CHOICE);
    fresh.register_here("fresh", &pw("fresh"));
    fresh.send("back in business\n");
    probe.wait_heard("fresh: back in business");
    waiting[0].register_here("waited", &pw("waited"));
    probe.wait_heard("* waited joined");
    probe.finish();
}

// ---------------------------------------------------------------- 9. stale auth

/// An auth result that comes back after its connection closed must not log
/// in whoever got the connection's slot since, nor leave the account online.
#[test]
fn stale_auth_result_logs_nobody_in() {
    // One worker, ~0.8 s per check here: a job outlives its connection.
    let s = Server::start(&["--bcrypt-cost", "12", "--workers", "1"]);
    register_patiently(s.addr, "victim", &pw("victim")).quit();
    let probe = Probe::start(s.addr);
    let login_line = format!("L\nvictim\n{}\n", pw("victim"));

    // A's correct login is being checked when A resets; B connects (into
    // A's freed slot) and logs in with a wrong password while A's job runs.
    let mut a = Client::connect(s.addr).with_label("A");
    a.expect_welcome();
    a.send(&login_line);
    a.expect(USERNAME);
    a.expect(PASSWORD);
    a.reset();
    // Let the server see the reset and free the slot (the check takes longer).
    thread::sleep(Duration::from_millis(200));
    let mut b = Client::connect(s.addr).with_label("B");
    b.expect_welcome();
    b.send("L\nmallory\nnot-the-password\n");
    b.expect(USERNAME);
    b.expect(PASSWORD);
    // B's own answer comes after A's (one worker, in order).
    let got = b.line_within(EVENTUALLY);
    assert_eq!(got, WRONG, "B got A's login");
    b.expect(CHOICE);
    b.quiet();
    let names = probe.who();
    assert!(
        !names.iter().any(|n| n == "victim"),
        "victim online: {names:?}"
    );

    // A2 sends a correct login and closes (FIN) while it is checked.
    let mut a2 = Client::connect(s.addr).with_label("A2");
    a2.expect_welcome();
    a2.send(&login_line);
    a2.expect(USERNAME);
    a2.expect(PASSWORD);
    drop(a2);
    // A later check finishing proves A2's is done.
    let mut c = Client::connect_welcomed(s.addr).with_label("C");
    c.send("L\nnobody\nwrong-password\n");
    c.expect(USERNAME);
    c.expect(PASSWORD);
    assert_eq!(c.line_within(EVENTUALLY), WRONG);
    c.expect(CHOICE);
    let deadline = Instant::now() + EVENTUALLY;
    loop {
        let names = probe.who();
        if !names.iter().any(|n| n == "victim") {
            break;
        }
        assert!(Instant::now() < deadline, "victim left online: {names:?}");
        thread::sleep(Duration::from_millis(100));
    }

    // The account itself is fine.
    let mut victim = Client::connect_welcomed(s.addr).with_label("victim");
    victim.send(&login_line);
    victim.expect(USERNAME);
    victim.expect(PASSWORD);
    assert_eq!(victim.line_within(EVENTUALLY), "* logged in as victim");
    victim.expect_online();
    probe.wait_heard("* victim joined");
    victim.quit_past(&probe);
    probe.wait_heard("* victim left");
    let (tx_name, rx_name) = (probe.tx_name.clone(), probe.rx_name.clone());
    let report = probe.finish();
    // The pair is still logged in, and alone.
    let (mut rx, mut tx) = (report.rx.unwrap(), report.tx.unwrap());
    tx.send("/who\n");
    assert_eq!(tx.expect_online(), [rx_name, tx_name.clone()]);
    tx.send("still here\n");
    rx.expect(&format!("{tx_name}: still here"));
    // A2 may have been logged in for a moment (then left at once); A never.
    let got = about(&report.rx_heard, "victim");
    assert!(
        got == [
            "* victim joined",
            "* victim left",
            "* victim joined",
            "* victim left"
        ] || got == ["* victim joined", "* victim left"],
        "what the probe heard of victim: {got:?}"
    );
}

// ---------------------------------------------------------------- 10. SIGTERM

/// SIGTERM with chatting users broadcasting and others mid-login: every
/// connection's last line is `* server shutting down`, then it closes, and
/// the process exits 0 within 2 s plus a margin.
#[test]
fn sigterm_under_load() {
    const CHATTERS: usize = 4;
    // ~0.2 s a check: one can be in progress when the signal lands.
    let mut s = Server::start(&["--bcrypt-cost", "10"]);
    let probe = Probe::start(s.addr);
    let mut chatters = Vec::new();
    for k in 0..CHATTERS {
        let name = format!("chatter{k}");
        chatters.push(register_patiently(s.addr, &name, &pw(&name)));
    }
    let mut talkers = Vec::new();
    for (k, mut c) in chatters.into_iter().enumerate() {
        let stop = Arc::new(AtomicBool::new(false));
        let mut w = c.writer_clone();
        let stop_w = stop.clone();
        let writer = thread::spawn(move || {
            let mut i = 0;
            while !stop_w.load(Ordering::SeqCst) {
                if w.write_all(format!("line {i} from {k}\n").as_bytes())
                    .is_err()
                {
                    break;
                }
                i += 1;
                thread::sleep(Duration::from_millis(120));
            }
        });
        let reader = thread::spawn(move || {
            let lines = c.lines_until_closed(EVENTUALLY);
            stop.store(true, Ordering::SeqCst);
            lines
        });
        talkers.push((writer, reader));
    }
    let mut waiting = Client::connect_welcomed(s.addr).with_label("waiting");
    let mut typing = Client::connect_welcomed(s.addr).with_label("typing");
    typing.send("R\n");
    typing.expect(USERNAME);
    let mut partial = Client::connect_welcomed(s.addr).with_label("partial");
    partial.send("R\nhalf-a-na");
    partial.expect(USERNAME);
    probe.wait_progress(5);
    let mut checking = Client::connect_welcomed(s.addr).with_label("checking");
    checking.send("L\nchatter0\nnot-the-password\n");
    checking.expect(USERNAME);
    checking.expect(PASSWORD);
    let received = probe.received();

    s.sigterm();
    let t0 = Instant::now();
    let status = s
        .wait_exit(Duration::from_secs(5))
        .expect("server still running 5 s after SIGTERM");
    println!("exited {status:?} {:?} after SIGTERM", t0.elapsed());
    assert_eq!(status.code(), Some(0), "exit status {status:?}");

    for (k, (writer, reader)) in talkers.into_iter().enumerate() {
        let lines = reader.join().expect("reader thread");
        writer.join().expect("writer thread");
        assert_eq!(
            lines.last().map(String::as_str),
            Some(SHUTTING_DOWN),
            "chatter{k}: last lines {:?}",
            &lines[lines.len().saturating_sub(5)..]
        );
        let errors: Vec<&String> = lines.iter().filter(|l| l.starts_with("! ")).collect();
        assert!(errors.is_empty(), "chatter{k} got {errors:?}");
    }
    for c in [&mut waiting, &mut typing, &mut partial, &mut checking] {
        let lines = c.lines_until_closed(EVENTUALLY);
        let last = lines.last().map(String::as_str);
        assert_eq!(last, Some(SHUTTING_DOWN), "{}: {lines:?}", c.label);
        assert!(
            !lines.iter().any(|l| l.starts_with("* logged in")),
            "{}: {lines:?}",
            c.label
        );
    }
    probe.finish_at_shutdown(received);
}

// ---------------------------------------------------------------- the probe itself

/// The probe's verdict names what went wrong.
#[test]
fn probe_names_missing_reordered_and_duplicated_messages() {
    assert!(sequence_problems(&[0, 1, 2, 3], false, 4).is_empty());
    assert!(sequence_problems(&[0, 1, 2], true, 5).is_empty());
    let p = sequence_problems(&[0, 1, 3], false, 5).join("; ");
    assert_eq!(
        p,
        "missing: 2 of 5 probe messages never arrived, first [2, 4]"
    );
    let p = sequence_problems(&[0, 2, 1, 3], false, 4).join("; ");
    assert_eq!(p, "reordered: probe 1 arrived after probe 2");
    let p = sequence_problems(&[0, 1, 1, 2], false, 3).join("; ");
    assert_eq!(
        p,
        "duplicated: 1 probe messages arrived more than once, first [1]"
    );
    let p = sequence_problems(&[0, 2], true, 3).join("; ");
    assert!(p.starts_with("missing: 1 of 3"), "{p}");
}

// ---------------------------------------------------------- coordinated burst

/// Twenty users each send one full flood-control burst (20 lines of 4,000
/// bytes, 80 KB) at the same instant: 1.6 MB for every reader, more than the
/// 1 MiB output limit. Readers that keep reading must not be cut off as if
/// they were slow: a few accounts acting together must not be able to
/// disconnect the whole room. The server is stopped (SIGSTOP) while the
/// bursts are written, so that all of them are ready in one loop turn.
/// The byte rate is off: it would let only four of each burst's lines
/// through (`output::a_few_senders_do_not_cut_off_a_slow_link` covers it);
/// this is about what reaches readers when the line rate alone allows it.
#[test]
fn coordinated_bursts_do_not_cut_off_readers() {
    const SENDERS: usize = 20;
    let s = Server::start(&["--rate-bytes", "off"]);
    let probe = Probe::start(s.addr);
    let mut senders = burst_senders(s.addr, &probe, SENDERS);
    let (_, bursts) = send_bursts_at_once(&s, probe, &mut senders);
    println!("probe heard {bursts} burst lines of {}", SENDERS * 20);
    assert_eq!(bursts, SENDERS * 20, "every burst line reached the reader");
}

/// With flood control off, one user sends as fast as TCP allows, more than
/// the server lets everyone's output grow: its input is held back, but it
/// must not hold back anybody else's. The probe keeps chatting, and a
/// newcomer logs in and is heard, while the flood goes on.
#[test]
fn a_flooder_without_flood_control_does_not_starve_others() {
    let s = Server::start(&["--rate", "off", "--max-output", "65536"]);
    let probe = Probe::start(s.addr);
    let flooder = register(s.addr, "torrent", &pw("torrent"));
    probe.wait_heard("* torrent joined");
    let mut writer = flooder.writer_clone();
    let stop = Arc::new(AtomicBool::new(false));
    let flood = {
        let stop = stop.clone();
        thread::spawn(move || {
            let chunk: String = (0..64).map(|_| format!("{}\n", "t".repeat(1000))).collect();
            let mut sent = 0usize;
            while !stop.load(Ordering::SeqCst) && writer.write_all(chunk.as_bytes()).is_ok() {
                sent += chunk.len();
            }
            sent
        })
    };
    // Let the flood get going, then check everybody else still gets a turn.
    thread::sleep(Duration::from_millis(300));
    probe.wait_progress(5);
    let mut newcomer = register(s.addr, "newcomer", &pw("newcomer"));
    newcomer.send("made it\n");
    probe.wait_heard("newcomer: made it");
    stop.store(true, Ordering::SeqCst);
    // The flooder's writes stop once it is blocked or done; unblock it.
    flooder.shutdown_write();
    let sent = flood.join().expect("flood thread");
    println!("flooder sent {} MB", sent / 1_000_000);
    let report = probe.finish();
    assert!(
        report.rx_heard.iter().any(|l| l.starts_with("torrent: ")),
        "the flood was delivered too, not only held"
    );
    drop(newcomer);
}
