//! Black-box tests of the `neochat` client: the real binary against the
//! real `neochat-server` (or, for hostile input, a fake one), in a
//! pseudo-terminal the way a person uses it, and with pipes the way a
//! script does. Every wait has a deadline; nothing relies on a fixed sleep.
//!
//! The pseudo-terminal is opened with libc's `openpty` and the client is
//! made its session leader with it as controlling terminal, so rpassword's
//! `/dev/tty` is the pty, as it is for a person.

use std::fs::File;
use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex, mpsc};
use std::thread;
use std::time::{Duration, Instant};

const SERVER: &str = env!("CARGO_BIN_EXE_neochat-server");
const CLIENT: &str = env!("CARGO_BIN_EXE_neochat");
const WAIT: Duration = Duration::from_secs(10);

// ---------------------------------------------------------------- server

/// A running `neochat-server` on a free port with a temporary database;
/// killed on drop.
struct Server {
    child: Child,
    addr: SocketAddr,
    _dir: tempfile::TempDir,
}

impl Server {
    fn start() -> Server {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("db");
        let mut child = Command::new(SERVER)
            .args([
                "--listen",
                "127.0.0.1:0",
                "--bcrypt-cost",
                "4",
                "--workers",
                "2",
            ])
            .args(["--rate", "off", "--db"])
            .arg(&db)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn neochat-server");
        let (tx, rx) = mpsc::channel();
        let stderr = child.stderr.take().unwrap();
        // Keep draining so the server never blocks on a full pipe.
        thread::spawn(move || {
            for line in BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                if let Some(addr) = line.split("listening on ").nth(1) {
                    let _ = tx.send(addr.trim().to_owned());
                }
            }
        });
        let addr = rx
            .recv_timeout(WAIT)
            .expect("server never said `listening on ADDR`")
            .parse()
            .unwrap();
        Server {
            child,
            addr,
            _dir: dir,
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

// ------------------------------------------------------- raw TCP client

/// A second user on a plain socket: exact lines, with timeouts.
struct Peer {
    reader: BufReader<TcpStream>,
    writer: TcpStream,
}

impl Peer {
    /// Registers `name` and waits until it is chatting.
    fn register(addr: SocketAddr, name: &str) -> Peer {
        let stream = TcpStream::connect(addr).unwrap();
        stream.set_read_timeout(Some(WAIT)).unwrap();
        let mut peer = Peer {
            reader: BufReader::new(stream.try_clone().unwrap()),
            writer: stream,
        };
        peer.send(&format!("R\n{name}\n{name}-password\n"));
        peer.expect_prefix(&format!("* registered and logged in as {name}"));
        peer.expect_prefix("* online");
        peer
    }

    fn send(&mut self, text: &str) {
        self.writer.write_all(text.as_bytes()).unwrap();
    }

    #[track_caller]
    fn line(&mut self) -> String {
        let mut line = String::new();
        match self.reader.read_line(&mut line) {
            Ok(0) => panic!("peer: connection closed"),
            Ok(_) => line.trim_end_matches('\n').to_owned(),
            Err(e) => panic!("peer: no line within {WAIT:?}: {e}"),
        }
    }

    /// Reads lines until one starts with `prefix` (others are skipped).
    #[track_caller]
    fn expect_prefix(&mut self, prefix: &str) -> String {
        loop {
            let line = self.line();
            if line.starts_with(prefix) {
                return line;
            }
        }
    }
}

// --------------------------------------------------------------- pty

/// The client running in a pseudo-terminal. Everything it writes to the
/// terminal is collected; `expect` waits for text in it.
struct Pty {
    child: Child,
    master: File,
    output: Arc<Mutex<Vec<u8>>>,
    /// How far `expect` has matched in the plain (ANSI-stripped) output.
    seen: usize,
}

impl Pty {
    fn spawn(args: &[&str], env: &[(&str, &str)]) -> Pty {
        let (mut master, mut slave) = (0, 0);
        let size = libc::winsize {
            ws_row: 40,
            ws_col: 120,
            ws_xpixel: 0,
            ws_ypixel: 0,
        };
        // SAFETY: openpty fills two descriptors we then own.
        let rc = unsafe {
            libc::openpty(
                &mut master,
                &mut slave,
                std::ptr::null_mut(),
                std::ptr::null(),
                &size,
            )
        };
        assert_eq!(rc, 0, "openpty: {}", io::Error::last_os_error());
        // SAFETY: fresh descriptors from openpty, owned from here on.
        let (master, slave) =
            unsafe { (OwnedFd::from_raw_fd(master), OwnedFd::from_raw_fd(slave)) };
        // SAFETY: fcntl on our own descriptor; the client must not inherit it.
        unsafe { libc::fcntl(master.as_raw_fd(), libc::F_SETFD, libc::FD_CLOEXEC) };

        let mut cmd = Command::new(CLIENT);
        cmd.args(args)
            .env_remove("NO_COLOR")
            .env_remove("NEOCHAT_PASSWORD")
            .env("TERM", "xterm-256color")
            .envs(env.iter().copied())
            .stdin(Stdio::from(slave.try_clone().unwrap()))
            .stdout(Stdio::from(slave.try_clone().unwrap()))
            .stderr(Stdio::from(slave));
        use std::os::unix::process::CommandExt;
        // SAFETY: setsid and ioctl are async-signal-safe; they make the pty
        // the child's controlling terminal, so `/dev/tty` is the pty.
        unsafe {
            cmd.pre_exec(|| {
                if libc::setsid() < 0 || libc::ioctl(0, libc::TIOCSCTTY as _, 0) < 0 {
                    return Err(io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let child = cmd.spawn().expect("spawn neochat in a pty");
        // `cmd` still holds the slave ends; drop them so reads of the master
        // end (EIO) when the client exits.
        drop(cmd);

        let master = File::from(master);
        let output = Arc::new(Mutex::new(Vec::new()));
        let mut reader = master.try_clone().unwrap();
        let sink = output.clone();
        thread::spawn(move || {
            let mut buf = [0u8; 4096];
            while let Ok(n) = reader.read(&mut buf) {
                if n == 0 {
                    break;
                }
                sink.lock().unwrap().extend_from_slice(&buf[..n]);
            }
        });
        Pty {
            child,
            master,
            output,
            seen: 0,
        }
    }

    fn raw(&self) -> Vec<u8> {
        self.output.lock().unwrap().clone()
    }

    /// The output as text, without escape sequences and CRs.
    fn plain(&self) -> String {
        strip_ansi(&String::from_utf8_lossy(&self.raw()))
    }

    fn type_keys(&mut self, keys: &str) {
        self.master.write_all(keys.as_bytes()).unwrap();
        self.master.flush().unwrap();
    }

    /// Waits until `text` shows up after what was matched before; returns
    /// the plain output up to and including it.
    #[track_caller]
    fn expect(&mut self, text: &str) -> String {
        let deadline = Instant::now() + WAIT;
        loop {
            let plain = self.plain();
            if let Some(i) = plain.get(self.seen..).and_then(|rest| rest.find(text)) {
                let end = self.seen + i + text.len();
                let before = plain[self.seen..end].to_owned();
                self.seen = end;
                return before;
            }
            if Instant::now() > deadline {
                panic!("`{text}` never appeared; terminal so far:\n{}", plain);
            }
            thread::sleep(Duration::from_millis(10));
        }
    }

    #[track_caller]
    fn wait_exit(&mut self) -> ExitStatus {
        wait_child(&mut self.child)
    }
}

impl Drop for Pty {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[track_caller]
fn wait_child(child: &mut Child) -> ExitStatus {
    let deadline = Instant::now() + WAIT;
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("the client did not exit within {WAIT:?}");
        }
        thread::sleep(Duration::from_millis(10));
    }
}

/// Removes CSI (`ESC [ ... final`), OSC (`ESC ] ... BEL`) and two-byte
/// escapes, and CRs, leaving what a person reads.
fn strip_ansi(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\x1b' => match chars.next() {
                Some('[') => {
                    for c in chars.by_ref() {
                        if ('\x40'..='\x7e').contains(&c) {
                            break;
                        }
                    }
                }
                Some(']') => {
                    for c in chars.by_ref() {
                        if c == '\x07' {
                            break;
                        }
                    }
                }
                _ => {}
            },
            '\r' => {}
            c => out.push(c),
        }
    }
    out
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

/// Whether `text` has a `HH:MM ` time stamp right before `what`.
fn stamped(text: &str, what: &str) -> bool {
    text.match_indices(what).any(|(i, _)| {
        let Some(stamp) = i.checked_sub(6).and_then(|start| text.get(start..i)) else {
            return false;
        };
        let b = stamp.as_bytes();
        b[0].is_ascii_digit()
            && b[1].is_ascii_digit()
            && b[2] == b':'
            && b[3].is_ascii_digit()
            && b[4].is_ascii_digit()
            && b[5] == b' '
    })
}

// --------------------------------------------------------- piped runs

/// Runs the client with pipes: `stdin` is written and closed; returns the
/// exit status, stdout and stderr.
fn run_piped(args: &[&str], env: &[(&str, &str)], stdin: &str) -> (ExitStatus, String, String) {
    let mut child = Command::new(CLIENT)
        .args(args)
        .env_remove("NEOCHAT_PASSWORD")
        .env("NO_COLOR", "1")
        .envs(env.iter().copied())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn neochat");
    // A client that exits early (usage error) may not read its stdin.
    let _ = child.stdin.take().unwrap().write_all(stdin.as_bytes());
    let mut out = child.stdout.take().unwrap();
    let mut err = child.stderr.take().unwrap();
    let out = thread::spawn(move || {
        let mut v = Vec::new();
        let _ = out.read_to_end(&mut v);
        v
    });
    let err = thread::spawn(move || {
        let mut s = String::new();
        let _ = err.read_to_string(&mut s);
        s
    });
    let status = wait_child(&mut child);
    let out = out.join().unwrap();
    assert!(!out.contains(&0x1b), "escape byte in piped output: {out:?}");
    (status, String::from_utf8(out).unwrap(), err.join().unwrap())
}

/// An address where nothing listens.
fn dead_addr() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    listener.local_addr().unwrap()
}

// ----------------------------------------------------------- the tests

#[test]
fn register_chat_private_message_and_quit_in_a_terminal() {
    let server = Server::start();
    let addr = server.addr.to_string();
    let mut bob = Peer::register(server.addr, "bob");
    let password = "Tr0ub4dor&3-horse";

    let mut t = Pty::spawn(&[&addr], &[]);
    t.expect("Sign up (R) or Login (L)?");
    t.type_keys("R\r");
    t.expect("Username:");
    t.type_keys("alice\r");
    t.expect("Choose a password");
    t.type_keys(&format!("{password}\r"));
    t.expect("Type it again:");
    // A typo in the second entry is caught locally and both are asked again.
    t.type_keys("something-else\r");
    t.expect("differ");
    t.expect("Choose a password");
    t.type_keys(&format!("{password}\r"));
    t.expect("Type it again:");
    t.type_keys(&format!("{password}\r"));
    t.expect("registered and logged in as alice");
    t.expect("* online (2): alice, bob");
    bob.expect_prefix("* alice joined");

    // A message from another user appears with the sender's name and time.
    bob.send("hello from bob\n");
    t.expect("bob: hello from bob");
    assert!(stamped(&t.plain(), "bob: hello from bob"), "{}", t.plain());

    // Plain lines are messages; /msg is private.
    t.expect("> ");
    t.type_keys("hi bob\r");
    assert_eq!(bob.expect_prefix("alice:"), "alice: hi bob");
    t.type_keys("/msg bob psst\r");
    assert_eq!(bob.expect_prefix("@alice:"), "@alice: psst");
    bob.send("/msg alice back at you\n");
    t.expect("@bob: back at you");

    t.type_keys("/quit\r");
    t.expect("* bye");
    assert!(t.wait_exit().success());
    bob.expect_prefix("* alice left");

    let raw = t.raw();
    assert!(
        !contains(&raw, password.as_bytes()),
        "password on screen:\n{}",
        t.plain()
    );
    assert!(
        !contains(&raw, b"something-else"),
        "password on screen:\n{}",
        t.plain()
    );
    // Colours are on in a terminal without NO_COLOR: bob's name is coloured.
    assert!(
        contains(&raw, b"\x1b[1;"),
        "no colours:\n{:?}",
        String::from_utf8_lossy(&raw)
    );
}

#[test]
fn incoming_lines_keep_the_line_being_typed() {
    let server = Server::start();
    let mut bob = Peer::register(server.addr, "bob");
    Peer::register(server.addr, "carol").send("/quit\n");
    bob.expect_prefix("* carol left");

    // Log in with the password from the environment, chat in the terminal.
    let addr = server.addr.to_string();
    let env = [("NEOCHAT_PASSWORD", "carol-password"), ("NO_COLOR", "1")];
    let mut t = Pty::spawn(&[&addr, "--user", "carol"], &env);
    t.expect("logged in as carol");
    bob.expect_prefix("* carol joined");
    t.expect("> ");
    t.type_keys("half typed");
    t.expect("half typed");
    bob.send("interrupting\n");
    t.expect("bob: interrupting");
    // The unfinished line is drawn again below the message, and finishing
    // it sends the whole line.
    t.expect("> half typed");
    t.type_keys(" and done\r");
    assert_eq!(bob.expect_prefix("carol:"), "carol: half typed and done");

    // Ctrl-D leaves cleanly.
    t.expect("> ");
    t.type_keys("\x04");
    assert!(t.wait_exit().success());
    bob.expect_prefix("* carol left");
    assert!(!contains(&t.raw(), b"\x1b[1;"), "colour despite NO_COLOR");
}

#[test]
fn login_errors_are_shown_and_the_prompts_followed() {
    let server = Server::start();
    Peer::register(server.addr, "dave").send("/quit\n");
    let addr = server.addr.to_string();
    let mut t = Pty::spawn(&[&addr], &[]);
    t.expect("Sign up (R) or Login (L)?");
    t.type_keys("l\r");
    t.expect("Username:");
    t.type_keys("dave\r");
    t.expect("Password:");
    t.type_keys("not-the-password\r");
    t.expect("! wrong username or password");
    t.expect("Sign up (R) or Login (L)?");
    t.type_keys("L\r");
    t.expect("Username:");
    t.type_keys("dave\r");
    t.expect("Password:");
    t.type_keys("dave-password\r");
    t.expect("logged in as dave");
    t.expect("> ");
    t.type_keys("/quit\r");
    assert!(t.wait_exit().success());
    let raw = t.raw();
    assert!(!contains(&raw, b"not-the-password"), "{}", t.plain());
    assert!(!contains(&raw, b"dave-password"), "{}", t.plain());
}

#[test]
fn server_going_away_is_explained_with_exit_1() {
    let mut server = Server::start();
    Peer::register(server.addr, "erin").send("/quit\n");
    let addr = server.addr.to_string();
    let env = [("NEOCHAT_PASSWORD", "erin-password")];
    let mut t = Pty::spawn(&[&addr, "--user", "erin"], &env);
    t.expect("logged in as erin");
    t.expect("> ");
    // SIGTERM: the server says `* server shutting down` and closes.
    // SAFETY: plain kill(2) of our own child.
    unsafe { libc::kill(server.child.id() as i32, libc::SIGTERM) };
    t.expect("neochat: the server closed the connection: * server shutting down");
    assert_eq!(t.wait_exit().code(), Some(1));
    let _ = server.child.wait();
}

#[test]
fn scripted_register_then_piped_messages() {
    let server = Server::start();
    let mut bob = Peer::register(server.addr, "bob");
    let dir = tempfile::tempdir().unwrap();
    let pw_file = dir.path().join("pw");
    std::fs::write(&pw_file, "bot-password-1\nsecond line ignored\n").unwrap();
    let addr = server.addr.to_string();
    let args = [
        &addr,
        "--user",
        "bot",
        "--register",
        "--password-file",
        pw_file.to_str().unwrap(),
    ];
    let (status, out, err) = run_piped(&args, &[], "hello\n/msg bob psst\n/me beeps\n/who\n");
    assert!(
        status.success(),
        "status {status:?}\nstdout:\n{out}\nstderr:\n{err}"
    );
    assert!(stamped(&out, "* registered and logged in as bot"), "{out}");
    assert!(stamped(&out, "* online (2): bob, bot"), "{out}");
    assert!(out.trim_end().ends_with("* bye"), "{out}");
    bob.expect_prefix("* bot joined");
    assert_eq!(bob.line(), "bot: hello");
    assert_eq!(bob.line(), "@bot: psst");
    assert_eq!(bob.line(), "* bot beeps");
    assert_eq!(bob.line(), "* bot left");

    // The account exists: log in with the password from the environment.
    let env = [("NEOCHAT_PASSWORD", "bot-password-1")];
    let (status, out, _) = run_piped(&[&addr, "--user", "BOT"], &env, "again\n");
    assert!(status.success(), "{out}");
    assert!(out.contains("* logged in as bot"), "{out}");
    assert_eq!(bob.expect_prefix("bot:"), "bot: again");
}

#[test]
fn scripted_login_failure_exits_1() {
    let server = Server::start();
    Peer::register(server.addr, "frank").send("/quit\n");
    let addr = server.addr.to_string();
    let env = [("NEOCHAT_PASSWORD", "wrong-password")];
    let (status, out, err) = run_piped(&[&addr, "--user", "frank"], &env, "never sent\n");
    assert_eq!(status.code(), Some(1), "{out}{err}");
    assert!(out.contains("! wrong username or password"), "{out}");
    assert!(
        err.contains("login failed: wrong username or password"),
        "{err}"
    );

    let env = [("NEOCHAT_PASSWORD", "frank-password")];
    let (status, out, err) = run_piped(&[&addr, "--user", "frank", "--register"], &env, "");
    assert_eq!(status.code(), Some(1), "{out}{err}");
    assert!(out.contains("! username taken"), "{out}");
}

#[test]
fn no_server_is_one_clear_line_and_exit_1() {
    let addr = dead_addr().to_string();
    let env = [("NEOCHAT_PASSWORD", "whatever-pw")];
    let (status, out, err) = run_piped(&[&addr, "--user", "x"], &env, "");
    assert_eq!(status.code(), Some(1));
    assert_eq!(out, "");
    assert_eq!(
        err,
        format!("neochat: cannot connect to {addr}: connection refused\n")
    );

    // The same for a person at a terminal.
    let mut t = Pty::spawn(&[&addr], &[]);
    t.expect(&format!(
        "neochat: cannot connect to {addr}: connection refused"
    ));
    assert_eq!(t.wait_exit().code(), Some(1));
}

#[test]
fn usage_errors_exit_2_and_help_and_version_exit_0() {
    for args in [
        &["--bogus"][..],
        &["no-port"],
        &["a:1", "b:2"],
        &["--register"],
    ] {
        let (status, out, err) = run_piped(args, &[], "");
        assert_eq!(status.code(), Some(2), "{args:?}: {out}{err}");
        assert!(err.contains("Usage: neochat"), "{args:?}: {err}");
    }
    let (status, out, _) = run_piped(&["--help"], &[], "");
    assert!(status.success());
    for flag in [
        "--user",
        "--password-file",
        "--register",
        "NEOCHAT_PASSWORD",
        "HOST:PORT",
    ] {
        assert!(out.contains(flag), "--help lacks {flag}:\n{out}");
    }
    let (status, out, _) = run_piped(&["--version"], &[], "");
    assert!(status.success());
    assert_eq!(out, format!("neochat {}\n", env!("CARGO_PKG_VERSION")));
}

#[test]
fn without_a_terminal_it_asks_for_user_and_password_source() {
    let server = Server::start();
    let addr = server.addr.to_string();
    let (status, out, err) = run_piped(&[&addr], &[], "R\nx\n");
    assert_eq!(status.code(), Some(2), "{out}{err}");
    assert!(
        err.contains("--user") && err.contains("--password-file"),
        "{err}"
    );
    assert!(err.contains("NEOCHAT_PASSWORD"), "{err}");
}

#[test]
fn hostile_server_lines_never_reach_the_terminal_raw() {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let fake = thread::spawn(move || {
        let (mut s, _) = listener.accept().unwrap();
        s.write_all(b"* welcome\n? choice\n").unwrap();
        // Read the choice, name and password the client sends.
        let mut r = BufReader::new(s.try_clone().unwrap());
        let mut got = Vec::new();
        for prompt in ["? username\n", "? password\n", "* logged in as x\n"] {
            let mut line = String::new();
            r.read_line(&mut line).unwrap();
            got.push(line);
            s.write_all(prompt.as_bytes()).unwrap();
        }
        s.write_all(b"mallory: \x1b[2J evil \x1b]0;pwned\x07 \xc2\x9b31m c1\n")
            .unwrap();
        s.write_all("mallory: \u{202e}desrever\u{2066} bidi\n".as_bytes())
            .unwrap();
        s.write_all(b"mallory: bad \xff\xfe utf8 \x7f del\r\n")
            .unwrap();
        // The client sends /quit at the end of its (empty) stdin.
        let mut line = String::new();
        r.read_line(&mut line).unwrap();
        got.push(line);
        s.write_all(b"* bye\n").unwrap();
        got
    });
    let env = [("NEOCHAT_PASSWORD", "x-password")];
    let (status, out, err) = run_piped(&[&addr.to_string(), "--user", "x"], &env, "");
    let got = fake.join().unwrap();
    assert_eq!(got, ["L\n", "x\n", "x-password\n", "/quit\n"]);
    // run_piped already asserted that no ESC byte came out.
    for bad in ['\u{7}', '\u{9b}', '\u{202e}', '\u{2066}', '\u{7f}', '\r'] {
        assert!(!out.contains(bad), "{bad:?} in output:\n{out:?}");
    }
    assert!(
        out.contains("mallory: \u{FFFD}[2J evil \u{FFFD}]0;pwned\u{FFFD} \u{FFFD}31m c1"),
        "{out}"
    );
    assert!(
        out.contains("mallory: \u{FFFD}desrever\u{FFFD} bidi"),
        "{out}"
    );
    assert!(
        out.contains("mallory: bad \u{FFFD}\u{FFFD} utf8 \u{FFFD} del\n"),
        "{out}"
    );
    assert!(out.trim_end().ends_with("* bye"), "{out}");
    assert!(status.success(), "{status:?} {err}");
}
