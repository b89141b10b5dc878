//! Black-box tests of the `neochat` client: the real binary against the
//! real `neochat-server` (or, for hostile input, a fake one), in a
//! pseudo-terminal the way a person uses it, and with pipes the way a
//! script does. Every wait has a deadline; nothing relies on a fixed sleep.
//!
//! The pseudo-terminal is opened with libc's `openpty` and the client is
//! made its session leader with it as controlling terminal, so rpassword's
//! `/dev/tty` is the pty, as it is for a person.
//!
//! Every run of the client gets its own HOME and XDG_CONFIG_HOME in a
//! temporary directory (a test that looks at `known_servers` passes its
//! own), so the real user's files are never read or written. TLS is tested
//! against a small fake server in this file (rustls with an rcgen
//! self-signed certificate, speaking just enough of the line protocol), and
//! against the real server where it speaks TLS.

use std::fs::File;
use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, mpsc};
use std::thread;
use std::time::{Duration, Instant};

use rustls::ServerConfig;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};

const SERVER: &str = env!("CARGO_BIN_EXE_neochat-server");
const CLIENT: &str = env!("CARGO_BIN_EXE_neochat");
const WAIT: Duration = Duration::from_secs(10);

// ---------------------------------------------------------------- server

/// A running `neochat-server` on a free port with a temporary database;
/// killed on drop.
struct Server {
    child: Child,
    addr: SocketAddr,
    db: PathBuf,
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
            db,
            _dir: dir,
        }
    }
}

impl Server {
    /// The fingerprint of its certificate, as `neochat-server fingerprint`
    /// prints it for the operator.
    fn fingerprint(&self) -> String {
        let out = Command::new(SERVER)
            .arg("fingerprint")
            .arg("--db")
            .arg(&self.db)
            .output()
            .expect("run neochat-server fingerprint");
        assert!(out.status.success(), "{out:?}");
        let text = String::from_utf8(out.stdout).unwrap();
        let fp = text.trim().to_owned();
        assert!(fp.starts_with("SHA256:"), "{text}");
        fp
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
    /// HOME and XDG_CONFIG_HOME, unless the test gave its own.
    _home: Option<tempfile::TempDir>,
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
        let home = private_home(&mut cmd, env);
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
            _home: home,
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
    let mut cmd = Command::new(CLIENT);
    let _home = private_home(&mut cmd, env);
    let mut child = cmd
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

/// Points HOME and XDG_CONFIG_HOME of `cmd` at a fresh temporary
/// directory, unless `env` sets HOME itself; the directory lives as long as
/// the returned value.
fn private_home(cmd: &mut Command, env: &[(&str, &str)]) -> Option<tempfile::TempDir> {
    if env.iter().any(|(k, _)| *k == "HOME") {
        return None;
    }
    let dir = tempfile::tempdir().unwrap();
    cmd.env("HOME", dir.path())
        .env("XDG_CONFIG_HOME", dir.path().join("config"));
    Some(dir)
}

/// An address where nothing listens.
fn dead_addr() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    listener.local_addr().unwrap()
}

// ------------------------------------------------- fake TLS server

/// A certificate for the fake server, with its key and fingerprint.
struct Cert {
    der: CertificateDer<'static>,
    key_der: Vec<u8>,
    /// `SHA256:...`, computed here the way the server prints it.
    fingerprint: String,
}

impl Cert {
    /// Self-signed for `localhost` and 127.0.0.1.
    fn self_signed() -> Cert {
        let rcgen::CertifiedKey { cert, signing_key } =
            rcgen::generate_simple_self_signed(vec!["localhost".into(), "127.0.0.1".into()])
                .unwrap();
        Cert::new(cert.der().clone(), signing_key.serialize_der())
    }

    fn new(der: CertificateDer<'static>, key_der: Vec<u8>) -> Cert {
        Cert {
            fingerprint: fingerprint_of(&der),
            der,
            key_der,
        }
    }

