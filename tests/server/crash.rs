//! Crash safety: a SIGKILL in the middle of a storm of registrations, a
//! database locked by somebody else, a database the server cannot write.
//! What users are told meanwhile, and what is on disk afterwards (read back
//! with rusqlite).

use std::collections::HashSet;
use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpStream};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use rusqlite::{Connection, OpenFlags};

use crate::util::*;

const UNAVAILABLE: &str = "! service temporarily unavailable, try again";

// ---------------------------------------------------------------- SIGKILL

/// Registering clients hammering one server until one of them kills it.
struct Storm {
    /// Names whose `* registered and logged in as NAME` arrived.
    acked: Arc<Mutex<Vec<String>>>,
    /// Clients that sent a password and wait for the answer.
    in_flight: Arc<AtomicUsize>,
    /// Set just before the SIGKILL: failures after it are expected.
    killed: Arc<AtomicBool>,
    /// `in_flight` at the kill.
    in_flight_at_kill: Arc<AtomicUsize>,
    /// Failures before the kill (there should be none).
    errors: Arc<Mutex<Vec<String>>>,
    threads: Vec<JoinHandle<()>>,
}

impl Storm {
    /// `clients` threads register accounts in a loop, each on a fresh
    /// connection. The one that receives acknowledgement number `kill_at`
    /// waits `delay` and SIGKILLs the server: with no delay the kill lands
    /// while the worker that answered has just sent its result, the moment
    /// an acknowledgement sent before its commit would be lost.
    fn start(
        server: &Server,
        round: usize,
        clients: usize,
        kill_at: usize,
        delay: Duration,
    ) -> Storm {
        let (addr, pid) = (server.addr, server.pid());
        let storm = Storm {
            acked: Arc::default(),
            in_flight: Arc::default(),
            killed: Arc::default(),
            in_flight_at_kill: Arc::default(),
            errors: Arc::default(),
            threads: Vec::new(),
        };
        let threads = (0..clients)
            .map(|t| {
                let acked = storm.acked.clone();
                let in_flight = storm.in_flight.clone();
                let killed = storm.killed.clone();
                let in_flight_at_kill = storm.in_flight_at_kill.clone();
                let errors = storm.errors.clone();
                thread::spawn(move || {
                    for i in 0.. {
                        if killed.load(Ordering::SeqCst) {
                            return;
                        }
                        let name = format!("r{round}t{t}n{i}");
                        if let Err(e) = register_once(addr, &name, &in_flight) {
                            if !killed.load(Ordering::SeqCst) {
                                errors.lock().unwrap().push(format!("{name}: {e}"));
                            }
                            return;
                        }
                        let count = {
                            let mut acked = acked.lock().unwrap();
                            acked.push(name);
                            acked.len()
                        };
                        if count == kill_at {
                            thread::sleep(delay);
                            in_flight_at_kill
                                .store(in_flight.load(Ordering::SeqCst), Ordering::SeqCst);
                            killed.store(true, Ordering::SeqCst);
                            // SAFETY: a plain syscall on the server's pid,
                            // which the test has not reaped yet.
                            let rc = unsafe { libc::kill(pid, libc::SIGKILL) };
                            assert_eq!(rc, 0, "kill({pid}, SIGKILL)");
                            return;
                        }
                    }
                })
            })
            .collect();
        Storm { threads, ..storm }
    }

    /// Waits for the kill (doing it here if no client did within 10 s),
    /// reaps the server and the clients; returns the acknowledged names and
    /// how many registrations were in flight at the kill.
    fn finish(self, server: &mut Server) -> (Vec<String>, usize) {
        let deadline = Instant::now() + Duration::from_secs(10);
        while !self.killed.load(Ordering::SeqCst) && Instant::now() < deadline {
            thread::sleep(Duration::from_millis(1));
        }
        if !self.killed.load(Ordering::SeqCst) {
            self.in_flight_at_kill
                .store(self.in_flight.load(Ordering::SeqCst), Ordering::SeqCst);
            self.killed.store(true, Ordering::SeqCst);
        }
        server.kill();
        for t in self.threads {
            t.join().expect("storm client thread");
        }
        let errors = self.errors.lock().unwrap();
        assert!(errors.is_empty(), "failures before the kill: {errors:?}");
        let acked = self.acked.lock().unwrap().clone();
        (acked, self.in_flight_at_kill.load(Ordering::SeqCst))
    }
}

