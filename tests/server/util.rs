//! Shared harness: spawns the real `neochat-server` binary on `127.0.0.1:0`
//! with a temporary database, and drives it with blocking `std::net` clients
//! that assert exact lines. Every helper is `#[track_caller]`, so a failure
//! points at the test line that expected something, not at this file.

use std::io::{self, BufRead, BufReader, ErrorKind, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::path::Path;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex, mpsc};
use std::thread;
use std::time::{Duration, Instant};

pub const BIN: &str = env!("CARGO_BIN_EXE_neochat-server");

pub const CHOICE: &str = "? choice Sign up (R) or Login (L)";
pub const USERNAME: &str = "? username";
pub const PASSWORD: &str = "? password";
pub const BAD_CHOICE: &str = "! please answer R or L";
pub const BAD_NAME: &str = "! invalid username: 1-32 letters, digits, '_', '-' or '.'";
pub const BAD_PW: &str = "! password must be 8-72 bytes";
pub const TAKEN: &str = "! username taken";
pub const WRONG: &str = "! wrong username or password";
pub const TOO_MANY: &str = "! too many failed attempts";
pub const TAKEN_OVER: &str = "! logged in from another connection";
pub const CONTROL: &str = "! control characters are not allowed";
pub const BAD_UTF8: &str = "! invalid utf-8";
pub const SLOW_DOWN: &str = "! slow down";
pub const SHUTTING_DOWN: &str = "* server shutting down";

/// How long a client waits for a line that must come.
pub const READ_TIMEOUT: Duration = Duration::from_secs(5);
/// How long a client listens to prove that nothing comes.
pub const QUIET: Duration = Duration::from_millis(300);

/// The password every helper-made account gets (at least 8 bytes).
pub fn pw(name: &str) -> String {
    format!("{name}-secret-pw")
}

// ---------------------------------------------------------------- server

/// A running `neochat-server`; killed on drop. Its stderr (and stdout) is
/// drained in the background so the pipe never fills, and printed if the test
/// panics.
pub struct Server {
    child: Child,
    pub addr: SocketAddr,
    log: Arc<Mutex<String>>,
    _dir: Option<tempfile::TempDir>,
}

impl Server {
    /// Starts a server with its own temporary database. `extra` flags win:
    /// a default is only added for a flag the caller did not pass.
    #[track_caller]
    pub fn start(extra: &[&str]) -> Server {
        let dir = tempfile::tempdir().expect("create temp dir");
        let db = dir.path().join("neochat.db");
        let mut server = Server::spawn(&db, extra, None);
        server._dir = Some(dir);
        server
    }

    /// Starts a server on a database the caller owns (restart tests).
    #[track_caller]
    pub fn start_with_db(db: &Path, extra: &[&str]) -> Server {
        Server::spawn(db, extra, None)
    }

    /// Starts a server whose soft and hard RLIMIT_NOFILE are `nofile`.
    #[track_caller]
    pub fn start_with_nofile(extra: &[&str], nofile: u64) -> Server {
        let dir = tempfile::tempdir().expect("create temp dir");
        let db = dir.path().join("neochat.db");
        let mut server = Server::spawn(&db, extra, Some(nofile));
        server._dir = Some(dir);
        server
    }

    #[track_caller]
    fn spawn(db: &Path, extra: &[&str], nofile: Option<u64>) -> Server {
        let args = server_args(db, extra);
        let mut cmd = Command::new(BIN);
        cmd.args(&args);
        if let Some(limit) = nofile {
            use std::os::unix::process::CommandExt;
            // SAFETY: setrlimit is async-signal-safe and touches only the child.
            unsafe {
                cmd.pre_exec(move || {
                    let rl = libc::rlimit {
                        rlim_cur: limit as libc::rlim_t,
                        rlim_max: limit as libc::rlim_t,
                    };
                    if libc::setrlimit(libc::RLIMIT_NOFILE, &rl) != 0 {
                        return Err(io::Error::last_os_error());
                    }
                    Ok(())
                });
            }
        }
        Server::start_command(cmd)
    }