    /// A server configuration presenting this certificate: TLS 1.2 and
    /// 1.3, or only `versions`.
    fn config(&self, versions: &[&'static rustls::SupportedProtocolVersion]) -> Arc<ServerConfig> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let builder = ServerConfig::builder_with_provider(provider);
        let builder = if versions.is_empty() {
            builder.with_safe_default_protocol_versions()
        } else {
            builder.with_protocol_versions(versions)
        };
        let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(self.key_der.clone()));
        let config = builder
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(vec![self.der.clone()], key)
            .unwrap();
        Arc::new(config)
    }
}

/// `SHA256:` + unpadded standard base64 of the SHA-256 of the DER.
fn fingerprint_of(der: &[u8]) -> String {
    use base64::Engine as _;
    let digest = ring::digest::digest(&ring::digest::SHA256, der);
    format!(
        "SHA256:{}",
        base64::engine::general_purpose::STANDARD_NO_PAD.encode(digest.as_ref())
    )
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Mode {
    Plain,
    Tls,
}

trait Stream: Read + Write + Send {}
impl<T: Read + Write + Send> Stream for T {}

/// One connection to the fake server, as its script sees it.
struct FakeConn {
    reader: BufReader<Box<dyn Stream>>,
    /// Every byte the client sent (plaintext), for the record.
    got: Vec<u8>,
}

impl FakeConn {
    fn send(&mut self, text: &str) {
        let w = self.reader.get_mut();
        // The client may be gone; the record tells the test what it sent.
        let _ = w.write_all(text.as_bytes()).and_then(|()| w.flush());
    }

    /// The next line from the client; `None` at its end (or an error, or
    /// no line within WAIT).
    fn line(&mut self) -> Option<String> {
        let mut line = Vec::new();
        let read = self.reader.read_until(b'\n', &mut line);
        self.got.extend_from_slice(&line);
        match read {
            Ok(0) | Err(_) => None,
            Ok(_) => Some(
                String::from_utf8_lossy(&line)
                    .trim_end_matches('\n')
                    .to_owned(),
            ),
        }
    }

    /// Reads until the client closes (or WAIT passes).
    fn drain(&mut self) {
        while self.line().is_some() {}
    }

    /// The welcome and the choice prompt.
    fn welcome(&mut self) {
        self.send("* welcome to NeoChat (0 online)\n? choice Sign up (R) or Login (L)\n");
    }

    /// The login prompts, then chat: every line is taken in (`/quit` gets
    /// `* bye` and the end).
    fn login_then_chat(&mut self) {
        self.welcome();
        if self.line().is_none() {
            return;
        }
        self.send("? username\n");
        let Some(name) = self.line() else { return };
        self.send("? password\n");
        if self.line().is_none() {
            return;
        }
        self.send(&format!("* logged in as {name}\n* online (1): {name}\n"));
        while let Some(line) = self.line() {
            if line == "/quit" {
                self.send("* bye\n");
                return;
            }
        }
    }
}

/// What one connection to the fake server saw.
#[derive(Debug)]
struct Record {
    mode: Mode,
    got: Vec<u8>,
}

impl Record {
    /// What the client sent, as lines.
    fn lines(&self) -> Vec<String> {
        String::from_utf8_lossy(&self.got)
            .lines()
            .map(str::to_owned)
            .collect()
    }
}

/// A fake server on 127.0.0.1. Like the real one it tells TLS from the
/// first byte (a ClientHello starts with 0x16; a line client sends nothing
/// first, so 0.3 s of silence means a line client), then runs `script` on
/// the connection in a thread of its own. Without a TLS configuration, a
/// TLS client gets the script in the clear.
struct Fake {
    addr: SocketAddr,
    records: mpsc::Receiver<Record>,
    stop: Arc<AtomicBool>,
}

impl Fake {
    fn start(
        config: Option<Arc<ServerConfig>>,
        script: impl Fn(&mut FakeConn) + Send + Sync + 'static,
    ) -> Fake {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let addr = listener.local_addr().unwrap();
        let (tx, records) = mpsc::channel();
        let stop = Arc::new(AtomicBool::new(false));
        let stopped = stop.clone();
        let script = Arc::new(script);
        thread::spawn(move || {
            while !stopped.load(Ordering::SeqCst) {
                let Ok((sock, _)) = listener.accept() else {
                    thread::sleep(Duration::from_millis(5));
                    continue;
                };
                let (tx, script, config) = (tx.clone(), script.clone(), config.clone());
                thread::spawn(move || {
                    sock.set_nonblocking(false).unwrap();
                    sock.set_read_timeout(Some(Duration::from_millis(300)))
                        .unwrap();
                    let mut first = [0u8; 1];
                    let tls = matches!(sock.peek(&mut first), Ok(1) if first[0] == 0x16);
                    sock.set_read_timeout(Some(WAIT)).unwrap();
                    let (mode, stream): (Mode, Box<dyn Stream>) = match (tls, config) {
                        (true, Some(config)) => {
                            let conn = rustls::ServerConnection::new(config).unwrap();
                            (Mode::Tls, Box::new(rustls::StreamOwned::new(conn, sock)))
                        }
                        (true, None) => (Mode::Tls, Box::new(sock)),
                        (false, _) => (Mode::Plain, Box::new(sock)),
                    };
                    let mut conn = FakeConn {
                        reader: BufReader::new(stream),
                        got: Vec::new(),
                    };
                    script(&mut conn);
                    let _ = tx.send(Record {
                        mode,
                        got: conn.got,
                    });
                });
            }
        });
        Fake {
            addr,
            records,
            stop,
        }
    }

    /// The record of the next connection that ended.
    #[track_caller]
    fn record(&self) -> Record {
        self.records
            .recv_timeout(WAIT + WAIT)
            .expect("no connection to the fake server ended in time")
    }

    /// Checks that no (further) connection came within a short while.
    #[track_caller]
    fn no_more_connections(&self) {
        if let Ok(r) = self.records.recv_timeout(Duration::from_millis(500)) {
            panic!("unexpected connection: {r:?}");
        }
    }
}

impl Drop for Fake {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
    }
}

/// A HOME of its own, for runs that share `known_servers`.
struct Home {
    dir: tempfile::TempDir,
    home: String,
    config: String,
}

impl Home {
    fn new() -> Home {
        let dir = tempfile::tempdir().unwrap();
        let home = dir.path().to_str().unwrap().to_owned();
        let config = dir.path().join("config").to_str().unwrap().to_owned();
        Home { dir, home, config }
    }

    /// The environment for the client, with more variables after.
    fn env<'a>(&'a self, more: &[(&'a str, &'a str)]) -> Vec<(&'a str, &'a str)> {
        let mut env = vec![
            ("HOME", self.home.as_str()),
            ("XDG_CONFIG_HOME", self.config.as_str()),
        ];
        env.extend_from_slice(more);
        env
    }

    fn known_servers(&self) -> PathBuf {
        self.dir.path().join("config/neochat/known_servers")
    }
}

fn mode_of(path: &Path) -> u32 {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path).unwrap().permissions().mode() & 0o777
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
        "--tls",
        "--plain",
        "--fingerprint",
        "known_servers",
        "XDG_CONFIG_HOME",
        "/join #ROOM",
        "/part",
        "/to #ROOM",
        "/rooms",
        "/topic",
        "/history",
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

// ------------------------------------------------------------ TLS tests

const PW: (&str, &str) = ("NEOCHAT_PASSWORD", "x-password");

#[test]
fn tls_is_the_default_except_for_this_machine() {
    let cert = Cert::self_signed();
    let fake = Fake::start(Some(cert.config(&[])), FakeConn::login_then_chat);
    let port = fake.addr.port();
    let script = ["L", "x", "x-password", "hi", "/quit"];

    // 127.0.0.1 and localhost: plain TCP, nothing asked.
    for host in ["127.0.0.1", "localhost"] {
        let addr = format!("{host}:{port}");
        let (status, out, err) = run_piped(&[&addr, "--user", "x"], &[PW], "hi\n");
        assert!(status.success(), "{host}: {out}{err}");
        let record = fake.record();
        assert_eq!(record.mode, Mode::Plain, "{host}");
        assert_eq!(record.lines(), script, "{host}");
    }

    // --tls to this machine: TLS (a script needs --fingerprint).
    let addr = format!("127.0.0.1:{port}");
    let args = [
        &addr,
        "--tls",
        "--fingerprint",
        &cert.fingerprint,
        "--user",
        "x",
    ];
    let (status, out, err) = run_piped(&args, &[PW], "hi\n");
    assert!(status.success(), "{out}{err}");
    let record = fake.record();
    assert_eq!(record.mode, Mode::Tls);
    assert_eq!(record.lines(), script);

    // Any other host: TLS by default. 0.0.0.0 is not loopback, yet on
    // Linux it reaches this machine; the unknown certificate is refused in
    // a script, but the server saw a ClientHello and no line.
    let other = format!("0.0.0.0:{port}");
    let (status, out, err) = run_piped(&[&other, "--user", "x"], &[PW], "hi\n");
    assert_eq!(status.code(), Some(1), "{out}{err}");
    let record = fake.record();
    assert_eq!(record.mode, Mode::Tls);
    assert_eq!(record.got, b"");

    // --plain forces plain TCP there, with a warning.
    let (status, out, err) = run_piped(&[&other, "--plain", "--user", "x"], &[PW], "hi\n");
    assert!(status.success(), "{out}{err}");
    assert!(
        err.contains("warning: --plain: nothing is encrypted"),
        "{err}"
    );
    let record = fake.record();
    assert_eq!(record.mode, Mode::Plain);
    assert_eq!(record.lines(), script);

    // The two forcing flags exclude each other, and --fingerprint needs TLS.
    for args in [
        &[&addr, "--tls", "--plain"][..],
        &[&addr, "--plain", "--fingerprint", &cert.fingerprint],
        &[&addr, "--fingerprint", "SHA256:tooshort"],
    ] {
        let (status, _, err) = run_piped(args, &[PW], "");
        assert_eq!(status.code(), Some(2), "{args:?}: {err}");
        assert!(err.contains("Usage: neochat"), "{err}");
    }
    fake.no_more_connections();
}

