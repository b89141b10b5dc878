//! Shared harness: spawns the real `neochat-server` binary on `127.0.0.1:0`
//! with a temporary database, and drives it with blocking `std::net` clients
//! that assert exact lines. Every helper is `#[track_caller]`, so a failure
//! points at the test line that expected something, not at this file.

use std::io::{self, BufRead, BufReader, ErrorKind, Read, Write};
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

    /// Like [`Server::start`], with the server's own debug lines in its
    /// output (`RUST_LOG=info,neochat=debug`): each connection opened and
    /// closed, each password check started or dropped.
    #[track_caller]
    pub fn start_with_debug_log(extra: &[&str]) -> Server {
        let dir = tempfile::tempdir().expect("create temp dir");
        let mut cmd = Command::new(BIN);
        cmd.args(server_args(&dir.path().join("neochat.db"), extra))
            .env("RUST_LOG", "info,neochat=debug");
        let mut server = Server::start_command(cmd);
        server._dir = Some(dir);
        server
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
    let mut cmd = Command::new(BIN);
    cmd.args(args);
    run_command(cmd, limit)
}

/// Waits (up to 10 s) for a line containing `needle` in the server's log,
/// and returns it.
#[track_caller]
pub fn wait_for_log(s: &Server, needle: &str) -> String {
    wait_for_log_count(s, needle, 1)
}

/// Waits (up to 10 s) for the `n`th line containing `needle` in the
/// server's log, and returns it.
#[track_caller]
pub fn wait_for_log_count(s: &Server, needle: &str, n: usize) -> String {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let log = s.output();
        if let Some(line) = log.lines().filter(|l| l.contains(needle)).nth(n - 1) {
            return line.to_string();
        }
        assert!(
            Instant::now() < deadline,
            "no log line {n} with {needle:?} within 10 s:\n{log}"
        );
        thread::sleep(Duration::from_millis(10));
    }
}

// ---------------------------------------------------------------- client