    /// The database of a server started with [`Server::start`].
    pub fn db_path(&self) -> Option<std::path::PathBuf> {
        self._dir.as_ref().map(|d| d.path().join("neochat.db"))
    }

    pub fn pid(&self) -> i32 {
        self.child.id() as i32
    }

    /// Everything the server wrote to stderr and stdout so far.
    pub fn output(&self) -> String {
        self.log.lock().unwrap().clone()
    }

    pub fn signal(&self, sig: libc::c_int) {
        // SAFETY: plain syscall on our own child's pid.
        let rc = unsafe { libc::kill(self.pid(), sig) };
        assert_eq!(rc, 0, "kill({}, {sig}) failed", self.pid());
    }

    pub fn sigterm(&self) {
        self.signal(libc::SIGTERM);
    }

    /// SIGKILL and reap.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Waits up to `timeout` for the process to exit.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + timeout;
        loop {
            match self.child.try_wait() {
                Ok(Some(status)) => return Some(status),
                Ok(None) if Instant::now() < deadline => thread::sleep(Duration::from_millis(10)),
                Ok(None) => return None,
                Err(e) => panic!("try_wait: {e}"),
            }
        }
    }

    /// Peak resident memory of the server (VmHWM), in KiB.
    pub fn peak_rss_kib(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid()))
            .expect("read /proc/PID/status");
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmHWM:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .expect("VmHWM in /proc/PID/status")
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if thread::panicking() {
            thread::sleep(Duration::from_millis(50));
            eprintln!(
                "---- server output ----\n{}\n---- end of server output ----",
                self.log.lock().unwrap()
            );
        }
    }
}

/// The server's command line: defaults for the flags `extra` lacks, then `extra`.
pub fn server_args(db: &Path, extra: &[&str]) -> Vec<String> {
    let has = |flag: &str| {
        extra
            .iter()
            .any(|a| *a == flag || a.starts_with(&format!("{flag}=")))
    };
    let mut args: Vec<String> = Vec::new();
    let defaults = [
        ("--listen", "127.0.0.1:0".to_string()),
        ("--db", db.display().to_string()),
        ("--bcrypt-cost", "4".to_string()),
        ("--workers", "2".to_string()),
    ];
    for (flag, value) in defaults {
        if !has(flag) {
            args.push(flag.to_string());
            args.push(value);
        }
    }
    args.extend(extra.iter().map(|s| s.to_string()));
    args
}

fn spawn_drain(
    pipe: impl io::Read + Send + 'static,
    prefix: &'static str,
    log: Arc<Mutex<String>>,
    tx: Option<mpsc::Sender<String>>,
) {
    thread::spawn(move || {
        let mut reader = BufReader::new(pipe);
        let mut buf = Vec::new();
        loop {
            buf.clear();
            match reader.read_until(b'\n', &mut buf) {
                Ok(0) | Err(_) => return,
                Ok(_) => {
                    let line = String::from_utf8_lossy(&buf).trim_end().to_string();
                    {
                        let mut log = log.lock().unwrap();
                        log.push_str(prefix);
                        log.push_str(&line);
                        log.push('\n');
                    }
                    if let Some(tx) = &tx {
                        let _ = tx.send(line);
                    }
                }
            }
        }
    });
}

/// Runs the binary with `args` for at most `limit` (then kills it), returning
/// its exit status (`None` if it was still running) and its combined stdout
/// and stderr.
#[track_caller]
pub fn run_binary(args: &[&str], limit: Duration) -> (Option<ExitStatus>, String) {
    let mut child = Command::new(BIN)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("spawn {BIN}: {e}"));
    let deadline = Instant::now() + limit;
    let mut killed = false;
    while child.try_wait().expect("try_wait").is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            killed = true;
            break;
        }
        thread::sleep(Duration::from_millis(20));
    }
    let out = child.wait_with_output().expect("wait_with_output");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    ((!killed).then_some(out.status), text)
}