#[test]
fn first_use_asks_then_pins_and_a_reconnect_is_silent() {
    let cert = Cert::self_signed();
    let fake = Fake::start(Some(cert.config(&[])), FakeConn::login_then_chat);
    let addr = format!("127.0.0.1:{}", fake.addr.port());
    let home = Home::new();

    let mut t = Pty::spawn(&["--tls", &addr], &home.env(&[]));
    t.expect("not vouched for by a certificate authority");
    t.expect(&format!("Its fingerprint is {}", cert.fingerprint));
    t.expect(&format!("Trust it and remember it for {addr}? (yes/no)"));
    // Anything but yes or no is asked again.
    t.type_keys("maybe\r");
    t.expect("Please answer yes or no.");
    t.expect("(yes/no)");
    t.type_keys("yes\r");
    t.expect("remembered");
    t.expect("Sign up (R) or Login (L)?");
    t.type_keys("L\r");
    t.expect("Username:");
    t.type_keys("alice\r");
    t.expect("Password:");
    t.type_keys("alice-secret-pw\r");
    t.expect("logged in as alice");
    t.expect("> ");
    t.type_keys("/quit\r");
    t.expect("* bye");
    assert!(t.wait_exit().success(), "{}", t.plain());
    let record = fake.record();
    assert_eq!(record.mode, Mode::Tls);
    assert_eq!(record.lines(), ["L", "alice", "alice-secret-pw", "/quit"]);

    let known = home.known_servers();
    assert_eq!(
        std::fs::read_to_string(&known).unwrap(),
        format!("{addr} {}\n", cert.fingerprint)
    );
    assert_eq!(mode_of(&known), 0o600);
    assert_eq!(mode_of(known.parent().unwrap()), 0o700);

    // Pinned: straight to the login, no question.
    let mut t = Pty::spawn(&["--tls", &addr], &home.env(&[]));
    let before = t.expect("Sign up (R) or Login (L)?");
    assert!(!before.contains("yes/no"), "{before}");
    assert!(!before.contains("fingerprint"), "{before}");
    // Ctrl-D at the first prompt leaves without a word.
    t.type_keys("\x04");
    assert!(t.wait_exit().success(), "{}", t.plain());
    assert_eq!(fake.record().got, b"");
    // Nothing was added to the file.
    assert_eq!(
        std::fs::read_to_string(&known).unwrap(),
        format!("{addr} {}\n", cert.fingerprint)
    );
}

#[test]
fn answering_no_refuses_and_sends_nothing() {
    let cert = Cert::self_signed();
    let fake = Fake::start(Some(cert.config(&[])), FakeConn::login_then_chat);
    let addr = format!("127.0.0.1:{}", fake.addr.port());
    let home = Home::new();
    let mut t = Pty::spawn(&["--tls", &addr], &home.env(&[]));
    t.expect("(yes/no)");
    t.type_keys("no\r");
    t.expect("not trusted; nothing was sent to the server");
    assert_eq!(t.wait_exit().code(), Some(1));
    assert_eq!(fake.record().got, b"");
    assert!(!home.known_servers().exists());
}

#[test]
fn a_changed_certificate_is_refused_loudly_and_nothing_is_sent() {
    let old = Cert::self_signed();
    let new = Cert::self_signed();
    let fake = Fake::start(Some(new.config(&[])), FakeConn::login_then_chat);
    let addr = format!("127.0.0.1:{}", fake.addr.port());
    let home = Home::new();
    let known = home.known_servers();
    std::fs::create_dir_all(known.parent().unwrap()).unwrap();
    let pins = format!(
        "other.example:1 {}\n{addr} {}\n",
        new.fingerprint, old.fingerprint
    );
    std::fs::write(&known, &pins).unwrap();

    // A person at the terminal, even with the name given: no question.
    let mut t = Pty::spawn(&["--tls", &addr, "--user", "alice"], &home.env(&[]));
    t.expect("WARNING: SERVER IDENTIFICATION HAS CHANGED!");
    t.expect("SOMEONE IS DOING SOMETHING NASTY");
    t.expect(&format!("expected: {} ", old.fingerprint));
    t.expect("line 2)");
    t.expect(&format!("got:      {}", new.fingerprint));
    t.expect("Nothing was sent to the server");
    assert_eq!(t.wait_exit().code(), Some(1));
    assert!(!t.plain().contains("Password"), "{}", t.plain());
    let record = fake.record();
    assert_eq!(record.mode, Mode::Tls);
    assert_eq!(record.got, b"", "the client sent something");

    // A script with the password at hand: the same, and --fingerprint with
    // the new one does not override the pin either.
    for extra in [&[][..], &["--fingerprint", &new.fingerprint]] {
        let mut args = vec![addr.as_str(), "--tls", "--user", "alice"];
        args.extend_from_slice(extra);
        let (status, out, err) = run_piped(&args, &home.env(&[PW]), "hello\n");
        assert_eq!(status.code(), Some(1), "{out}{err}");
        assert!(err.contains("SERVER IDENTIFICATION HAS CHANGED"), "{err}");
        assert!(
            err.contains(&old.fingerprint) && err.contains(&new.fingerprint),
            "{err}"
        );
        assert_eq!(out, "");
        assert_eq!(fake.record().got, b"", "{extra:?}");
    }
    assert_eq!(std::fs::read_to_string(&known).unwrap(), pins);
}