/// One registration on a fresh connection, all three answers in one write;
/// `Ok` once the server acknowledged it. Errors (the server died) are
/// values, not panics.
fn register_once(addr: SocketAddr, name: &str, in_flight: &AtomicUsize) -> Result<(), String> {
    let stream = TcpStream::connect(addr).map_err(|e| format!("connect: {e}"))?;
    stream
        .set_read_timeout(Some(READ_TIMEOUT))
        .map_err(|e| e.to_string())?;
    let mut writer = stream.try_clone().map_err(|e| e.to_string())?;
    let mut reader = BufReader::new(stream);
    let mut expect = |want: &dyn Fn(&str) -> bool| -> Result<(), String> {
        let mut line = String::new();
        match reader.read_line(&mut line) {
            Ok(0) => Err("EOF".to_string()),
            Ok(_) if want(line.trim_end_matches('\n')) => Ok(()),
            Ok(_) => Err(format!("unexpected line {line:?}")),
            Err(e) => Err(format!("read: {e}")),
        }
    };
    expect(&|l| parse_welcome(l).is_some())?;
    expect(&|l| l == CHOICE)?;
    writer
        .write_all(format!("R\n{name}\n{}\n", pw(name)).as_bytes())
        .map_err(|e| format!("write: {e}"))?;
    in_flight.fetch_add(1, Ordering::SeqCst);
    let acked = format!("* registered and logged in as {name}");
    let answer = expect(&|l| l == USERNAME)
        .and_then(|()| expect(&|l| l == PASSWORD))
        .and_then(|()| expect(&|l| l == acked));
    in_flight.fetch_sub(1, Ordering::SeqCst);
    answer
}

/// Every acknowledged name is in the database, and the database is sound.
#[track_caller]
fn check_database(db: &Path, acked: &[String]) -> usize {
    let conn = Connection::open(db).expect("open the database after the kill");
    let check: String = conn
        .query_row("PRAGMA quick_check", [], |r| r.get(0))
        .expect("quick_check");
    assert_eq!(check, "ok", "PRAGMA quick_check");
    let mut stmt = conn.prepare("SELECT name FROM users").unwrap();
    let stored: HashSet<String> = stmt
        .query_map([], |r| r.get(0))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    let lost: Vec<&String> = acked.iter().filter(|n| !stored.contains(*n)).collect();
    assert!(
        lost.is_empty(),
        "{} of {} acknowledged accounts are not in the database: {lost:?}",
        lost.len(),
        acked.len()
    );
    stored.len()
}

/// "Accounts acknowledged with `* registered ...` are on disk before that
/// line was sent": SIGKILL the server while a dozen clients register as fast
/// as they can, several times over on one database; no acknowledged account
/// may be missing, the database must pass `quick_check`, and a restarted
/// server must log the accounts in.
#[test]
fn sigkill_during_a_registration_storm_loses_no_acknowledged_account() {
    // Where each round's kill lands after the acknowledgement that triggers
    // it. Mostly at once: the worker that answered has just sent its result,
    // so had it answered before committing, its commit would be about to
    // reach the kernel (once the WAL write is done, SIGKILL loses nothing).
    // That window is a few microseconds, and a kill hits it about one time
    // in three here, so there are many rounds; each takes ~0.1 s. Then
    // later, at other points of the workers' hash-read-insert-commit cycle.
    const DELAYS_US: [u64; 19] = [
        0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 100, 1_000, 3_000,
    ];
    const CLIENTS: usize = 12;
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("chat.db");
    let mut server = Server::start_with_db(&db, &[]);
    let mut all_acked: Vec<String> = Vec::new();
    let mut in_flight_at_kills = 0;
    for (round, delay) in DELAYS_US.into_iter().enumerate() {
        let kill_at = 15 + round;
        let storm = Storm::start(
            &server,
            round,
            CLIENTS,
            kill_at,
            Duration::from_micros(delay),
        );
        let (acked, in_flight) = storm.finish(&mut server);
        assert!(
            !acked.is_empty(),
            "round {round}: no registration acknowledged in 10 s"
        );
        in_flight_at_kills += in_flight;
        all_acked.extend(acked.iter().cloned());

        let stored = check_database(&db, &all_acked);
        eprintln!(
            "round {round}: {} acknowledged, {in_flight} in flight at the kill, \
             {stored} accounts stored, {} acknowledged over all rounds",
            acked.len(),
            all_acked.len()
        );

        // A restarted server knows them: the first of all, the first and
        // the last of this round. It takes the next round's kill.
        server = Server::start_with_db(&db, &[]);
        let mut names = vec![&all_acked[0], &acked[0], &acked[acked.len() - 1]];
        names.dedup();
        for name in names {
            login(server.addr, name, &pw(name)).quit();
        }
        let mut again = Client::connect_welcomed(server.addr);
        let name = &acked[acked.len() / 2];
        again.send(&format!("R\n{}\nanother-password\n", name.to_uppercase()));
        again.expect(USERNAME);
        again.expect(PASSWORD);
        again.expect(TAKEN);
        again.expect(CHOICE);
    }
    // Kill while nothing was in flight would prove little.
    assert!(
        in_flight_at_kills > 0,
        "no registration was in flight at any of the kills"
    );
}