// ---------------------------------------------------------------- client

/// A blocking line client with a 5 s read timeout.
pub struct Client {
    reader: BufReader<TcpStream>,
    writer: TcpStream,
    pub label: String,
}

fn is_timeout(e: &io::Error) -> bool {
    matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut)
}

fn is_reset(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        ErrorKind::ConnectionReset | ErrorKind::ConnectionAborted | ErrorKind::BrokenPipe
    )
}

impl Client {
    /// Connects; reads nothing.
    #[track_caller]
    pub fn connect(addr: SocketAddr) -> Client {
        let stream = TcpStream::connect(addr).unwrap_or_else(|e| panic!("connect {addr}: {e}"));
        Client::from_stream(stream)
    }

    pub fn from_stream(stream: TcpStream) -> Client {
        stream.set_read_timeout(Some(READ_TIMEOUT)).unwrap();
        stream
            .set_write_timeout(Some(Duration::from_secs(20)))
            .unwrap();
        stream.set_nodelay(true).unwrap();
        let label = format!("client {}", stream.local_addr().unwrap());
        let writer = stream.try_clone().expect("clone stream");
        Client {
            reader: BufReader::with_capacity(64 * 1024, stream),
            writer,
            label,
        }
    }

    /// Connects and consumes the welcome line and the choice prompt.
    #[track_caller]
    pub fn connect_welcomed(addr: SocketAddr) -> Client {
        let mut c = Client::connect(addr);
        c.expect_welcome();
        c
    }

    pub fn with_label(mut self, label: &str) -> Client {
        self.label = label.to_string();
        self
    }

    /// Expects `* welcome to NeoChat (N online)` and the choice prompt; returns N.
    #[track_caller]
    pub fn expect_welcome(&mut self) -> usize {
        let line = self.line();
        let n = parse_welcome(&line)
            .unwrap_or_else(|| panic!("{}: expected welcome line, got {line:?}", self.label));
        self.expect(CHOICE);
        n
    }

    #[track_caller]
    pub fn send(&mut self, text: &str) {
        self.send_bytes(text.as_bytes());
    }

    #[track_caller]
    pub fn send_bytes(&mut self, bytes: &[u8]) {
        if let Err(e) = self.writer.write_all(bytes) {
            panic!("{}: write of {} bytes failed: {e}", self.label, bytes.len());
        }
    }

    /// Sends, reporting a failure instead of panicking (the server may be
    /// closing the connection).
    pub fn try_send_bytes(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.writer.write_all(bytes)
    }

    pub fn label(&self) -> &str {
        &self.label
    }

    /// Sends one byte per write, pausing between them.
    #[track_caller]
    pub fn send_slowly(&mut self, bytes: &[u8], pause: Duration) {
        for b in bytes {
            self.send_bytes(std::slice::from_ref(b));
            thread::sleep(pause);
        }
    }

    /// Closes with a reset (SO_LINGER 0) instead of a FIN.
    pub fn reset(self) {
        use std::os::fd::AsRawFd;
        let linger = libc::linger {
            l_onoff: 1,
            l_linger: 0,
        };
        // SAFETY: a valid socket descriptor and a correctly sized option.
        let rc = unsafe {
            libc::setsockopt(
                self.writer.as_raw_fd(),
                libc::SOL_SOCKET,
                libc::SO_LINGER,
                (&linger as *const libc::linger).cast(),
                std::mem::size_of::<libc::linger>() as libc::socklen_t,
            )
        };
        assert_eq!(rc, 0, "setsockopt(SO_LINGER)");
    }

    pub fn shutdown_write(&self) {
        self.writer
            .shutdown(Shutdown::Write)
            .expect("shutdown(Write)");
    }