#[test]
fn a_script_needs_the_fingerprint_of_an_unknown_certificate() {
    // TLS 1.2 only here, so both handshake signature checks are used.
    let cert = Cert::self_signed();
    let fake = Fake::start(
        Some(cert.config(&[&rustls::version::TLS12])),
        FakeConn::login_then_chat,
    );
    let addr = format!("127.0.0.1:{}", fake.addr.port());
    let home = Home::new();
    let env = home.env(&[PW]);

    // Unknown, no --fingerprint: refused, with the way out.
    let (status, out, err) = run_piped(&[&addr, "--tls", "--user", "x"], &env, "hello\n");
    assert_eq!(status.code(), Some(1), "{out}{err}");
    assert!(
        err.contains(&format!("its fingerprint is {}", cert.fingerprint)),
        "{err}"
    );
    assert!(
        err.contains(&format!("--fingerprint {}", cert.fingerprint)),
        "{err}"
    );
    assert_eq!(fake.record().got, b"");
    assert!(!home.known_servers().exists());

    // The wrong one: refused, both shown.
    let other = Cert::self_signed();
    let args = [
        &addr,
        "--tls",
        "--user",
        "x",
        "--fingerprint",
        &other.fingerprint,
    ];
    let (status, out, err) = run_piped(&args, &env, "hello\n");
    assert_eq!(status.code(), Some(1), "{out}{err}");
    assert!(
        err.contains(&format!("expected: {} (--fingerprint)", other.fingerprint)),
        "{err}"
    );
    assert!(
        err.contains(&format!("got:      {}", cert.fingerprint)),
        "{err}"
    );
    assert_eq!(fake.record().got, b"");

    // The right one: logged in, and pinned.
    let args = [
        &addr,
        "--tls",
        "--user",
        "x",
        "--fingerprint",
        &cert.fingerprint,
    ];
    let (status, out, err) = run_piped(&args, &env, "hello\n");
    assert!(status.success(), "{out}{err}");
    assert!(out.contains("* logged in as x"), "{out}");
    assert_eq!(
        fake.record().lines(),
        ["L", "x", "x-password", "hello", "/quit"]
    );
    let known = home.known_servers();
    assert_eq!(
        std::fs::read_to_string(&known).unwrap(),
        format!("{addr} {}\n", cert.fingerprint)
    );
    assert_eq!(mode_of(&known), 0o600);

    // Pinned now: no --fingerprint needed. A corrupt line is only a warning.
    let mut text = std::fs::read_to_string(&known).unwrap();
    text.insert_str(0, "this is not a pin\n\u{1}\u{7f}garbage:xx yy\n");
    std::fs::write(&known, text).unwrap();
    let (status, out, err) = run_piped(&[&addr, "--tls", "--user", "x"], &env, "again\n");
    assert!(status.success(), "{out}{err}");
    assert!(
        err.contains("known_servers:1: expected `HOST:PORT SHA256:...`; line ignored"),
        "{err}"
    );
    assert!(err.contains("known_servers:2:"), "{err}");
    assert_eq!(
        fake.record().lines(),
        ["L", "x", "x-password", "again", "/quit"]
    );
}

#[test]
fn a_certificate_authority_vouches_without_a_question() {
    // A CA of our own, made the system's only one through SSL_CERT_FILE.
    let ca_key = rcgen::KeyPair::generate().unwrap();
    let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    let ca = rcgen::CertifiedIssuer::self_signed(ca_params, ca_key).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let ca_file = dir.path().join("ca.pem");
    std::fs::write(&ca_file, ca.pem()).unwrap();
    let leaf = |names: Vec<String>| {
        let key = rcgen::KeyPair::generate().unwrap();
        let params = rcgen::CertificateParams::new(names).unwrap();
        let cert = params.signed_by(&key, &ca).unwrap();
        Cert::new(cert.der().clone(), key.serialize_der())
    };

    let good = leaf(vec!["localhost".into()]);
    let fake = Fake::start(Some(good.config(&[])), FakeConn::login_then_chat);
    let addr = format!("localhost:{}", fake.addr.port());
    let home = Home::new();
    let env = home.env(&[PW, ("SSL_CERT_FILE", ca_file.to_str().unwrap())]);
    let (status, out, err) = run_piped(&[&addr, "--tls", "--user", "x"], &env, "hi\n");
    assert!(status.success(), "{out}{err}");
    assert_eq!(err, "");
    assert_eq!(
        fake.record().lines(),
        ["L", "x", "x-password", "hi", "/quit"]
    );
    assert!(
        !home.known_servers().exists(),
        "a vouched-for server is not pinned"
    );

    // Signed by the CA but for another name: not vouched for, so a pin
    // would be needed, and a script is refused with the reason.
    let wrong = leaf(vec!["chat.example.org".into()]);
    let fake = Fake::start(Some(wrong.config(&[])), FakeConn::login_then_chat);
    let addr = format!("localhost:{}", fake.addr.port());
    let (status, out, err) = run_piped(&[&addr, "--tls", "--user", "x"], &env, "hi\n");
    assert_eq!(status.code(), Some(1), "{out}{err}");
    assert!(
        err.contains("it is not valid for the name localhost"),
        "{err}"
    );
    assert_eq!(fake.record().got, b"");
}

#[test]
fn a_tls_failure_is_one_line_and_exit_1() {
    // A line server answering the ClientHello with its welcome.
    let fake = Fake::start(None, FakeConn::welcome);
    let addr = format!("127.0.0.1:{}", fake.addr.port());
    let (status, out, err) = run_piped(&[&addr, "--tls", "--user", "x"], &[PW], "");
    assert_eq!(status.code(), Some(1), "{out}{err}");
    assert_eq!(out, "");
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(
        err.starts_with(&format!("neochat: TLS with {addr} failed: ")),
        "{err}"
    );
    assert!(err.contains("--plain"), "{err}");

    // A server that closes at once.
    let fake = Fake::start(None, |c| {
        // Take the ClientHello in first, so that the close is a clean one.
        let _ = c.reader.fill_buf();
    });
    let addr = format!("127.0.0.1:{}", fake.addr.port());
    let (status, out, err) = run_piped(&[&addr, "--tls", "--user", "x"], &[PW], "");
    assert_eq!(status.code(), Some(1), "{out}{err}");
    assert_eq!(
        err,
        format!(
            "neochat: TLS with {addr} failed: the server closed the connection during the handshake\n"
        )
    );
}

#[test]
fn a_prompt_for_an_unknown_field_gets_nothing() {
    let script = |c: &mut FakeConn| {
        c.welcome();
        if c.line().is_none() {
            return;
        }
        c.send("? username\n");
        if c.line().is_none() {
            return;
        }
        c.send("? confirm Re-enter your password\n");
        c.drain();
    };
    let fake = Fake::start(None, script);
    let addr = fake.addr.to_string();
    let (status, out, err) = run_piped(&[&addr, "--user", "x"], &[PW], "hi\n");
    assert_eq!(status.code(), Some(1), "{out}{err}");
    assert!(
        err.contains("the server asked for an unknown field `confirm`"),
        "{err}"
    );
    assert_eq!(fake.record().lines(), ["L", "x"]);

    // At a terminal: no question is made of it either.
    let mut t = Pty::spawn(&[&addr], &[]);
    t.expect("Sign up (R) or Login (L)?");
    t.type_keys("L\r");
    t.expect("Username:");
    t.type_keys("alice\r");
    t.expect("unknown field `confirm`");
    assert_eq!(t.wait_exit().code(), Some(1));
    assert!(!t.plain().contains("Password"), "{}", t.plain());
    assert_eq!(fake.record().lines(), ["L", "alice"]);
}