// ---------------------------------------------------------------- locked

/// Somebody else holds the database's write lock (an admin's open
/// transaction): a registration waits for the busy timeout and then gets
/// `! service temporarily unavailable, try again` and the choice prompt,
/// without storing anything; meanwhile chat and logins (reads, which WAL
/// lets through) go on. Once the lock is released, registering works.
#[test]
fn a_locked_database_refuses_registrations_and_nothing_else() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("chat.db");
    let s = Server::start_with_db(&db, &[]);
    let mut alice = register(s.addr, "alice", &pw("alice"));
    let mut bob = join(s.addr, "bob", &mut [&mut alice]);
    create_account(s.addr, "carol", &pw("carol"));
    alice.expect("* carol joined");
    alice.expect("* carol left");
    bob.expect("* carol joined");
    bob.expect("* carol left");

    // In WAL mode EXCLUSIVE takes the same write lock as IMMEDIATE and lets
    // readers on; in a rollback-journal database it would lock them out
    // too, so the login below shows that the server's database is in WAL.
    let locker = Connection::open(&db).unwrap();
    locker.busy_timeout(Duration::from_secs(5)).unwrap();
    locker.execute_batch("BEGIN EXCLUSIVE").unwrap();

    let mut dave = Client::connect_welcomed(s.addr).with_label("dave");
    dave.send(&format!("R\ndave\n{}\n", pw("dave")));
    dave.expect(USERNAME);
    dave.expect(PASSWORD);

    // While dave's registration waits for the lock: chat, and a login.
    alice.send("hello while locked\n");
    bob.expect("alice: hello while locked");
    let mut carol = login(s.addr, "carol", &pw("carol"));
    alice.expect("* carol joined");
    bob.expect("* carol joined");
    carol.send("me too\n");
    alice.expect("carol: me too");
    bob.expect("carol: me too");

    // The lock is still held: dave is turned away (after the busy timeout),
    // and asked again.
    let line = dave.line_within(Duration::from_secs(20));
    assert_eq!(line, UNAVAILABLE);
    dave.expect(CHOICE);
    // Logged before the answer was sent, but read from the server's stderr
    // by another thread: give it a moment.
    let deadline = Instant::now() + READ_TIMEOUT;
    while !s.output().contains("database is locked") && Instant::now() < deadline {
        thread::sleep(Duration::from_millis(10));
    }
    assert!(
        s.output().contains("database is locked"),
        "the refusal should be logged as a locked database"
    );
    bob.send("still here\n");
    alice.expect("bob: still here");
    carol.expect("bob: still here");
    let stored: i64 = locker
        .query_row("SELECT count(*) FROM users WHERE name = 'dave'", [], |r| {
            r.get(0)
        })
        .unwrap();
    assert_eq!(stored, 0, "a refused registration stored the account");

    locker.execute_batch("COMMIT").unwrap();
    dave.register_here("dave", &pw("dave"));
    for c in [&mut alice, &mut bob, &mut carol] {
        c.expect("* dave joined");
    }
    dave.send("made it\n");
    for c in [&mut alice, &mut bob, &mut carol] {
        c.expect("dave: made it");
    }
}