    fn try_line(&mut self) -> Result<String, String> {
        let mut buf = Vec::new();
        match self.reader.read_until(b'\n', &mut buf) {
            Ok(0) => Err("got EOF".to_string()),
            Ok(_) if buf.last() != Some(&b'\n') => Err(format!(
                "got EOF after an unterminated line {:?}",
                String::from_utf8_lossy(&buf)
            )),
            Ok(_) => {
                buf.pop();
                String::from_utf8(buf).map_err(|e| {
                    format!(
                        "got a line that is not UTF-8: {:?}",
                        String::from_utf8_lossy(e.as_bytes())
                    )
                })
            }
            Err(e) if is_timeout(&e) => Err(format!(
                "timed out after {READ_TIMEOUT:?} (partial input {:?})",
                String::from_utf8_lossy(&buf)
            )),
            Err(e) => Err(format!(
                "got error {e} (partial input {:?})",
                String::from_utf8_lossy(&buf)
            )),
        }
    }

    /// Reads one line, without its LF.
    #[track_caller]
    pub fn line(&mut self) -> String {
        match self.try_line() {
            Ok(line) => line,
            Err(why) => panic!("{}: expected a line, {why}", self.label),
        }
    }

    /// The next line must be exactly `want`.
    #[track_caller]
    pub fn expect(&mut self, want: &str) {
        let got = self.line();
        assert_eq!(got, want, "{}: unexpected line", self.label);
    }

    /// The peer must close (EOF or reset) within the read timeout, with no
    /// further data.
    #[track_caller]
    pub fn expect_closed(&mut self) {
        match self.reader.fill_buf() {
            Ok([]) => {}
            Ok(data) => panic!(
                "{}: expected the connection to close, got {:?}",
                self.label,
                String::from_utf8_lossy(data)
            ),
            Err(e) if is_reset(&e) => {}
            Err(e) if is_timeout(&e) => panic!(
                "{}: expected the connection to close, still open after {READ_TIMEOUT:?}",
                self.label
            ),
            Err(e) => panic!("{}: expected close, got error {e}", self.label),
        }
    }

    /// Reads one line, waiting up to `d` instead of the usual timeout.
    #[track_caller]
    pub fn line_within(&mut self, d: Duration) -> String {
        self.reader.get_ref().set_read_timeout(Some(d)).unwrap();
        let result = self.try_line();
        self.reader
            .get_ref()
            .set_read_timeout(Some(READ_TIMEOUT))
            .unwrap();
        match result {
            Ok(line) => line,
            Err(why) => panic!("{}: expected a line within {d:?}, {why}", self.label),
        }
    }

    /// Nothing may arrive (neither data nor EOF) within `d`.
    #[track_caller]
    pub fn no_line_within(&mut self, d: Duration) {
        self.reader.get_ref().set_read_timeout(Some(d)).unwrap();
        let result = self.reader.fill_buf().map(|b| b.to_vec());
        self.reader
            .get_ref()
            .set_read_timeout(Some(READ_TIMEOUT))
            .unwrap();
        match result {
            Ok(data) if data.is_empty() => {
                panic!("{}: expected silence, the connection closed", self.label)
            }
            Ok(data) => panic!(
                "{}: expected silence for {d:?}, got {:?}",
                self.label,
                String::from_utf8_lossy(&data)
            ),
            Err(e) if is_timeout(&e) => {}
            Err(e) => panic!("{}: expected silence, got error {e}", self.label),
        }
    }

    /// Nothing may arrive within 300 ms.
    #[track_caller]
    pub fn quiet(&mut self) {
        self.no_line_within(QUIET);
    }