#[test]
fn login_answers_stay_out_of_the_line_history() {
    let fake = Fake::start(None, FakeConn::login_then_chat);
    let addr = fake.addr.to_string();
    let mut t = Pty::spawn(&[&addr], &[]);
    t.expect("Sign up (R) or Login (L)?");
    t.type_keys("L\r");
    t.expect("Username:");
    t.type_keys("alice\r");
    t.expect("Password:");
    t.type_keys("alice-secret-pw\r");
    t.expect("logged in as alice");
    t.expect("> ");
    t.type_keys("first chat line\r");
    // Once it is shown as said, the next prompt is the one that reads keys.
    t.expect("alice: first chat line");
    t.expect("> ");
    // Up three times: only the chat line is there to recall (before the
    // fix: `alice`, then `L`).
    t.type_keys("\x1b[A");
    t.expect("> first chat line");
    t.type_keys("\x1b[A\x1b[A\r");
    t.expect("> ");
    t.type_keys("/quit\r");
    t.expect("* bye");
    assert!(t.wait_exit().success(), "{}", t.plain());
    assert_eq!(
        fake.record().lines(),
        [
            "L",
            "alice",
            "alice-secret-pw",
            "first chat line",
            "first chat line",
            "/quit"
        ]
    );
    assert!(!contains(&t.raw(), b"alice-secret-pw"), "{}", t.plain());
}

#[test]
fn long_lines_cross_tls_whole_in_both_directions() {
    // Longer than a TLS record (16 KiB) from the server, and longer than
    // rustls's 64 KiB send buffer from the client.
    let from_server = format!("bob: {}", "s".repeat(40_000));
    let from_client = "c".repeat(150_000);
    let cert = Cert::self_signed();
    let sent = from_server.clone();
    let fake = Fake::start(Some(cert.config(&[])), move |c| {
        c.welcome();
        for prompt in ["? username\n", "? password\n"] {
            if c.line().is_none() {
                return;
            }
            c.send(prompt);
        }
        if c.line().is_none() {
            return;
        }
        c.send(&format!("* logged in as x\n{sent}\n"));
        while let Some(line) = c.line() {
            if line == "/quit" {
                c.send("* bye\n");
                return;
            }
        }
    });
    let addr = format!("127.0.0.1:{}", fake.addr.port());
    let args = [
        &addr,
        "--tls",
        "--fingerprint",
        &cert.fingerprint,
        "--user",
        "x",
    ];
    let (status, out, err) = run_piped(&args, &[PW], &format!("{from_client}\nafter\n"));
    assert!(status.success(), "{err}");
    assert!(
        out.contains(&from_server),
        "the long line did not arrive whole"
    );
    assert!(out.trim_end().ends_with("* bye"), "{err}");
    let lines = fake.record().lines();
    assert_eq!(lines.len(), 6, "{err}");
    assert!(lines[3] == from_client, "the long line was not sent whole");
    assert_eq!(lines[4..], ["after", "/quit"]);
}

#[test]
fn passwd_asks_hidden_and_answers_the_servers_questions() {
    let fake = Fake::start(None, |c| {
        c.welcome();
        for prompt in ["? username\n", "? password\n"] {
            if c.line().is_none() {
                return;
            }
            c.send(prompt);
        }
        if c.line().is_none() {
            return;
        }
        c.send("* logged in as alice\n");
        while let Some(line) = c.line() {
            match line.as_str() {
                "/passwd" => {
                    c.send("? password current\n");
                    let _ = c.line();
                    c.send("? password new\n");
                    let _ = c.line();
                    c.send("* password changed\n");
                }
                "/quit" => {
                    c.send("* bye\n");
                    return;
                }
                _ => {}
            }
        }
    });
    let addr = fake.addr.to_string();
    let mut t = Pty::spawn(&[&addr, "--user", "alice"], &[]);
    t.expect("Password:");
    t.type_keys("old-password-1\r");
    t.expect("logged in as alice");
    t.expect("> ");
    t.type_keys("hello\r");
    t.expect("alice: hello");
    t.expect("> ");
    t.type_keys("/passwd\r");
    t.expect("Current password:");
    t.type_keys("old-password-1\r");
    t.expect("New password (8-72 bytes):");
    t.type_keys("new-password-2\r");
    t.expect("Type it again:");
    t.type_keys("new-password-2\r");
    t.expect("* password changed");
    t.expect("> ");
    // History: `/passwd`, then `hello`; no password in it.
    t.type_keys("\x1b[A");
    t.expect("> /passwd");
    t.type_keys("\x1b[A");
    t.expect("> hello");
    t.type_keys("\x1b[A\r");
    t.expect("> ");
    t.type_keys("/quit\r");
    t.expect("* bye");
    assert!(t.wait_exit().success(), "{}", t.plain());
    assert_eq!(
        fake.record().lines(),
        [
            "L",
            "alice",
            "old-password-1",
            "hello",
            "/passwd",
            "old-password-1",
            "new-password-2",
            "hello",
            "/quit"
        ]
    );
    let plain = t.plain();
    assert!(!plain.contains("? password"), "{plain}");
    for secret in ["old-password-1", "new-password-2"] {
        assert!(
            !contains(&t.raw(), secret.as_bytes()),
            "{secret} shown:\n{plain}"
        );
    }
}

#[test]
fn the_real_server_over_tls_with_a_plain_user_beside() {
    let server = Server::start();
    let fp = server.fingerprint();
    let addr = server.addr.to_string();
    let mut bob = Peer::register(server.addr, "bob");
    let home = Home::new();

    // A person, the first time: the fingerprint shown is the one the
    // operator sees; trusted, then register and chat with bob (plain TCP).
    let mut t = Pty::spawn(&["--tls", &addr], &home.env(&[]));
    t.expect(&format!("Its fingerprint is {fp}"));
    t.type_keys("yes\r");
    t.expect("Sign up (R) or Login (L)?");
    t.type_keys("R\r");
    t.expect("Username:");
    t.type_keys("carol\r");
    t.expect("Choose a password");
    t.type_keys("carol-password\r");
    t.expect("Type it again:");
    t.type_keys("carol-password\r");
    t.expect("registered and logged in as carol");
    bob.expect_prefix("* carol joined");
    t.expect("> ");
    t.type_keys("hello over tls\r");
    assert_eq!(bob.expect_prefix("carol:"), "carol: hello over tls");
    bob.send("hi carol\n");
    t.expect("bob: hi carol");
    t.type_keys("/quit\r");
    t.expect("* bye");
    assert!(t.wait_exit().success(), "{}", t.plain());
    bob.expect_prefix("* carol left");
    assert_eq!(
        std::fs::read_to_string(home.known_servers()).unwrap(),
        format!("{addr} {fp}\n")
    );

    // A script, pinned now: logs in and talks without --fingerprint.
    let env = home.env(&[("NEOCHAT_PASSWORD", "carol-password")]);
    let args = [&addr, "--tls", "--user", "carol"];
    let (status, out, err) = run_piped(&args, &env, "scripted over tls\n");
    assert!(status.success(), "{out}{err}");
    assert!(out.contains("* logged in as carol"), "{out}");
    assert_eq!(bob.expect_prefix("carol:"), "carol: scripted over tls");
}