/// A blocking line client with a 5 s read timeout.
pub struct Client {
    reader: BufReader<TcpStream>,
    writer: TcpStream,
    pub label: String,
    /// Reads skip history lines (`~<time> <line>`): tests of the rules that
    /// history does not change are not written around catch-up. Tests of
    /// history turn this off with [`Client::with_history`].
    skip_history: bool,
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
            skip_history: true,
        }
    }

    /// Reads return history lines (`~<time> <line>`) too.
    pub fn with_history(mut self) -> Client {
        self.skip_history = false;
        self
    }

    /// Connects and consumes the welcome line and the choice prompt.
    #[track_caller]
    pub fn connect_welcomed(addr: SocketAddr) -> Client {
        let mut c = Client::connect(addr);
        c.expect_welcome();
        c
    }

    /// The client's own address, as the server sees it on loopback.
    /// The socket itself (anything buffered but unread is dropped).
    pub fn into_stream(self) -> TcpStream {
        self.writer
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.writer.local_addr().expect("local address")
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
        loop {
            let line = self.try_any_line()?;
            if !(self.skip_history && line.starts_with('~')) {
                return Ok(line);
            }
        }
    }

    fn try_any_line(&mut self) -> Result<String, String> {
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

    /// Waits up to `d` for data or EOF without consuming anything: the
    /// number of bytes buffered, 0 at EOF.
    /// History lines are consumed on the way unless asked for.
    fn peek_within(&mut self, d: Duration) -> io::Result<usize> {
        let deadline = Instant::now() + d;
        loop {
            let left = deadline
                .saturating_duration_since(Instant::now())
                .max(Duration::from_millis(1));
            self.reader.get_ref().set_read_timeout(Some(left)).unwrap();
            let ready = self.reader.fill_buf().map(|b| b.len());
            self.reader
                .get_ref()
                .set_read_timeout(Some(READ_TIMEOUT))
                .unwrap();
            let history = self.skip_history && self.reader.buffer().first() == Some(&b'~');
            if matches!(ready, Ok(n) if n > 0) && history {
                if let Err(why) = self.try_any_line() {
                    panic!("{}: in a history line, {why}", self.label);
                }
                continue;
            }
            return ready;
        }
    }

    /// The next line, if one starts arriving within `d`; the connection
    /// must stay open (`so_far` is shown if it does not).
    #[track_caller]
    fn next_line_within(&mut self, d: Duration, so_far: &[String]) -> Option<String> {
        match self.peek_within(d) {
            Ok(0) => panic!("{}: connection closed; lines so far {so_far:?}", self.label),
            Ok(_) => Some(self.line()),
            Err(e) if is_timeout(&e) => None,
            Err(e) => panic!("{}: error {e}; lines so far {so_far:?}", self.label),
        }
    }

    /// Nothing may arrive (neither data nor EOF) within `d`.
    #[track_caller]
    pub fn no_line_within(&mut self, d: Duration) {
        match self.peek_within(d) {
            Ok(0) => panic!("{}: expected silence, the connection closed", self.label),
            Ok(_) => panic!(
                "{}: expected silence for {d:?}, got {:?}",
                self.label,
                String::from_utf8_lossy(self.reader.buffer())
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
        while let Some(line) = self.next_line_within(gap, &lines) {
            lines.push(line);
        }
        lines
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

    /// Everything the peer sends until it closes (within `limit`).
    #[track_caller]
    pub fn bytes_until_closed(&mut self, limit: Duration) -> Vec<u8> {
        let deadline = Instant::now() + limit;
        let mut got = Vec::new();
        loop {
            assert!(
                Instant::now() < deadline,
                "{}: still open after {limit:?} ({} bytes)",
                self.label,
                got.len()
            );
            match self.reader.fill_buf() {
                Ok([]) => return got,
                Ok(data) => {
                    got.extend_from_slice(data);
                    let n = data.len();
                    self.reader.consume(n);
                }
                Err(e) if is_reset(&e) => return got,
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e) => panic!("{}: error {e} after {} bytes", self.label, got.len()),
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

    /// Everything this client gets until the server has handled all it
    /// sent so far (an unknown command is the marker), as received.
    #[track_caller]
    pub fn sync(&mut self) -> Vec<String> {
        self.send("/syncmarker\n");
        let mut lines = Vec::new();
        loop {
            let line = self.line();
            if line == "! unknown command /syncmarker; try /help" {
                return lines;
            }
            lines.push(line);
        }
    }

    /// The next line must be an error (`! `), and nothing else may follow
    /// it; the connection still works. For refusals the protocol gives no
    /// exact line for.
    #[track_caller]
    pub fn refused(&mut self) -> String {
        let line = self.line();
        assert!(
            line.starts_with("! "),
            "{}: expected an error line, got {line:?}",
            self.label
        );
        assert_eq!(
            self.sync(),
            Vec::<String>::new(),
            "{}: after {line:?}",
            self.label
        );
        line
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

/// Runs a command the caller built for at most `limit` (then kills it): its
/// exit status (`None` if it was still running) and its combined stdout and
/// stderr.
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

// ---------------------------------------------------------------- probe

/// Time between two probe messages: under 7 lines a second, well below the
/// default flood limit (10 a second, burst 20). The bucket therefore stays
/// full, and even a server that stalls for ~3 s and then reads the backlog
/// in one go has a token for every probe line.
pub const PROBE_PACE: Duration = Duration::from_millis(150);
/// How long the probe waits for something that must eventually happen (its
/// end marker, progress): generous, since the machine is shared and noisy.
pub const PROBE_PATIENCE: Duration = Duration::from_secs(30);
/// Read timeout of the probe's reader threads, so they can be told to stop.
const PROBE_TICK: Duration = Duration::from_millis(100);

static PROBES: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

/// One thing a probe connection heard.
#[derive(Clone, Debug)]
enum Heard {
    /// `<sender>: probe N`.
    Probe(usize),
    /// `<sender>: probe end`.
    End,
    /// A `! ` line.
    Error(String),
    /// Anything else (notices, other users' messages).
    Other(String),
    /// The connection ended: EOF, reset or another error.
    Closed(String),
}

#[derive(Default)]
struct ProbeLog {
    /// What the receiver heard, in order, and when.
    rx: Vec<(Instant, Heard)>,
    /// What the sender's connection heard.
    tx: Vec<(Instant, Heard)>,
    /// When probe `i` was written.
    sent: Vec<Instant>,
    /// The sender's write error, if any.
    send_error: Option<String>,
}

impl ProbeLog {
    fn received(&self) -> usize {
        self.rx
            .iter()
            .filter(|(_, h)| matches!(h, Heard::Probe(_)))
            .count()
    }

    fn rx_heard(&self, line: &str) -> bool {
        Self::has(&self.rx, line)
    }

    fn tx_heard(&self, line: &str) -> bool {
        Self::has(&self.tx, line)
    }

    fn has(side: &[(Instant, Heard)], line: &str) -> bool {
        // Newest first: what a test waits for is usually recent.
        side.iter()
            .rev()
            .any(|(_, h)| matches!(h, Heard::Other(l) if l == line))
    }

    fn closed(&self) -> Option<String> {
        let find = |side: &[(Instant, Heard)], who: &str| {
            side.iter().find_map(|(_, h)| match h {
                Heard::Closed(why) => Some(format!("the {who}'s connection ended: {why}")),
                _ => None,
            })
        };
        find(&self.rx, "receiver").or_else(|| find(&self.tx, "sender"))
    }
}

/// A well-behaved pair of users chatting while a test attacks the server.
///
/// `Probe::start` registers two users; a thread makes the sender say
/// `probe 0`, `probe 1`, ... every [`PROBE_PACE`], and two more threads read
/// everything both connections get. [`Probe::finish`] stops the sender, has
/// it send `probe end`, waits for the receiver to hear it, and asserts that
/// the receiver heard exactly `probe 0..n`, in order, each once, that neither
/// user got a `! ` error nor lost its connection; it prints the largest
/// delivery latency (never asserted on). Lines of other users reaching the
/// probe are recorded, in order, for the test to check.
pub struct Probe {
    /// The user that sends the numbered messages.
    pub tx_name: String,
    /// The user that receives them.
    pub rx_name: String,
    log: Arc<Mutex<ProbeLog>>,
    /// Tells the sender to stop (set by `finish`, or on a shutdown notice).
    stop: Arc<std::sync::atomic::AtomicBool>,
    /// Tells the readers to give up.
    abort: Arc<std::sync::atomic::AtomicBool>,
    sender: Option<thread::JoinHandle<TcpStream>>,
    tx_reader: Option<thread::JoinHandle<BufReader<TcpStream>>>,
    rx_reader: Option<thread::JoinHandle<BufReader<TcpStream>>>,
    rx_writer: Option<TcpStream>,
    /// Clones of both sockets, to unblock everything on a failure.
    sockets: Vec<TcpStream>,
}

/// What a finished probe found.
pub struct ProbeReport {
    /// Messages sent (and, the probe having passed, received) before the end.
    pub sent: usize,
    pub max_latency: Duration,
    /// Lines the receiver heard besides the probe's own, in order.
    pub rx_heard: Vec<String>,
    /// Lines the sender's connection heard, in order.
    pub tx_heard: Vec<String>,
    /// The two connections, still logged in (after [`Probe::finish`] only).
    pub rx: Option<Client>,
    pub tx: Option<Client>,
}

impl Probe {
    /// Registers the pair (password `pw(name)`) and starts chatting.
    #[track_caller]
    pub fn start(addr: SocketAddr) -> Probe {
        let k = PROBES.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let rx_name = format!("proberx{k}");
        let tx_name = format!("probetx{k}");
        let rx = register_patiently(addr, &rx_name, &pw(&rx_name));
        // The receiver's thread hears `* <tx> joined` (a line like any other).
        let tx = register_patiently(addr, &tx_name, &pw(&tx_name));

        let log = Arc::new(Mutex::new(ProbeLog::default()));
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let abort = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let sockets = vec![
            rx.writer.try_clone().expect("clone"),
            tx.writer.try_clone().expect("clone"),
        ];
        let Client {
            reader: rx_reader,
            writer: rx_writer,
            ..
        } = rx;
        let Client {
            reader: tx_reader,
            writer: tx_writer,
            ..
        } = tx;

        let spawn_reader = |reader: BufReader<TcpStream>, is_rx: bool| {
            let (log, stop, abort) = (log.clone(), stop.clone(), abort.clone());
            let prefix = format!("{tx_name}: probe ");
            thread::spawn(move || probe_listen(reader, &prefix, is_rx, &log, &stop, &abort))
        };
        let rx_thread = spawn_reader(rx_reader, true);
        let tx_thread = spawn_reader(tx_reader, false);
        let sender = {
            let (log, stop) = (log.clone(), stop.clone());
            thread::spawn(move || probe_send(tx_writer, &log, &stop))
        };
        Probe {
            tx_name,
            rx_name,
            log,
            stop,
            abort,
            sender: Some(sender),
            tx_reader: Some(tx_thread),
            rx_reader: Some(rx_thread),
            rx_writer: Some(rx_writer),
            sockets,
        }
    }

    /// Whether `line` is the probe's own chatter (which every Chatting
    /// client of the test hears too).
    pub fn is_probe_line(&self, line: &str) -> bool {
        line.strip_prefix(&self.tx_name)
            .and_then(|rest| rest.strip_prefix(": probe "))
            .is_some_and(|rest| rest == "end" || rest.parse::<usize>().is_ok())
    }

    /// Probe messages the receiver heard so far.
    pub fn received(&self) -> usize {
        self.log.lock().unwrap().received()
    }

    /// Waits until the receiver has heard `n` more probe messages than now:
    /// proof that the pair keeps chatting during an attack.
    #[track_caller]
    pub fn wait_progress(&self, n: usize) {
        let start = self.received();
        let deadline = Instant::now() + PROBE_PATIENCE;
        loop {
            {
                let log = self.log.lock().unwrap();
                if log.received() >= start + n {
                    return;
                }
                if let Some(why) = log.closed() {
                    panic!("probe: {why}, while waiting for progress");
                }
            }
            assert!(
                Instant::now() < deadline,
                "probe: no progress: the receiver heard {} of {n} more messages in {PROBE_PATIENCE:?}",
                self.received() - start
            );
            thread::sleep(Duration::from_millis(10));
        }
    }

    /// Waits until the receiver has heard the (non-probe) line `line`.
    #[track_caller]
    pub fn wait_heard(&self, line: &str) {
        self.wait_for(line, false);
    }

    /// Waits until both probe users have heard `line`: a sender that goes
    /// in lockstep with this never gets far ahead of the probe.
    #[track_caller]
    pub fn wait_heard_by_both(&self, line: &str) {
        self.wait_for(line, true);
    }

    #[track_caller]
    fn wait_for(&self, line: &str, both: bool) {
        let deadline = Instant::now() + PROBE_PATIENCE;
        loop {
            {
                let log = self.log.lock().unwrap();
                if log.rx_heard(line) && (!both || log.tx_heard(line)) {
                    return;
                }
                if let Some(why) = log.closed() {
                    panic!("probe: {why}, while waiting for {:?}", short(line));
                }
            }
            assert!(
                Instant::now() < deadline,
                "probe: the receiver{} did not hear {:?} within {PROBE_PATIENCE:?}; the \
                 receiver heard {:?}",
                if both { " and the sender" } else { "" },
                short(line),
                self.heard().iter().map(|l| short(l)).collect::<Vec<_>>()
            );
            thread::sleep(Duration::from_millis(5));
        }
    }

    /// The non-probe lines the receiver heard so far, in order.
    pub fn heard(&self) -> Vec<String> {
        let log = self.log.lock().unwrap();
        log.rx
            .iter()
            .filter_map(|(_, h)| match h {
                Heard::Other(l) | Heard::Error(l) => Some(l.clone()),
                _ => None,
            })
            .collect()
    }

    /// Stops the sender, waits for the end marker, and asserts that the
    /// receiver heard every message in order and neither connection got an
    /// error or was lost. Prints the largest latency.
    #[track_caller]
    pub fn finish(mut self) -> ProbeReport {
        self.stop.store(true, std::sync::atomic::Ordering::SeqCst);
        let writer = self.sender.take().unwrap().join();
        let rx_done = self.wait_reader_done();
        self.abort.store(true, std::sync::atomic::Ordering::SeqCst);
        if !rx_done {
            self.unblock();
        }
        let rx_reader = self.rx_reader.take().unwrap().join();
        let tx_reader = self.tx_reader.take().unwrap().join();
        let log = self.log.lock().unwrap();
        let (sent, max_latency, rx_heard, tx_heard) = match probe_check(&log, false, !rx_done) {
            Ok(summary) => summary,
            Err(why) => panic!("{}", self.failure(&log, &why)),
        };
        println!(
            "probe {}->{}: {sent} messages in order, max latency {max_latency:?}",
            self.tx_name, self.rx_name
        );
        let client = |reader: BufReader<TcpStream>, writer: TcpStream, label: &str| {
            reader
                .get_ref()
                .set_read_timeout(Some(READ_TIMEOUT))
                .unwrap();
            Client {
                reader,
                writer,
                label: label.to_string(),
                skip_history: true,
            }
        };
        let rx = client(
            rx_reader.expect("probe receiver thread panicked"),
            self.rx_writer.take().unwrap(),
            &self.rx_name,
        );
        let tx = client(
            tx_reader.expect("probe sender's reader thread panicked"),
            writer.expect("probe sender thread panicked"),
            &self.tx_name,
        );
        ProbeReport {
            sent,
            max_latency,
            rx_heard,
            tx_heard,
            rx: Some(rx),
            tx: Some(tx),
        }
    }

    /// For a server that is shutting down: both connections must end with
    /// `* server shutting down` as their last line, then close; the receiver
    /// must have heard an unbroken run `probe 0..k` (what was sent after the
    /// server stopped reading is lost), at least `at_least` of them, and no
    /// error line.
    #[track_caller]
    pub fn finish_at_shutdown(mut self, at_least: usize) -> ProbeReport {
        // The readers stop the sender when they hear the shutdown line.
        let deadline = Instant::now() + PROBE_PATIENCE;
        let mut closed = false;
        while Instant::now() < deadline {
            if self.rx_reader.as_ref().unwrap().is_finished()
                && self.tx_reader.as_ref().unwrap().is_finished()
            {
                closed = true;
                break;
            }
            thread::sleep(Duration::from_millis(10));
        }
        self.stop.store(true, std::sync::atomic::Ordering::SeqCst);
        self.abort.store(true, std::sync::atomic::Ordering::SeqCst);
        if !closed {
            self.unblock();
        }
        let _ = self.sender.take().unwrap().join();
        let _ = self.rx_reader.take().unwrap().join();
        let _ = self.tx_reader.take().unwrap().join();
        let log = self.log.lock().unwrap();
        let (received, max_latency, rx_heard, tx_heard) = match probe_check(&log, true, !closed) {
            Ok(summary) => summary,
            Err(why) => panic!("{}", self.failure(&log, &why)),
        };
        if received < at_least {
            panic!(
                "{}",
                self.failure(
                    &log,
                    &format!(
                        "the receiver heard only {received} messages, expected at least {at_least}"
                    )
                )
            );
        }
        println!(
            "probe {}->{}: {received} of {} messages in order before the shutdown, \
             max latency {max_latency:?}",
            self.tx_name,
            self.rx_name,
            log.sent.len()
        );
        ProbeReport {
            sent: received,
            max_latency,
            rx_heard,
            tx_heard,
            rx: None,
            tx: None,
        }
    }

    /// Waits for the receiver thread to end (end marker, or connection lost).
    fn wait_reader_done(&self) -> bool {
        let deadline = Instant::now() + PROBE_PATIENCE;
        while Instant::now() < deadline {
            if self.rx_reader.as_ref().unwrap().is_finished() {
                return true;
            }
            thread::sleep(Duration::from_millis(10));
        }
        false
    }

    fn unblock(&self) {
        for s in &self.sockets {
            let _ = s.shutdown(Shutdown::Both);
        }
    }

    fn failure(&self, log: &ProbeLog, why: &str) -> String {
        let tail: Vec<String> = log
            .rx
            .iter()
            .rev()
            .take(12)
            .rev()
            .map(|(_, h)| format!("{h:?}"))
            .collect();
        format!(
            "probe {}->{} FAILED: {why}\n  {} sent; the receiver's last events: {}",
            self.tx_name,
            self.rx_name,
            log.sent.len(),
            tail.join(", ")
        )
    }
}

impl Drop for Probe {
    fn drop(&mut self) {
        // Not finished (the test failed first): stop the threads.
        if self.sender.is_some() {
            self.stop.store(true, std::sync::atomic::Ordering::SeqCst);
            self.abort.store(true, std::sync::atomic::Ordering::SeqCst);
            self.unblock();
        }
    }
}

/// At most 80 characters of `line`, for messages.
fn short(line: &str) -> String {
    match line.char_indices().nth(80) {
        Some((i, _)) => format!("{}...", &line[..i]),
        None => line.to_string(),
    }
}

/// Checks a probe's log; returns (messages received, max latency, other lines
/// the receiver heard, lines the sender heard) or everything that went wrong.
fn probe_check(
    log: &ProbeLog,
    shutdown: bool,
    gave_up: bool,
) -> Result<(usize, Duration, Vec<String>, Vec<String>), String> {
    let mut problems = Vec::new();
    if !shutdown && let Some(e) = &log.send_error {
        problems.push(format!("disconnected: the sender's write failed: {e}"));
    }
    let mut rx_heard = Vec::new();
    let mut tx_heard = Vec::new();
    let mut seq = Vec::new();
    let mut max_latency = Duration::ZERO;
    let mut ended = false;
    let mut last_line: Option<String> = None;
    for (at, heard) in &log.rx {
        match heard {
            Heard::Probe(i) => {
                seq.push(*i);
                if let Some(sent) = log.sent.get(*i) {
                    max_latency = max_latency.max(at.saturating_duration_since(*sent));
                }
                last_line = None;
            }
            Heard::End => ended = true,
            Heard::Error(line) => problems.push(format!(
                "error line on the receiver: {line:?} (after {} probe messages)",
                seq.len()
            )),
            Heard::Other(line) => {
                rx_heard.push(line.clone());
                last_line = Some(line.clone());
            }
            Heard::Closed(why) => {
                ended = true;
                if !shutdown {
                    problems.push(format!(
                        "disconnected: the receiver's connection ended ({why}) after {} probe \
                         messages",
                        seq.len()
                    ));
                } else if last_line.as_deref() != Some(SHUTTING_DOWN) {
                    problems.push(format!(
                        "the receiver's connection ended ({why}) after {last_line:?}, not \
                         after {SHUTTING_DOWN:?}"
                    ));
                }
            }
        }
    }
    let mut tx_last: Option<String> = None;
    let mut tx_closed = false;
    for (_, heard) in &log.tx {
        match heard {
            Heard::Error(line) => problems.push(format!("error line on the sender: {line:?}")),
            Heard::Closed(why) => {
                tx_closed = true;
                if !shutdown {
                    problems.push(format!(
                        "disconnected: the sender's connection ended ({why})"
                    ));
                } else if tx_last.as_deref() != Some(SHUTTING_DOWN) {
                    problems.push(format!(
                        "the sender's connection ended ({why}) after {tx_last:?}, not after \
                         {SHUTTING_DOWN:?}"
                    ));
                }
            }
            Heard::Other(line) => {
                tx_heard.push(line.clone());
                tx_last = Some(line.clone());
            }
            Heard::Probe(_) | Heard::End => {
                problems.push(format!("the sender heard its own message back: {heard:?}"));
            }
        }
    }
    if shutdown && !tx_closed {
        problems.push(format!(
            "the sender's connection did not close after the shutdown (last line {tx_last:?})"
        ));
    }
    if !ended || gave_up {
        problems.push(format!(
            "the receiver never got the end of the run within {PROBE_PATIENCE:?} (last probe \
             message heard: {:?})",
            seq.last()
        ));
    }
    problems.extend(sequence_problems(&seq, shutdown, log.sent.len()));
    if problems.is_empty() {
        Ok((seq.len(), max_latency, rx_heard, tx_heard))
    } else {
        Err(problems.join("; "))
    }
}

/// What is wrong with the run of probe numbers the receiver heard: it must
/// be exactly `0..sent` (for a shutdown, `0..k` for some k <= sent).
pub fn sequence_problems(seq: &[usize], shutdown: bool, sent: usize) -> Vec<String> {
    let mut problems = Vec::new();
    let heard_max = seq.iter().max().map_or(0, |m| m + 1);
    let want = if shutdown { heard_max } else { sent };
    let mut count = vec![0usize; want.max(heard_max)];
    for &i in seq {
        count[i] += 1;
    }
    let missing: Vec<usize> = (0..want).filter(|&i| count[i] == 0).collect();
    if !missing.is_empty() {
        problems.push(format!(
            "missing: {} of {want} probe messages never arrived, first {:?}",
            missing.len(),
            &missing[..missing.len().min(10)]
        ));
    }
    let twice: Vec<usize> = (0..count.len()).filter(|&i| count[i] > 1).collect();
    if !twice.is_empty() {
        problems.push(format!(
            "duplicated: {} probe messages arrived more than once, first {:?}",
            twice.len(),
            &twice[..twice.len().min(10)]
        ));
    }
    if let Some(k) = (1..seq.len()).find(|&k| seq[k] < seq[k - 1] && count[seq[k]] == 1) {
        problems.push(format!(
            "reordered: probe {} arrived after probe {}",
            seq[k],
            seq[k - 1]
        ));
    }
    if heard_max > sent {
        problems.push(format!(
            "extra: probe {} heard, only {sent} sent",
            heard_max - 1
        ));
    }
    problems
}

/// The sender thread: a numbered message every `PROBE_PACE` until told to
/// stop, then the end marker. Returns the socket.
fn probe_send(
    mut writer: TcpStream,
    log: &Mutex<ProbeLog>,
    stop: &std::sync::atomic::AtomicBool,
) -> TcpStream {
    let mut i = 0usize;
    while !stop.load(std::sync::atomic::Ordering::SeqCst) {
        log.lock().unwrap().sent.push(Instant::now());
        if let Err(e) = writer.write_all(format!("probe {i}\n").as_bytes()) {
            log.lock().unwrap().send_error = Some(format!("probe {i}: {e}"));
            return writer;
        }
        i += 1;
        thread::sleep(PROBE_PACE);
    }
    if let Err(e) = writer.write_all(b"probe end\n") {
        log.lock().unwrap().send_error = Some(format!("end marker: {e}"));
    }
    writer
}

/// A reader thread: records every line until the end marker (receiver),
/// the connection ends, or `abort`. Hearing the shutdown line stops the
/// sender. Returns the reader, with whatever it buffered past the marker.
fn probe_listen(
    mut reader: BufReader<TcpStream>,
    prefix: &str,
    is_rx: bool,
    log: &Mutex<ProbeLog>,
    stop: &std::sync::atomic::AtomicBool,
    abort: &std::sync::atomic::AtomicBool,
) -> BufReader<TcpStream> {
    use std::sync::atomic::Ordering::SeqCst;
    reader.get_ref().set_read_timeout(Some(PROBE_TICK)).unwrap();
    let record = |heard: Heard| {
        let mut log = log.lock().unwrap();
        let side = if is_rx { &mut log.rx } else { &mut log.tx };
        side.push((Instant::now(), heard));
    };
    // Kept across timeouts: `read_until` leaves a partial line in it.
    let mut buf = Vec::new();
    loop {
        if abort.load(SeqCst) {
            return reader;
        }
        match reader.read_until(b'\n', &mut buf) {
            Ok(0) => {
                record(Heard::Closed("EOF".to_string()));
                return reader;
            }
            Ok(_) if buf.last() != Some(&b'\n') => {
                let partial = String::from_utf8_lossy(&buf).into_owned();
                record(Heard::Closed(format!(
                    "EOF after the unterminated line {partial:?}"
                )));
                return reader;
            }
            Ok(_) => {
                buf.pop();
                let line = String::from_utf8_lossy(&buf).into_owned();
                buf.clear();
                // Catch-up at login is not the probe's traffic.
                if line.starts_with('~') {
                    continue;
                }
                let heard = match line.strip_prefix(prefix) {
                    Some("end") => Heard::End,
                    Some(n) if n.parse::<usize>().is_ok() => Heard::Probe(n.parse().unwrap()),
                    _ if line.starts_with("! ") => Heard::Error(line),
                    _ => {
                        if line == SHUTTING_DOWN {
                            stop.store(true, SeqCst);
                        }
                        Heard::Other(line)
                    }
                };
                let end = matches!(heard, Heard::End) && is_rx;
                record(heard);
                if end {
                    return reader;
                }
            }
            Err(e) if is_timeout(&e) || e.kind() == ErrorKind::Interrupted => {}
            Err(e) => {
                record(Heard::Closed(format!("error: {e}")));
                return reader;
            }
        }
    }
}

impl Client {
    /// The next line that is not the probe's chatter.
    #[track_caller]
    pub fn line_past(&mut self, probe: &Probe) -> String {
        loop {
            let line = self.line();
            if !probe.is_probe_line(&line) {
                return line;
            }
        }
    }

    /// The next line that is not the probe's chatter must be `want`.
    #[track_caller]
    pub fn expect_past(&mut self, probe: &Probe, want: &str) {
        let got = self.line_past(probe);
        assert_eq!(got, want, "{}: unexpected line", self.label);
    }

    /// While Chatting with a probe running: `/quit`, `* bye` (probe lines
    /// sent before it may come first), then the close.
    #[track_caller]
    pub fn quit_past(&mut self, probe: &Probe) {
        self.send("/quit\n");
        self.expect_past(probe, "* bye");
        self.expect_closed();
    }

    /// Nothing but the probe's chatter may arrive within `d`.
    #[track_caller]
    pub fn quiet_past(&mut self, probe: &Probe, d: Duration) {
        for line in self.lines_for(d) {
            assert!(
                probe.is_probe_line(&line),
                "{}: expected silence for {d:?}, got {line:?}",
                self.label
            );
        }
    }
}

impl Server {
    /// CPU time (user + system, all threads) the server has used so far.
    pub fn cpu_time(&self) -> Duration {
        let stat = std::fs::read_to_string(format!("/proc/{}/stat", self.pid()))
            .expect("read /proc/PID/stat");
        // The command name may hold spaces: fields start after its `)`.
        let rest = &stat[stat.rfind(')').expect("`)` in /proc/PID/stat") + 2..];
        let fields: Vec<&str> = rest.split_whitespace().collect();
        // utime and stime are fields 14 and 15, so 11 and 12 from `state`.
        let ticks: u64 = fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap();
        // SAFETY: sysconf only reads a configuration value.
        let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as u64;
        Duration::from_millis(ticks * 1000 / hz)
    }

    /// The numbers of the server's open file descriptors (it may have
    /// inherited some high ones from the test harness).
    pub fn fds(&self) -> Vec<usize> {
        let mut fds: Vec<usize> = std::fs::read_dir(format!("/proc/{}/fd", self.pid()))
            .map(|d| {
                d.filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
                    .collect()
            })
            .unwrap_or_default();
        fds.sort_unstable();
        fds
    }
}

impl Client {
    /// Every line that starts arriving within `d` (the connection must
    /// stay open). Waits for data without consuming it, so a line split
    /// across packets is never lost to a timeout.
    #[track_caller]
    pub fn lines_for(&mut self, d: Duration) -> Vec<String> {
        let deadline = Instant::now() + d;
        let mut lines = Vec::new();
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return lines;
            }
            match self.next_line_within(left, &lines) {
                Some(line) => lines.push(line),
                None => return lines,
            }
        }
    }
}

impl Client {
    /// Whether data (or EOF) arrives within `d`; consumes nothing.
    pub fn readable_within(&mut self, d: Duration) -> bool {
        !matches!(self.peek_within(d), Err(ref e) if is_timeout(e))
    }

    /// Reads lines until the peer closes (EOF or reset) and returns them.
    /// Panics if the connection is still open after `limit`.
    #[track_caller]
    pub fn lines_until_closed(&mut self, limit: Duration) -> Vec<String> {
        let deadline = Instant::now() + limit;
        let mut lines = Vec::new();
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            assert!(
                !left.is_zero(),
                "{}: still open after {limit:?}; lines {lines:?}",
                self.label
            );
            match self.peek_within(left) {
                Ok(0) => return lines,
                Ok(_) => lines.push(self.line()),
                Err(e) if is_reset(&e) => return lines,
                Err(e) if is_timeout(&e) || e.kind() == ErrorKind::Interrupted => {}
                Err(e) => panic!("{}: error {e}; lines so far {lines:?}", self.label),
            }
        }
    }

    /// A second handle on the socket, for a writer thread.
    pub fn writer_clone(&self) -> TcpStream {
        self.writer.try_clone().expect("clone stream")
    }
}

impl Probe {
    /// Sends `/who` from the receiver and returns the names of the
    /// `* online` line it gets back.
    #[track_caller]
    pub fn who(&self) -> Vec<String> {
        let count = |heard: &[String]| heard.iter().filter(|l| l.starts_with("* online (")).count();
        let before = count(&self.heard());
        let writer = self.rx_writer.as_ref().expect("probe still running");
        (&*writer)
            .write_all(b"/who\n")
            .unwrap_or_else(|e| panic!("probe: /who failed: {e}"));
        let deadline = Instant::now() + PROBE_PATIENCE;
        loop {
            let heard = self.heard();
            if count(&heard) > before {
                let line = heard
                    .iter()
                    .rev()
                    .find(|l| l.starts_with("* online ("))
                    .unwrap();
                return parse_online(line)
                    .unwrap_or_else(|| panic!("probe: bad online line {line:?}"));
            }
            assert!(
                Instant::now() < deadline,
                "probe: no answer to /who within {PROBE_PATIENCE:?}"
            );
            thread::sleep(Duration::from_millis(10));
        }
    }
}

/// What to answer the choice prompt with, and the line that says it
/// worked.
fn choice_and_answer(register: bool, name: &str) -> (&'static str, String) {
    if register {
        ("R", format!("* registered and logged in as {name}"))
    } else {
        ("L", format!("* logged in as {name}"))
    }
}

/// Like [`register`], but waits as long as it takes for the answer: at a
/// high `--bcrypt-cost` on a busy machine one hash may take seconds.
#[track_caller]
pub fn register_patiently(addr: SocketAddr, name: &str, password: &str) -> Client {
    let mut c = Client::connect(addr).with_label(name);
    c.expect_welcome();
    c.enter_patiently(true, name, password);
    c
}

impl Client {
    /// From the choice prompt: registers (or logs in as) `name`, waiting
    /// for the answer up to [`PROBE_PATIENCE`] instead of the usual timeout
    /// (a slow bcrypt on a busy machine), and consumes the online line.
    #[track_caller]
    pub fn enter_patiently(&mut self, register: bool, name: &str, password: &str) {
        let (choice, answer) = choice_and_answer(register, name);
        self.send(&format!("{choice}\n{name}\n{password}\n"));
        self.expect(USERNAME);
        self.expect(PASSWORD);
        let line = self.line_within(PROBE_PATIENCE);
        assert_eq!(line, answer, "{name}");
        let names = self.expect_online();
        assert!(names.iter().any(|n| n == name), "{name} not in {names:?}");
    }
}

/// The server's debug lines about the connection from `peer`: from its
/// `conn K: open from PEER` line up to its `conn K: closed` line (or the end
/// of the log), only lines about `conn K`. Needs `RUST_LOG` at debug for
/// `neochat`.
pub fn connection_log(log: &str, peer: SocketAddr) -> Vec<String> {
    let open = format!(": open from {peer}");
    let mut lines = log.lines();
    let key = lines
        .by_ref()
        .find_map(|l| {
            let at = l.find(&open)?;
            let before = &l[..at];
            Some(before[before.rfind("conn ")? + 5..].to_string())
        })
        .unwrap_or_else(|| panic!("no connection from {peer} in the log:\n{log}"));
    let tag = format!("conn {key}:");
    let mut mine = Vec::new();
    for line in lines.filter(|l| l.contains(&tag)) {
        mine.push(line.to_string());
        if line.contains(&format!("{tag} closed")) {
            break;
        }
    }
    mine
}

/// A TCP connection from `127.0.0.<host>` (all of 127/8 is this machine;
/// the server sees distinct peer addresses), with the suite's timeouts.
#[track_caller]
pub fn tcp_from(server: SocketAddr, host: u8) -> TcpStream {
    let ip = std::net::IpAddr::V4(std::net::Ipv4Addr::new(127, 0, 0, host));
    crate::wire::tcp_connect(server, Some(ip))
        .unwrap_or_else(|e| panic!("connect {server} from {ip}: {e}"))
}

/// Connects from `127.0.0.<host>`.
#[track_caller]
pub fn connect_from(addr: SocketAddr, host: u8) -> Client {
    Client::from_stream(tcp_from(addr, host)).with_label(&format!("127.0.0.{host}"))
}

/// Sends `bytes` from `127.0.0.<host>` (a proxy's address, say) and returns
/// everything the server answers until it closes (or the read times out).
#[track_caller]
pub fn exchange_from(addr: SocketAddr, host: u8, bytes: &str) -> String {
    let mut s = tcp_from(addr, host);
    s.write_all(bytes.as_bytes()).expect("send");
    let mut got = Vec::new();
    let _ = s.read_to_end(&mut got);
    String::from_utf8_lossy(&got).into_owned()
}

/// Registers `n` users `burst0`, `burst1`, ... and waits until the probe
/// heard each join.
#[track_caller]
pub fn burst_senders(addr: SocketAddr, probe: &Probe, n: usize) -> Vec<Client> {
    (0..n)
        .map(|i| {
            let name = format!("burst{i}");
            let c = register(addr, &name, &pw(&name));
            probe.wait_heard(&format!("* {name} joined"));
            c
        })
        .collect()
}

/// Has every sender send one full flood-control burst (20 lines of 4,000
/// bytes) at the same instant: the server is stopped (SIGSTOP) while they
/// write, so all of it waits in its receive buffers for one loop turn.
/// Returns the line sent, and once the probe chatted on, its report with
/// how many burst lines it heard.
pub fn send_bursts_at_once(
    s: &Server,
    probe: Probe,
    senders: &mut [Client],
) -> (ProbeReport, usize) {
    probe.wait_progress(2);
    let line = "b".repeat(4000);
    let burst: String = (0..20).map(|_| format!("{line}\n")).collect();
    s.signal(libc::SIGSTOP);
    for c in senders.iter_mut() {
        let _ = c.try_send_bytes(burst.as_bytes());
    }
    s.signal(libc::SIGCONT);
    probe.wait_progress(3);
    // The probe's own lines can get ahead of the burst (it may still be
    // paced out when they arrive), and the report ends at the probe's end
    // marker: wait for the burst, as long as the probe is patient.
    let is_burst = |l: &String| l.starts_with("burst") && l.ends_with(&line);
    let deadline = Instant::now() + PROBE_PATIENCE;
    while probe.heard().iter().filter(|l| is_burst(l)).count() < senders.len() * 20
        && Instant::now() < deadline
    {
        thread::sleep(Duration::from_millis(20));
    }
    let report = probe.finish();
    let heard = report
        .rx_heard
        .iter()
        .filter(|l| l.starts_with("burst") && l.ends_with(&line))
        .count();
    (report, heard)
}

// ---------------------------------------------------------------- history

/// The line of a history line `~<time> <line>`, checking the time's form
/// (`2026-12-01T10:38:05Z`, UTC).
#[track_caller]
pub fn history_line(line: &str) -> &str {
    let rest = line
        .strip_prefix('~')
        .unwrap_or_else(|| panic!("not a history line: {line:?}"));
    let (time, line) = rest
        .split_once(' ')
        .unwrap_or_else(|| panic!("no space after the time: {line:?}"));
    let b = time.as_bytes();
    assert!(
        b.len() == 20
            && b[4] == b'-'
            && b[7] == b'-'
            && b[10] == b'T'
            && b[13] == b':'
            && b[16] == b':'
            && b[19] == b'Z'
            && time
                .chars()
                .enumerate()
                .all(|(i, c)| [4, 7, 10, 13, 16, 19].contains(&i) || c.is_ascii_digit()),
        "bad history time {time:?} in {line:?}"
    );
    line
}

/// Logs `name` (password [`pw`]) in, or registers it, on a client that
/// sees history; returns it with every line after the login's answer (the
/// online line first) until none comes for `gap`.
#[track_caller]
pub fn enter_seeing(
    addr: SocketAddr,
    name: &str,
    register: bool,
    gap: Duration,
) -> (Client, Vec<String>) {
    let mut c = Client::connect(addr).with_label(name).with_history();
    c.expect_welcome();
    let (choice, answer) = choice_and_answer(register, name);
    c.send(&format!("{choice}\n{name}\n{}\n", pw(name)));
    c.expect(USERNAME);
    c.expect(PASSWORD);
    c.expect(&answer);
    let lines = c.lines_until_quiet(gap);
    (c, lines)
}

/// Lines as a test compares them: a history line becomes `~ <line>` (its
/// time checked and dropped), any other line stays as it is.
#[track_caller]
pub fn shown(lines: &[String]) -> Vec<String> {
    lines
        .iter()
        .map(|l| {
            if l.starts_with('~') {
                format!("~ {}", history_line(l))
            } else {
                l.clone()
            }
        })
        .collect()
}

/// `/history ...` on a client that sees history: the lines up to
/// `* end of history`, in [`shown`] form.
#[track_caller]
pub fn history(c: &mut Client, args: &str) -> Vec<String> {
    c.send(&format!("/history{args}\n"));
    let mut lines = Vec::new();
    loop {
        let line = c.line();
        if line == "* end of history" {
            return shown(&lines);
        }
        lines.push(line);
    }
}