    /// Reads lines until none arrives within `gap`.
    #[track_caller]
    pub fn lines_until_quiet(&mut self, gap: Duration) -> Vec<String> {
        let mut lines = Vec::new();
        loop {
            self.reader.get_ref().set_read_timeout(Some(gap)).unwrap();
            let ready = self.reader.fill_buf().map(|b| b.len());
            self.reader
                .get_ref()
                .set_read_timeout(Some(READ_TIMEOUT))
                .unwrap();
            match ready {
                Ok(0) => panic!("{}: connection closed; lines so far {lines:?}", self.label),
                Ok(_) => lines.push(self.line()),
                Err(e) if is_timeout(&e) => return lines,
                Err(e) => panic!("{}: error {e}; lines so far {lines:?}", self.label),
            }
        }
    }

    /// Reads and discards everything until EOF or reset; returns the byte
    /// count. Panics if the connection is still open after `limit`.
    #[track_caller]
    pub fn drain_until_closed(&mut self, limit: Duration) -> usize {
        let deadline = Instant::now() + limit;
        let mut total = 0;
        loop {
            assert!(
                Instant::now() < deadline,
                "{}: still open after draining {total} bytes for {limit:?}",
                self.label
            );
            match self.reader.fill_buf() {
                Ok([]) => return total,
                Ok(data) => {
                    let n = data.len();
                    total += n;
                    self.reader.consume(n);
                }
                Err(e) if is_reset(&e) => return total,
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e) if is_timeout(&e) => panic!(
                    "{}: connection neither closed nor sent data for {READ_TIMEOUT:?} \
                     (drained {total} bytes)",
                    self.label
                ),
                Err(e) => panic!("{}: error {e} after {total} bytes", self.label),
            }
        }
    }

    /// Expects an `* online (N): ...` line; returns the names in order.
    #[track_caller]
    pub fn expect_online(&mut self) -> Vec<String> {
        let line = self.line();
        parse_online(&line).unwrap_or_else(|| {
            panic!(
                "{}: expected `* online (N): names`, got {line:?}",
                self.label
            )
        })
    }

    /// From the choice prompt: registers and consumes the online line.
    #[track_caller]
    pub fn register_here(&mut self, name: &str, password: &str) -> Vec<String> {
        self.send("R\n");
        self.expect(USERNAME);
        self.send(&format!("{name}\n"));
        self.expect(PASSWORD);
        self.send(&format!("{password}\n"));
        self.expect(&format!("* registered and logged in as {name}"));
        let names = self.expect_online();
        assert!(
            names.iter().any(|n| n == name),
            "{}: {name} missing from online list {names:?}",
            self.label
        );
        names
    }

    /// From the choice prompt: logs in as `typed`, expects the name `shown`
    /// and consumes the online line.
    #[track_caller]
    pub fn login_here(&mut self, typed: &str, password: &str, shown: &str) -> Vec<String> {
        self.send("L\n");
        self.expect(USERNAME);
        self.send(&format!("{typed}\n"));
        self.expect(PASSWORD);
        self.send(&format!("{password}\n"));
        self.expect(&format!("* logged in as {shown}"));
        let names = self.expect_online();
        assert!(
            names.iter().any(|n| n == shown),
            "{}: {shown} missing from online list {names:?}",
            self.label
        );
        names
    }

    /// From the choice prompt: a login that must fail (not the third one).
    #[track_caller]
    pub fn login_fails(&mut self, typed: &str, password: &str) {
        self.send("L\n");
        self.expect(USERNAME);
        self.send(&format!("{typed}\n"));
        self.expect(PASSWORD);
        self.send(&format!("{password}\n"));
        self.expect(WRONG);
        self.expect(CHOICE);
    }

    /// While Chatting: `/quit`, `* bye`, then the close.
    #[track_caller]
    pub fn quit(&mut self) {
        self.send("/quit\n");
        self.expect("* bye");
        self.expect_closed();
    }
}

/// N from `* welcome to NeoChat (N online)`.
pub fn parse_welcome(line: &str) -> Option<usize> {
    line.strip_prefix("* welcome to NeoChat (")?
        .strip_suffix(" online)")?
        .parse()
        .ok()
}