#[test]
fn rooms_history_and_the_prompt_follow_the_server() {
    // A fake server speaking version 2's room lines (the real one does not
    // have rooms yet).
    let fake = Fake::start(None, |c| {
        c.welcome();
        for prompt in ["? username\n", "? password\n"] {
            if c.line().is_none() {
                return;
            }
            c.send(prompt);
        }
        if c.line().is_none() {
            return;
        }
        c.send(
            "* logged in as alice\n* online (2): alice, bob\n\
             * 60 messages since you left; the last 50 follow (/history for more)\n\
             ~2026-12-01T10:38:05Z bob: missed you\n\
             #go * online (1): alice\n\
             ~2026-12-01T09:00:00Z #go alice: \x1b[2Jstill here\n\
             ~2026-12-01T09:01:00Z @bob: psst\n",
        );
        while let Some(line) = c.line() {
            match line.as_str() {
                "/join #rust" => c.send("#rust * online (2): alice, bob\n"),
                "/part" => c.send("#rust * bye\n"),
                "/to #go hi go" => {}
                "hello rust" => c.send("#rust bob: hi alice\n#go bob: elsewhere\nbob: lobby\n"),
                "/quit" => {
                    c.send("* bye\n");
                    return;
                }
                _ => {}
            }
        }
    });
    let addr = fake.addr.to_string();
    let env = [("NEOCHAT_PASSWORD", "alice-password"), ("NO_COLOR", "1")];
    let mut t = Pty::spawn(&[&addr, "--user", "alice"], &env);
    t.expect("* 60 messages since you left; the last 50 follow (/history for more)");
    t.expect("12-01 10:38 bob: missed you");
    t.expect("[#go] * online (1): alice");
    // The escape arrives replaced, never raw.
    t.expect("12-01 09:00 [#go] alice: \u{FFFD}[2Jstill here");
    t.expect("12-01 09:01 @bob: psst");
    // Membership shown at login does not make #go current.
    t.expect("> ");
    t.type_keys("/join #rust\r");
    t.expect("* online (2): alice, bob");
    t.expect("#rust> ");
    t.type_keys("hello rust\r");
    t.expect("alice: hello rust");
    t.expect("bob: hi alice");
    t.expect("[#go] bob: elsewhere");
    t.expect("[#lobby] bob: lobby");
    t.type_keys("/to #go hi go\r");
    t.expect("[#go] alice: hi go");
    t.type_keys("/part\r");
    t.expect("[#rust] * bye");
    t.expect("\n> ");
    t.type_keys("/quit\r");
    t.expect("* bye");
    assert!(t.wait_exit().success(), "{}", t.plain());
    assert!(!contains(&t.raw(), b"\x1b[2J"), "{}", t.plain());
    // The current room's lines carry no mark.
    for marked in ["[#rust] * online", "[#rust] bob", "[#rust] alice"] {
        assert!(!t.plain().contains(marked), "{}", t.plain());
    }
    assert_eq!(
        fake.record().lines()[3..],
        [
            "/join #rust",
            "hello rust",
            "/to #go hi go",
            "/part",
            "/quit"
        ]
    );
}

// ------------------------------------------------------ login tokens
//
// Against a fake server speaking issue 12's lines (`T`, `? token`,
// `* token ...`, `! invalid or expired token`, `/logout`): the real one
// does not have tokens yet.

/// The token the fake server gives for `/token` (32 characters, as the
/// real one's).
const FRESH: &str = "fresh-Token_0123456789abcdefghij";
/// A token kept by an earlier run that the fake server still takes.
const VALID: &str = "valid-Token_0123456789abcdefghij";
/// A token kept by an earlier run that the fake server refuses.
const STALE: &str = "stale-Token_0123456789abcdefghij";

/// A fake server with tokens, for the account alice (any password): `T`
/// logs in with `VALID` or `FRESH` only, else `! invalid or expired token`
/// and the choice again. In the chat, `/token` gets `* token FRESH`,
/// `/passwd` asks both passwords and changes, `/logout [all]` and `/quit`
/// get `* bye` and the end.
fn token_server(c: &mut FakeConn) {
    c.welcome();
    loop {
        let Some(choice) = c.line() else { return };
        match choice.as_str() {
            "T" => {
                c.send("? token\n");
                let Some(token) = c.line() else { return };
                if token == VALID || token == FRESH {
                    break;
                }
                c.send("! invalid or expired token\n? choice Sign up (R) or Login (L)\n");
            }
            "L" => {
                c.send("? username\n");
                if c.line().is_none() {
                    return;
                }
                c.send("? password\n");
                if c.line().is_none() {
                    return;
                }
                break;
            }
            _ => c.send("! please answer R or L\n? choice Sign up (R) or Login (L)\n"),
        }
    }
    c.send("* logged in as alice\n* online (1): alice\n");
    while let Some(line) = c.line() {
        match line.as_str() {
            "/token" => c.send(&format!("* token {FRESH}\n")),
            "/passwd" => {
                c.send("? password current\n");
                let _ = c.line();
                c.send("? password new\n");
                let _ = c.line();
                c.send("* password changed\n");
            }
            "/logout" | "/logout all" | "/quit" => {
                c.send("* bye\n");
                return;
            }
            _ => {}
        }
    }
}

impl Home {
    /// Where the client keeps the token of `user` at `addr`.
    fn token_file(&self, user: &str, addr: SocketAddr) -> PathBuf {
        self.dir
            .path()
            .join("config/neochat/tokens")
            .join(format!("{user}@{addr}"))
    }

    /// Keeps `token` for alice at `addr`, as an earlier `--remember` did.
    fn keep_token(&self, addr: SocketAddr, token: &str) -> PathBuf {
        use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
        let path = self.token_file("alice", addr);
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(path.parent().unwrap())
            .unwrap();
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&path)
            .unwrap();
        file.write_all(format!("{token}\n").as_bytes()).unwrap();
        path
    }
}