// ---------------------------------------------------------------- read-only

/// Root ignores file modes, so when the tests run as root the server runs
/// as nobody; otherwise the files are made read-only for ourselves.
fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() == 0 }
}

const NOBODY: u32 = 65534;

/// How the database is made read-only.
#[derive(Clone, Copy, Debug, PartialEq)]
enum ReadOnly {
    /// The database and its directory, after a clean shutdown (no -wal or
    /// -shm file left): SQLite can read such a WAL database only as an
    /// immutable snapshot.
    Everything,
    /// The database only: SQLite creates -wal and -shm files to read it.
    FileOnly,
    /// The database and its directory after a SIGKILL, with -wal and -shm
    /// files (read-only too) holding the last registrations.
    AfterCrash,
}

/// A database directory made read-only for the server; modes are restored
/// on drop so the temporary directory can be removed.
struct Locked {
    dir: tempfile::TempDir,
    db: PathBuf,
    /// The server binary, where the server's user can run it.
    bin: PathBuf,
    _bin_dir: Option<tempfile::TempDir>,
}

impl Locked {
    /// Makes `dir` (holding `db` and perhaps its -wal and -shm) read-only
    /// for the server that `command` will start.
    fn new(dir: tempfile::TempDir, db: PathBuf, how: ReadOnly) -> Locked {
        let dir_mode = match (how, is_root()) {
            (ReadOnly::FileOnly, true) => 0o777,
            (ReadOnly::FileOnly, false) => 0o700,
            (_, true) => 0o755,
            (_, false) => 0o555,
        };
        // Readable by everybody, writable by nobody: as root the server
        // runs as another user, who could not even read the database the
        // server made (owner-only).
        for entry in std::fs::read_dir(dir.path()).unwrap() {
            let path = entry.unwrap().path();
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o444)).unwrap();
        }
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(dir_mode)).unwrap();
        let (bin, bin_dir) = if is_root() && !others_can_run(Path::new(BIN)) {
            let bin_dir = tempfile::tempdir().unwrap();
            std::fs::set_permissions(bin_dir.path(), std::fs::Permissions::from_mode(0o755))
                .unwrap();
            let bin = bin_dir.path().join("neochat-server");
            std::fs::copy(BIN, &bin).unwrap();
            std::fs::set_permissions(&bin, std::fs::Permissions::from_mode(0o755)).unwrap();
            (bin, Some(bin_dir))
        } else {
            (PathBuf::from(BIN), None)
        };
        Locked {
            dir,
            db,
            bin,
            _bin_dir: bin_dir,
        }
    }

    /// The server on the read-only database, as a user that cannot write it.
    fn command(&self, extra: &[&str]) -> Command {
        let mut cmd = Command::new(&self.bin);
        // The certificate beside the database belongs to the user who made
        // it (and is readable by nobody else): these servers run without.
        let mut extra = extra.to_vec();
        extra.extend(["--tls", "off"]);
        cmd.args(server_args(&self.db, &extra));
        if is_root() {
            cmd.uid(NOBODY).gid(NOBODY);
        }
        cmd
    }

    /// The file names in the directory.
    fn files(&self) -> Vec<String> {
        let mut names: Vec<String> = std::fs::read_dir(self.dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        names
    }

    /// The account names stored. Its directory is made writable again first
    /// (for the -wal and -shm files a reader needs), and the database is
    /// opened read-only.
    fn stored(&self) -> Vec<String> {
        std::fs::set_permissions(self.dir.path(), std::fs::Permissions::from_mode(0o700)).unwrap();
        let conn = Connection::open_with_flags(&self.db, OpenFlags::SQLITE_OPEN_READ_ONLY)
            .expect("open read-only");
        let mut stmt = conn
            .prepare("SELECT name FROM users ORDER BY name")
            .unwrap();
        stmt.query_map([], |r| r.get(0))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap()
    }
}

impl Drop for Locked {
    fn drop(&mut self) {
        let _ = std::fs::set_permissions(self.dir.path(), std::fs::Permissions::from_mode(0o700));
    }
}