/// Names from `* online (N): a, b` (checking that N matches the count).
pub fn parse_online(line: &str) -> Option<Vec<String>> {
    let rest = line.strip_prefix("* online (")?;
    let (n, names) = rest.split_once("): ")?;
    let n: usize = n.parse().ok()?;
    let names: Vec<String> = names.split(", ").map(str::to_string).collect();
    (names.len() == n).then_some(names)
}

// ---------------------------------------------------------------- flows

/// Connects, registers `name` with `password`, asserting every line.
#[track_caller]
pub fn register(addr: SocketAddr, name: &str, password: &str) -> Client {
    let mut c = Client::connect(addr).with_label(name);
    c.expect_welcome();
    c.register_here(name, password);
    c
}

/// Connects and logs in as `name`, asserting every line.
#[track_caller]
pub fn login(addr: SocketAddr, name: &str, password: &str) -> Client {
    let mut c = Client::connect(addr).with_label(name);
    c.expect_welcome();
    c.login_here(name, password, name);
    c
}

/// Registers `name` (password `pw(name)`) and checks that each of `others`
/// gets `* name joined`.
#[track_caller]
pub fn join(addr: SocketAddr, name: &str, others: &mut [&mut Client]) -> Client {
    let c = register(addr, name, &pw(name));
    for o in others.iter_mut() {
        o.expect(&format!("* {name} joined"));
    }
    c
}

/// Registers `name`, then quits, so the account exists and is offline.
#[track_caller]
pub fn create_account(addr: SocketAddr, name: &str, password: &str) {
    let mut c = register(addr, name, password);
    c.quit();
}

// ---------------------------------------------------------------- commands

impl Server {
    /// Starts a server from a command the caller built (to run it as another
    /// user, say); stdin, stdout and stderr are set here. Like the other
    /// starts, it returns once the server printed `listening on ADDR`.
    #[track_caller]
    pub fn start_command(mut cmd: Command) -> Server {
        let shown = format!("{cmd:?}");
        cmd.stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = cmd.spawn().unwrap_or_else(|e| panic!("spawn {shown}: {e}"));
        let log = Arc::new(Mutex::new(String::new()));
        let (tx, rx) = mpsc::channel::<String>();
        spawn_drain(
            child.stderr.take().expect("piped stderr"),
            "",
            log.clone(),
            Some(tx),
        );
        spawn_drain(
            child.stdout.take().expect("piped stdout"),
            "[stdout] ",
            log.clone(),
            None,
        );
        let deadline = Instant::now() + Duration::from_secs(10);
        let addr = loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match rx.recv_timeout(left) {
                Ok(line) => {
                    if let Some(rest) = line.split_once("listening on ").map(|(_, r)| r.trim()) {
                        break rest
                            .parse::<SocketAddr>()
                            .unwrap_or_else(|e| panic!("cannot parse address in {line:?}: {e}"));
                    }
                }
                Err(e) => {
                    let _ = child.kill();
                    let status = child.wait();
                    thread::sleep(Duration::from_millis(50));
                    panic!(
                        "server {shown} never printed `listening on ADDR` ({e:?}); \
                         status {status:?}; output:\n{}",
                        log.lock().unwrap()
                    );
                }
            }
        };
        Server {
            child,
            addr,
            log,
            _dir: None,
        }
    }
}

/// Runs a command the caller built for at most `limit` (then kills it), like
/// [`run_binary`]: its exit status (`None` if it was still running) and its
/// combined stdout and stderr.
#[track_caller]
pub fn run_command(mut cmd: Command, limit: Duration) -> (Option<ExitStatus>, String) {
    let shown = format!("{cmd:?}");
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("spawn {shown}: {e}"));
    let deadline = Instant::now() + limit;
    let mut killed = false;
    while child.try_wait().expect("try_wait").is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            killed = true;
            break;
        }
        thread::sleep(Duration::from_millis(20));
    }
    let out = child.wait_with_output().expect("wait_with_output");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    ((!killed).then_some(out.status), text)
}