#[test]
fn remember_keeps_a_private_token_and_the_next_run_logs_in_with_it() {
    let fake = Fake::start(None, token_server);
    let addr = fake.addr.to_string();
    let home = Home::new();
    let env = home.env(&[]);

    let mut t = Pty::spawn(&[&addr, "--remember", "--user", "alice"], &env);
    t.expect("Password:");
    t.type_keys("alice-password\r");
    t.expect("logged in as alice");
    t.expect("remembered the login of alice at");
    t.expect("> ");
    // This connection logged in with the password: /logout revokes no
    // kept token, so the file stays.
    t.type_keys("/logout\r");
    t.expect("* bye");
    assert!(t.wait_exit().success(), "{}", t.plain());
    assert!(!contains(&t.raw(), FRESH.as_bytes()), "{}", t.plain());
    assert_eq!(
        fake.record().lines(),
        ["L", "alice", "alice-password", "/token", "/logout"]
    );
    let path = home.token_file("alice", fake.addr);
    assert_eq!(
        std::fs::read_to_string(&path).unwrap(),
        format!("{FRESH}\n")
    );
    assert_eq!(mode_of(&path), 0o600);
    assert_eq!(mode_of(path.parent().unwrap()), 0o700);
    // Nothing else in the directory (no temporary file left).
    assert_eq!(
        std::fs::read_dir(path.parent().unwrap()).unwrap().count(),
        1
    );

    // The next run asks nothing: `T` and the token, then the chat.
    let mut t = Pty::spawn(&[&addr], &env);
    t.expect("logged in as alice");
    t.expect("> ");
    t.type_keys("hello\r");
    t.expect("alice: hello");
    t.type_keys("/quit\r");
    t.expect("* bye");
    assert!(t.wait_exit().success(), "{}", t.plain());
    let plain = t.plain();
    assert!(!plain.contains("Password"), "{plain}");
    assert!(!plain.contains("Sign up"), "{plain}");
    assert!(!contains(&t.raw(), FRESH.as_bytes()), "{plain}");
    assert_eq!(fake.record().lines(), ["T", FRESH, "hello", "/quit"]);
    assert!(path.exists());

    // A script needs no password either; /logout of a token login
    // deletes the token it revokes.
    let (status, out, err) = run_piped(&[&addr], &env, "hi\n/logout\n");
    assert!(status.success(), "{out}{err}");
    assert!(out.trim_end().ends_with("* bye"), "{out}");
    assert!(!out.contains(FRESH) && !err.contains(FRESH), "{out}{err}");
    assert_eq!(fake.record().lines(), ["T", FRESH, "hi", "/logout"]);
    assert!(!path.exists(), "{err}");
    assert!(err.contains("deleted"), "{err}");

    // Without the token, a script without a password is refused again.
    let (status, _, err) = run_piped(&[&addr], &env, "");
    assert_eq!(status.code(), Some(2), "{err}");
    fake.no_more_connections();
}

#[test]
fn a_refused_token_is_deleted_and_the_password_asked() {
    let fake = Fake::start(None, token_server);
    let addr = fake.addr.to_string();
    let home = Home::new();
    let path = home.keep_token(fake.addr, STALE);

    let mut t = Pty::spawn(&[&addr], &home.env(&[]));
    t.expect("refused the kept login token");
    t.expect("Sign up (R) or Login (L)?");
    t.type_keys("L\r");
    t.expect("Username:");
    t.type_keys("alice\r");
    t.expect("Password:");
    t.type_keys("alice-password\r");
    t.expect("logged in as alice");
    t.expect("> ");
    t.type_keys("/quit\r");
    t.expect("* bye");
    assert!(t.wait_exit().success(), "{}", t.plain());
    assert!(!contains(&t.raw(), STALE.as_bytes()), "{}", t.plain());
    assert!(!path.exists());
    assert_eq!(
        fake.record().lines(),
        ["T", STALE, "L", "alice", "alice-password", "/quit"]
    );

    // A script with a password falls back by itself.
    home.keep_token(fake.addr, STALE);
    let (status, out, err) = run_piped(&[&addr, "--user", "alice"], &home.env(&[PW]), "hi\n");
    assert!(status.success(), "{out}{err}");
    assert!(err.contains("refused the kept login token"), "{err}");
    assert!(!path.exists());
    assert_eq!(
        fake.record().lines(),
        ["T", STALE, "L", "alice", "x-password", "hi", "/quit"]
    );
}

#[test]
fn forget_revokes_on_the_server_and_deletes_the_file() {
    let fake = Fake::start(None, token_server);
    let addr = fake.addr.to_string();
    let home = Home::new();
    // A relative XDG_CONFIG_HOME is ignored (the XDG rule): the tokens are
    // under $HOME/.config.
    let env = [("HOME", home.home.as_str()), ("XDG_CONFIG_HOME", "rel")];
    let dir = home.dir.path().join(".config/neochat/tokens");
    let path = dir.join(format!("alice@{addr}"));

    // --remember with a scripted login keeps the token there.
    let env_pw = [env[0], env[1], PW];
    let (status, out, err) = run_piped(&[&addr, "--remember", "--user", "alice"], &env_pw, "");
    assert!(status.success(), "{out}{err}");
    assert!(!out.contains(FRESH) && !err.contains(FRESH), "{out}{err}");
    assert_eq!(
        fake.record().lines(),
        ["L", "alice", "x-password", "/token", "/quit"]
    );
    assert_eq!(std::fs::read_to_string(&path).unwrap().trim(), FRESH);
    assert_eq!(mode_of(&path), 0o600);
    assert_eq!(mode_of(&dir), 0o700);

    let (status, out, err) = run_piped(&[&addr, "--forget"], &env, "");
    assert!(status.success(), "{out}{err}");
    assert!(
        out.contains("the server revoked the login token of alice"),
        "{out}"
    );
    assert!(out.contains("deleted"), "{out}");
    assert!(!out.contains(FRESH) && !err.contains(FRESH), "{out}{err}");
    assert_eq!(fake.record().lines(), ["T", FRESH, "/logout"]);
    assert!(!path.exists());

    // Nothing kept: said, and no connection at all.
    let (status, out, err) = run_piped(&[&addr, "--forget"], &env, "");
    assert!(status.success(), "{out}{err}");
    assert!(out.contains("no login token is kept"), "{out}");
    fake.no_more_connections();

    // A token the server no longer takes is just deleted.
    std::fs::write(&path, format!("{STALE}\n")).unwrap();
    let (status, out, err) = run_piped(&[&addr, "--forget"], &env, "");
    assert!(status.success(), "{out}{err}");
    assert!(out.contains("no longer takes the login token"), "{out}");
    assert!(!path.exists());
    assert_eq!(fake.record().lines(), ["T", STALE]);

    // A server that cannot be reached: the token is kept, to be revoked
    // later.
    let dead = dead_addr();
    let kept = dir.join(format!("alice@{dead}"));
    std::fs::write(&kept, format!("{VALID}\n")).unwrap();
    let (status, _, err) = run_piped(&[&dead.to_string(), "--forget"], &env, "");
    assert_eq!(status.code(), Some(1), "{err}");
    assert!(err.contains("still kept"), "{err}");
    assert!(kept.exists());
}

#[test]
fn passwd_after_a_token_login_is_hidden_and_forgets_the_revoked_token() {
    let fake = Fake::start(None, token_server);
    let addr = fake.addr.to_string();
    let home = Home::new();
    let path = home.keep_token(fake.addr, VALID);

    let mut t = Pty::spawn(&[&addr], &home.env(&[]));
    t.expect("logged in as alice");
    t.expect("> ");
    // A password typed after /passwd is never sent.
    t.type_keys("/passwd typed-in-the-line\r");
    t.expect("takes nothing after it");
    t.expect("Current password:");
    t.type_keys("old-password-1\r");
    t.expect("New password (8-72 bytes):");
    t.type_keys("new-password-2\r");
    t.expect("Type it again:");
    t.type_keys("new-password-2\r");
    t.expect("* password changed");
    // Every token of the account is revoked with it: the kept one goes.
    t.expect("deleted");
    t.expect("> ");
    t.type_keys("/quit\r");
    t.expect("* bye");
    assert!(t.wait_exit().success(), "{}", t.plain());
    assert!(!path.exists());
    for secret in ["old-password-1", "new-password-2", VALID] {
        assert!(
            !contains(&t.raw(), secret.as_bytes()),
            "{secret} shown:\n{}",
            t.plain()
        );
    }
    assert_eq!(
        fake.record().lines(),
        [
            "T",
            VALID,
            "/passwd",
            "old-password-1",
            "new-password-2",
            "/quit"
        ]
    );
}

