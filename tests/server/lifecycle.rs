//! The process: signals, restarts, what is on disk, flags, IPv6.

use std::path::Path;
use std::time::Duration;

use crate::util::*;

fn shutdown_on(sig: libc::c_int) {
    let mut s = Server::start(&[]);
    let mut alice = register(s.addr, "alice", &pw("alice"));
    let mut bob = join(s.addr, "bob", &mut [&mut alice]);
    let mut carol = join(s.addr, "carol", &mut [&mut alice, &mut bob]);
    s.signal(sig);
    for c in [&mut alice, &mut bob, &mut carol] {
        c.expect(SHUTTING_DOWN);
        c.expect_closed();
    }
    let status = s
        .wait_exit(Duration::from_secs(5))
        .expect("server still running 5 s after the signal");
    assert_eq!(status.code(), Some(0), "exit status {status:?}");
}

#[test]
fn sigterm_shuts_down_cleanly() {
    shutdown_on(libc::SIGTERM);
}

#[test]
fn sigint_shuts_down_cleanly() {
    shutdown_on(libc::SIGINT);
}

/// "output is flushed for up to 2 s": a client that never reads cannot hold
/// the shutdown up.
/// No signal but SIGINT and SIGTERM stops the server: SIGHUP reloads the
/// certificate, the others whose default would end the process are logged
/// and ignored, and chat goes on throughout.
#[test]
fn only_sigint_and_sigterm_stop_the_server() {
    let mut s = Server::start(&[]);
    let mut alice = register(s.addr, "alice", &pw("alice"));
    for sig in [
        libc::SIGHUP,
        libc::SIGUSR1,
        libc::SIGUSR2,
        libc::SIGALRM,
        libc::SIGQUIT,
        libc::SIGPIPE,
        libc::SIGXFSZ,
    ] {
        s.signal(sig);
        alice.send("/who\n");
        alice.expect("* online (1): alice");
        assert!(
            s.wait_exit(Duration::from_millis(50)).is_none(),
            "signal {sig} stopped the server"
        );
    }
    let mut bob = register(s.addr, "bob", &pw("bob"));
    alice.expect("* bob joined");
    bob.send("still here\n");
    alice.expect("bob: still here");
    s.sigterm();
    alice.expect(SHUTTING_DOWN);
    let status = s
        .wait_exit(Duration::from_secs(10))
        .expect("exits after SIGTERM");
    assert!(status.success(), "{status:?}");
}

#[test]
fn sigterm_does_not_wait_for_a_client_that_never_reads() {
    let mut s = Server::start(&["--rate", "off"]);
    let mut alice = register(s.addr, "alice", &pw("alice"));
    let mut bob = join(s.addr, "bob", &mut [&mut alice]);
    let _stuck = join(s.addr, "stuck", &mut [&mut alice, &mut bob]);
    // ~4.5 MB: about what loopback buffers absorb, plus some server output.
    let payload = "y".repeat(4000);
    for batch in 0..110 {
        let text: String = (0..10)
            .map(|i| format!("{batch}.{i} {payload}\n"))
            .collect();
        alice.send(&text);
        for i in 0..10 {
            let line = bob.line();
            if line == "* stuck left" {
                bob.expect(&format!("alice: {batch}.{i} {payload}"));
            } else {
                assert_eq!(line, format!("alice: {batch}.{i} {payload}"));
            }
        }
    }
    s.sigterm();
    let status = s
        .wait_exit(Duration::from_secs(5))
        .expect("server still running 5 s after SIGTERM");
    assert_eq!(status.code(), Some(0), "exit status {status:?}");
    let mut line = bob.line();
    if line == "* stuck left" {
        line = bob.line();
    }
    assert_eq!(line, SHUTTING_DOWN);
    bob.expect_closed();
}

#[test]
fn sigterm_reaches_connections_not_logged_in() {
    let mut s = Server::start(&[]);
    let mut waiting = Client::connect_welcomed(s.addr);
    let mut typing = Client::connect_welcomed(s.addr);
    typing.send("R\n");
    typing.expect(USERNAME);
    let mut alice = register(s.addr, "alice", &pw("alice"));
    s.sigterm();
    for c in [&mut alice, &mut waiting, &mut typing] {
        c.expect(SHUTTING_DOWN);
        c.expect_closed();
    }
    let status = s
        .wait_exit(Duration::from_secs(5))
        .expect("server still running 5 s after SIGTERM");
    assert_eq!(status.code(), Some(0), "exit status {status:?}");
}

#[test]
fn accounts_survive_restart() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("chat.db");
    let mut s = Server::start_with_db(&db, &[]);
    let mut alice = register(s.addr, "Alice", &pw("Alice"));
    s.sigterm();
    alice.expect(SHUTTING_DOWN);
    let status = s.wait_exit(Duration::from_secs(5)).expect("exit");
    assert!(status.success(), "{status:?}");

    let s2 = Server::start_with_db(&db, &[]);
    let mut c = Client::connect_welcomed(s2.addr);
    c.login_fails("alice", "wrong-password");
    c.login_here("alice", &pw("Alice"), "Alice");
    let mut d = Client::connect_welcomed(s2.addr);
    d.send("R\nALICE\nanother-password\n");
    d.expect(USERNAME);
    d.expect(PASSWORD);
    d.expect(TAKEN);
    d.expect(CHOICE);
}