/// The binary and every directory above it can be entered and read by
/// other users.
fn others_can_run(bin: &Path) -> bool {
    let readable =
        |p: &Path, bits| std::fs::metadata(p).is_ok_and(|m| m.permissions().mode() & bits == bits);
    readable(bin, 0o005) && bin.ancestors().skip(1).all(|d| readable(d, 0o001))
}

/// A database with alice and bob, made read-only the way `how` says.
fn read_only_database(how: ReadOnly) -> Locked {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("chat.db");
    let mut s = Server::start_with_db(&db, &[]);
    create_account(s.addr, "alice", &pw("alice"));
    create_account(s.addr, "bob", &pw("bob"));
    if how == ReadOnly::AfterCrash {
        s.kill();
    } else {
        s.sigterm();
        s.wait_exit(Duration::from_secs(5))
            .expect("server exits after SIGTERM");
    }
    if how == ReadOnly::AfterCrash {
        // Nothing was checkpointed: the accounts are in the -wal file only,
        // so logging in shows that the server reads it.
        let main = std::fs::read(&db).unwrap();
        assert!(
            !main.windows(7).any(|w| w == b"$2b$04$"),
            "a hash reached the main database file"
        );
    }
    let locked = Locked::new(dir, db, how);
    let wal = locked.files().contains(&"chat.db-wal".to_string());
    assert_eq!(
        wal,
        how == ReadOnly::AfterCrash,
        "{how:?}: files {:?}",
        locked.files()
    );
    locked
}

/// A server on a database it cannot write starts (with a warning), logs
/// existing users in, answers a registration with `! service temporarily
/// unavailable, try again` and keeps running.
#[track_caller]
fn serves_logins_and_refuses_registrations(how: ReadOnly) {
    let locked = read_only_database(how);
    let s = Server::start_command(locked.command(&[]));
    assert!(
        s.output().contains("read-only"),
        "{how:?}: no warning that the database is read-only in {:?}",
        s.output()
    );
    let mut alice = login(s.addr, "alice", &pw("alice"));

    let mut carol = Client::connect_welcomed(s.addr).with_label("carol");
    carol.send(&format!("R\ncarol\n{}\n", pw("carol")));
    carol.expect(USERNAME);
    carol.expect(PASSWORD);
    carol.expect(UNAVAILABLE);
    carol.expect(CHOICE);
    // A taken name is still told apart, and carol may log in instead.
    carol.send("R\nBOB\nsome-password\n");
    carol.expect(USERNAME);
    carol.expect(PASSWORD);
    carol.expect(TAKEN);
    carol.expect(CHOICE);
    carol.login_here("bob", &pw("bob"), "bob");
    alice.expect("* bob joined");
    carol.send("hi from a read-only server\n");
    alice.expect("bob: hi from a read-only server");
    alice.quit();
    carol.expect("* alice left");
    drop(s);

    assert_eq!(locked.stored(), ["alice", "bob"], "{how:?}");
}

#[test]
fn a_read_only_database_and_directory_serve_logins() {
    serves_logins_and_refuses_registrations(ReadOnly::Everything);
}

#[test]
fn a_read_only_database_file_serves_logins() {
    serves_logins_and_refuses_registrations(ReadOnly::FileOnly);
}

#[test]
fn a_read_only_database_left_by_a_crash_serves_its_last_accounts() {
    serves_logins_and_refuses_registrations(ReadOnly::AfterCrash);
}

/// A read-only database from an older NeoChat (schema version 0) cannot be
/// migrated: the server says so and exits, instead of starting.
#[test]
fn a_read_only_database_that_needs_migrating_is_refused_clearly() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("chat.db");
    Connection::open(&db)
        .unwrap()
        .execute_batch("PRAGMA journal_mode=WAL; CREATE TABLE old_users (name TEXT)")
        .unwrap();
    let locked = Locked::new(dir, db, ReadOnly::Everything);
    let (status, output) = run_command(locked.command(&[]), Duration::from_secs(10));
    let status = status.unwrap_or_else(|| panic!("still running after 10 s: {output}"));
    assert!(!status.success(), "exit {status:?}, output {output:?}");
    assert!(!output.contains("listening on"), "started: {output:?}");
    assert!(
        output.contains("read-only") && output.contains("schema version 0"),
        "unclear refusal: {output:?}"
    );
}