// -------------------------------------------------------------- files
//
// Against the real server: `/send` (its `/upload`, then a PUT over a
// connection of its own), the announcement shown with a number, `/get N`.

/// A file of `len` bytes that are not all alike, at `dir/name`.
fn made_file(dir: &Path, name: &str, len: usize) -> (PathBuf, Vec<u8>) {
    let mut bytes = Vec::with_capacity(len + 4);
    let mut x: u32 = 0x9e37_79b9;
    while bytes.len() < len {
        // xorshift32
        x ^= x << 13;
        x ^= x >> 17;
        x ^= x << 5;
        bytes.extend_from_slice(&x.to_le_bytes());
    }
    bytes.truncate(len);
    let path = dir.join(name);
    std::fs::write(&path, &bytes).unwrap();
    (path, bytes)
}

/// The names in `dir`, sorted.
fn names_in(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    names.sort();
    names
}

/// Waits until `text` is anywhere in the terminal (lines of two
/// connections may come in either order).
#[track_caller]
fn shows(t: &Pty, text: &str) {
    let deadline = Instant::now() + WAIT;
    while !t.plain().contains(text) {
        if Instant::now() > deadline {
            panic!("`{text}` never appeared; terminal so far:\n{}", t.plain());
        }
        thread::sleep(Duration::from_millis(10));
    }
}

#[test]
fn send_and_get_a_file_between_two_terminals() {
    let server = Server::start();
    let addr = server.addr.to_string();
    for name in ["alice", "bob"] {
        Peer::register(server.addr, name).send("/quit\n");
    }
    let src = tempfile::tempdir().unwrap();
    let (path, bytes) = made_file(src.path(), "my report.bin", 5_000_000);
    let down = tempfile::tempdir().unwrap();
    let dir = down.path().to_str().unwrap();

    let login = |name: &str| {
        let pw = format!("{name}-password");
        let env = [("NEOCHAT_PASSWORD", pw.as_str()), ("NO_COLOR", "1")];
        let mut t = Pty::spawn(&[&addr, "--user", name], &env);
        t.expect(&format!("logged in as {name}"));
        t.expect("> ");
        t
    };
    let mut bob = login("bob");
    let mut alice = login("alice");

    // The space becomes `_`; the server's announcement is the message, shown
    // with a number instead of its URL, to both.
    alice.type_keys(&format!("/send {}\r", path.display()));
    let shown = "alice: [file] my_report.bin (4.8 MiB) /get 1";
    bob.expect(shown);
    assert!(stamped(&bob.plain(), shown), "{}", bob.plain());
    shows(&alice, "* sent my_report.bin");
    shows(&alice, shown);
    for t in [&alice, &bob] {
        // Neither the slot nor the file's URL reaches the screen.
        assert!(!t.plain().contains("/files/"), "{}", t.plain());
        assert!(!t.plain().contains("* upload"), "{}", t.plain());
    }

    bob.type_keys(&format!("/get 1 {dir}\r"));
    bob.expect(&format!("* saved {dir}/my_report.bin (4.8 MiB)"));
    assert!(std::fs::read(down.path().join("my_report.bin")).unwrap() == bytes);
    // Never over another file.
    bob.type_keys(&format!("/get 1 {dir}\r"));
    bob.expect(&format!("* saved {dir}/my_report (1).bin (4.8 MiB)"));
    assert!(std::fs::read(down.path().join("my_report (1).bin")).unwrap() == bytes);
    assert_eq!(
        names_in(down.path()),
        ["my_report (1).bin", "my_report.bin"],
        "no .part left"
    );
    bob.type_keys("/get 2\r");
    bob.expect("! there is no file 2: the only file shown so far is 1");

    // Mistakes are said at once, and nothing is sent.
    alice.type_keys(&format!("/send {}\r", src.path().display()));
    alice.expect("not a regular file");
    alice.type_keys("/send /no/such/file\r");
    alice.expect("! cannot send /no/such/file: no such file or directory");

    for t in [&mut alice, &mut bob] {
        t.type_keys("/quit\r");
        t.expect("* bye");
        assert!(t.wait_exit().success(), "{}", t.plain());
    }
}

#[test]
fn a_script_sends_over_tls_and_a_pinned_certificate_serves_the_download() {
    let server = Server::start();
    let fp = server.fingerprint();
    let addr = server.addr.to_string();
    for name in ["alice", "bob"] {
        Peer::register(server.addr, name).send("/quit\n");
    }
    let src = tempfile::tempdir().unwrap();
    let (path, bytes) = made_file(src.path(), "data.bin", 5_000_000);
    let down = tempfile::tempdir().unwrap();
    let dir = down.path().to_str().unwrap();

    // Bob trusted the server's self-signed certificate before: no question,
    // for the chat or for the download's own connection.
    let home = Home::new();
    std::fs::create_dir_all(home.known_servers().parent().unwrap()).unwrap();
    std::fs::write(home.known_servers(), format!("{addr} {fp}\n")).unwrap();
    let env = home.env(&[("NEOCHAT_PASSWORD", "bob-password"), ("NO_COLOR", "1")]);
    let mut bob = Pty::spawn(&["--tls", &addr, "--user", "bob"], &env);
    bob.expect("logged in as bob");
    bob.expect("> ");

    // A script trusting it by --fingerprint: the end of its input waits for
    // the upload, whose words go to stderr.
    let args = [&addr, "--user", "alice", "--fingerprint", &fp];
    let env = [("NEOCHAT_PASSWORD", "alice-password")];
    let (status, out, err) = run_piped(&args, &env, &format!("/send {}\n", path.display()));
    assert!(status.success(), "{out}{err}");
    assert!(err.contains("* sent data.bin"), "{err}");
    let shown = "alice: [file] data.bin (4.8 MiB) /get 1";
    assert!(out.contains(shown), "{out}");

    bob.expect(shown);
    bob.type_keys(&format!("/get 1 {dir}\r"));
    bob.expect(&format!("* saved {dir}/data.bin (4.8 MiB)"));
    assert!(std::fs::read(down.path().join("data.bin")).unwrap() == bytes);
    assert_eq!(names_in(down.path()), ["data.bin"]);
    assert!(!bob.plain().contains("Trust it"), "{}", bob.plain());
    bob.type_keys("/quit\r");
    bob.expect("* bye");
    assert!(bob.wait_exit().success(), "{}", bob.plain());
}