/// "Accounts acknowledged with `* registered ...` are on disk before that
/// line was sent": even a SIGKILL right after it loses nothing.
#[test]
fn registered_account_survives_kill() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("chat.db");
    let mut s = Server::start_with_db(&db, &[]);
    let _alice = register(s.addr, "alice", &pw("alice"));
    s.kill();
    let s2 = Server::start_with_db(&db, &[]);
    let _again = login(s2.addr, "alice", &pw("alice"));
}

fn db_bytes(dir: &Path) -> Vec<u8> {
    let mut all = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let entry = entry.unwrap();
        if entry.file_name().to_string_lossy().starts_with("chat.db") {
            all.extend(std::fs::read(entry.path()).unwrap());
        }
    }
    all
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

#[test]
fn database_holds_hash_not_password() {
    let secret = "Plaintext-Must-Not-Leak-7f3e";
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("chat.db");
    let mut s = Server::start_with_db(&db, &[]);
    let mut alice = register(s.addr, "alice", secret);

    // While running (the account is on disk once acknowledged)...
    let bytes = db_bytes(dir.path());
    assert!(
        !contains(&bytes, secret.as_bytes()),
        "plaintext password on disk"
    );
    assert!(contains(&bytes, b"$2"), "no bcrypt hash on disk");
    assert!(contains(&bytes, b"$04$"), "hash not at --bcrypt-cost 4");

    // ...and after a clean shutdown.
    s.sigterm();
    alice.expect(SHUTTING_DOWN);
    s.wait_exit(Duration::from_secs(5)).expect("exit");
    let bytes = db_bytes(dir.path());
    assert!(
        !contains(&bytes, secret.as_bytes()),
        "plaintext password on disk"
    );
    assert!(contains(&bytes, b"$2"), "no bcrypt hash on disk");
    assert!(
        !s.output().contains(secret),
        "the password appears in the server's output"
    );
}

#[test]
fn bcrypt_cost_out_of_range_is_usage_error() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("chat.db");
    for cost in ["3", "32", "0", "-1", "twelve"] {
        let args = server_args(&db, &["--bcrypt-cost", cost]);
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let (status, output) = run_binary(&args, Duration::from_secs(10));
        let status =
            status.unwrap_or_else(|| panic!("--bcrypt-cost {cost}: still running after 10 s"));
        assert!(
            !status.success(),
            "--bcrypt-cost {cost}: exit {status:?}, output {output:?}"
        );
        assert!(
            !output.contains("listening on"),
            "--bcrypt-cost {cost}: started anyway: {output:?}"
        );
    }
}

/// 4 and 31 are valid costs: no usage error. (4 is what every other test
/// uses; a cost-31 server is only checked not to reject its flags, since
/// anything hashing at cost 31 may take days.)
#[test]
fn bcrypt_cost_31_starts_promptly() {
    // The server must not hash anything at the configured cost before it
    // listens (a cost-31 hash takes days).
    let server = Server::start(&["--bcrypt-cost", "31"]);
    let mut c = Client::connect(server.addr);
    c.expect("* welcome to NeoChat (0 online)");
}

#[test]
fn help_and_version() {
    let (status, output) = run_binary(&["--help"], Duration::from_secs(10));
    assert!(
        status.is_some_and(|s| s.success()),
        "--help: {status:?} {output:?}"
    );
    for flag in [
        "--listen",
        "--db",
        "--bcrypt-cost",
        "--rate",
        "--login-timeout",
        "--max-clients",
        "--max-output",
        "--max-line",
        "--workers",
    ] {
        assert!(
            output.contains(flag),
            "--help does not list {flag}: {output}"
        );
    }
    let (status, output) = run_binary(&["--version"], Duration::from_secs(10));
    assert!(
        status.is_some_and(|s| s.success()),
        "--version: {status:?} {output:?}"
    );
    assert!(!output.trim().is_empty(), "--version printed nothing");
}

#[test]
fn ipv6_listen() {
    if let Err(e) = std::net::TcpListener::bind("[::1]:0") {
        eprintln!("note: skipping ipv6_listen, cannot bind [::1]:0 here: {e}");
        return;
    }
    let s = Server::start(&["--listen", "[::1]:0"]);
    assert!(s.addr.is_ipv6(), "listening on {}", s.addr);
    let mut alice = register(s.addr, "alice", &pw("alice"));
    let mut bob = join(s.addr, "bob", &mut [&mut alice]);
    alice.send("over v6\n");
    bob.expect("alice: over v6");
}
