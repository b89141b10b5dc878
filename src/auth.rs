//! Accounts: the worker pool that hashes, verifies and stores passwords.
//!
//! bcrypt takes hundreds of milliseconds at production cost and SQLite
//! writes wait for the disk, so neither may run on the event loop. This
//! module owns a bounded job queue, N worker threads each with its own
//! `rusqlite::Connection` (a connection is `Send` but not `Sync`), and a
//! result channel. A worker sends its result first and then wakes the
//! reactor through the one `mio::Waker`; wakes coalesce, so the reactor
//! drains every result on each wake.
//!
//! It knows nothing of sockets or of the protocol's text. Plaintext
//! passwords live only in jobs and are never stored or logged.

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::mpsc::{self, Receiver, Sender};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use rusqlite::{Connection, OptionalExtension, TransactionBehavior};

use crate::session::{AuthOutcome, AuthRequest, ConnId, MAX_PASSWORD};

/// The schema this build writes. Bump it, and add a step to `migrate`, when
/// the tables change.
pub const SCHEMA_VERSION: i64 = 1;

/// What went wrong opening the account store.
#[derive(Debug)]
pub struct Error {
    kind: ErrorKind,
    message: String,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ErrorKind {
    /// The database could not be opened, read or written.
    Database,
    /// The database was written by a newer NeoChat.
    SchemaTooNew,
    /// A worker thread could not be started.
    Thread,
}

impl Error {
    pub fn kind(&self) -> ErrorKind {
        self.kind
    }

    fn new(kind: ErrorKind, message: impl Into<String>) -> Error {
        Error {
            kind,
            message: message.into(),
        }
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for Error {}

impl From<rusqlite::Error> for Error {
    fn from(e: rusqlite::Error) -> Error {
        Error::new(ErrorKind::Database, e.to_string())
    }
}

/// One account operation for a connection.
pub struct Job {
    pub conn: ConnId,
    pub request: AuthRequest,
    /// Set by the reactor when the connection goes away: the worker then
    /// skips the job (before hashing, and before writing).
    pub cancel: Arc<AtomicBool>,
}

/// The outcome of a [`Job`], for the connection that asked.
#[derive(Debug)]
pub struct Done {
    pub conn: ConnId,
    pub outcome: AuthOutcome,
    /// A failed login named an account that exists. The reactor counts
    /// failures per account only for real accounts (guessing at a name
    /// nobody holds can win nothing); the user is never told which it was.
    pub known_account: bool,
}

/// Settings of the pool.
#[derive(Clone, Debug)]
pub struct AuthConfig {
    pub db: PathBuf,
    pub bcrypt_cost: u32,
    pub workers: usize,
    /// Jobs that may wait for a worker; past that, `submit` refuses.
    pub queue: usize,
}

/// The running worker pool. Dropping it closes the queue; workers finish the
/// job in hand and exit.
pub struct AuthPool {
    jobs: Option<Sender<Job>>,
    /// Jobs queued and not yet taken by a worker.
    queued: Arc<AtomicUsize>,
    limit: usize,
    results: Receiver<Done>,
    threads: Vec<JoinHandle<()>>,
}

impl AuthPool {
    /// Opens (creating or migrating) the database, then starts the workers.
    /// `wake` is called after each result is queued.
    pub fn start(
        config: &AuthConfig,
        wake: Arc<dyn Fn() + Send + Sync>,
    ) -> Result<AuthPool, Error> {
        let conn = open(&config.db)?;
        migrate(&conn)?;
        drop(conn);

        let dummy: Arc<str> = dummy_hash(config.bcrypt_cost)?.into();

        // Unbounded channel, bounded by `queued`: nothing is allocated for
        // jobs that never come.
        let (job_tx, job_rx) = mpsc::channel::<Job>();
        let job_rx = Arc::new(Mutex::new(job_rx));
        let queued = Arc::new(AtomicUsize::new(0));
        let (done_tx, done_rx) = mpsc::channel::<Done>();
        let mut threads = Vec::new();
        for i in 0..config.workers.max(1) {
            let conn = open(&config.db)?;
            let worker = Worker {
                index: i,
                conn,
                cost: config.bcrypt_cost,
                dummy: dummy.clone(),
            };
            let jobs = job_rx.clone();
            let done = done_tx.clone();
            let wake = wake.clone();
            let queued = queued.clone();
            let handle = std::thread::Builder::new()
                .name(format!("auth-{i}"))
                .spawn(move || worker.run(&jobs, &queued, &done, &*wake))
                .map_err(|e| Error::new(ErrorKind::Thread, e.to_string()))?;
            threads.push(handle);
        }
        Ok(AuthPool {
            jobs: Some(job_tx),
            queued,
            limit: config.queue.max(1),
            results: done_rx,
            threads,
        })
    }

    /// Queues a job, or gives it back when the queue is full.
    pub fn submit(&self, job: Job) -> Result<(), Job> {
        let Some(jobs) = &self.jobs else {
            return Err(job);
        };
        if self.queued.load(Ordering::Relaxed) >= self.limit {
            return Err(job);
        }
        self.queued.fetch_add(1, Ordering::Relaxed);
        jobs.send(job).map_err(|e| {
            self.queued.fetch_sub(1, Ordering::Relaxed);
            e.0
        })
    }

    /// The next finished job, if any.
    pub fn try_recv(&self) -> Option<Done> {
        self.results.try_recv().ok()
    }

    /// Closes the queue and waits up to `timeout` for the workers to finish
    /// their current job (a registration in progress commits or rolls back
    /// as a whole either way).
    pub fn shutdown(mut self, timeout: Duration) {
        self.jobs = None;
        let deadline = std::time::Instant::now() + timeout;
        for handle in self.threads.drain(..) {
            while !handle.is_finished() && std::time::Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(5));
            }
            if handle.is_finished() {
                let _ = handle.join();
            }
        }
    }
}

/// "Unknown user" is verified against this hash, so it costs what a wrong
/// password costs and the two cannot be told apart by timing. Hashing at the
/// real cost here would delay start-up (by days at cost 31); verification
/// cost depends only on the cost field, so hash cheaply and relabel it.
fn dummy_hash(cost: u32) -> Result<String, Error> {
    let cheap = bcrypt::hash("neochat dummy password", 4)
        .map_err(|e| Error::new(ErrorKind::Thread, format!("bcrypt: {e}")))?;
    // "$2b$04$" then 22 characters of salt and 31 of hash.
    let rest = cheap.get(7..).unwrap_or_default();
    Ok(format!("$2b${cost:02}${rest}"))
}

fn open(path: &Path) -> Result<Connection, Error> {
    let conn = Connection::open(path).map_err(|e| {
        Error::new(
            ErrorKind::Database,
            format!("cannot open database {}: {e}", path.display()),
        )
    })?;
    conn.busy_timeout(Duration::from_secs(5))?;
    let mode: String = conn.query_row("PRAGMA journal_mode=WAL", [], |r| r.get(0))?;
    if !mode.eq_ignore_ascii_case("wal") {
        log::warn!("database journal mode is {mode}, not wal");
    }
    // FULL: an acknowledged registration survives a power loss, not only a
    // crash. Builds differ in what they accept, so read it back.
    conn.execute_batch("PRAGMA synchronous=FULL")?;
    let sync: i64 = conn.query_row("PRAGMA synchronous", [], |r| r.get(0))?;
    if sync < 2 {
        return Err(Error::new(
            ErrorKind::Database,
            format!("database refused synchronous=FULL (got {sync})"),
        ));
    }
    Ok(conn)
}

/// Brings the schema to [`SCHEMA_VERSION`], in one immediate transaction.
fn migrate(conn: &Connection) -> Result<(), Error> {
    let version: i64 = conn.query_row("PRAGMA user_version", [], |r| r.get(0))?;
    if version > SCHEMA_VERSION {
        return Err(Error::new(
            ErrorKind::SchemaTooNew,
            format!(
                "database schema version {version} is newer than this server's ({SCHEMA_VERSION})"
            ),
        ));
    }
    if version == SCHEMA_VERSION {
        return Ok(());
    }
    conn.execute_batch(
        "BEGIN IMMEDIATE;
         CREATE TABLE IF NOT EXISTS users (
             id         INTEGER PRIMARY KEY,
             name       TEXT NOT NULL UNIQUE COLLATE NOCASE,
             hash       TEXT NOT NULL,
             created_at INTEGER NOT NULL
         );
         PRAGMA user_version = 1;
         COMMIT;",
    )?;
    Ok(())
}

/// Workers yield the processor to the event loop. bcrypt is pure CPU and a
/// login storm would otherwise take every core from the loop, whose chat
/// latency matters more than any login's. Measured here (2 CPUs, 200 logins
/// at cost 12, chat pair p99 during the storm over before it): all workers
/// at nice 10, 8-16x; all SCHED_IDLE, 1.4-3x.
///
/// But a SCHED_IDLE thread gets almost nothing while any other process
/// keeps the CPUs busy, and an unprivileged thread can never leave that
/// class again: on a box where a backup or a build runs, logins would stall
/// until they time out (seen here). So worker 0 runs at nice 10, which
/// always makes progress, and only the others are SCHED_IDLE, soaking up
/// what CPU is left. With one CPU, every worker is at nice 10.
fn lower_priority(index: usize) {
    #[cfg(target_os = "linux")]
    {
        let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
        // SAFETY: gettid has no preconditions; setpriority with PRIO_PROCESS
        // and a thread id, and sched_setscheduler with pid 0, change only the
        // calling thread; `param` outlives the call.
        let rc = unsafe {
            if index > 0 && cpus >= 2 {
                let param = libc::sched_param { sched_priority: 0 };
                libc::sched_setscheduler(0, libc::SCHED_IDLE, &param)
            } else {
                libc::setpriority(libc::PRIO_PROCESS, libc::gettid() as libc::id_t, 10)
            }
        };
        if rc != 0 {
            log::debug!(
                "cannot lower auth worker priority: {}",
                std::io::Error::last_os_error()
            );
        }
    }
    #[cfg(not(target_os = "linux"))]
    let _ = index;
}

struct Worker {
    /// 0 for the first worker (see `lower_priority`).
    index: usize,
    conn: Connection,
    cost: u32,
    dummy: Arc<str>,
}

impl Worker {
    fn run(
        mut self,
        jobs: &Mutex<Receiver<Job>>,
        queued: &AtomicUsize,
        done: &Sender<Done>,
        wake: &(dyn Fn() + Sync),
    ) {
        lower_priority(self.index);
        loop {
            // Idle workers take turns waiting on the queue; the lock is let
            // go as soon as a job arrives, never held while working. A
            // poisoned lock only means another worker panicked while holding
            // it; the receiver itself is still sound.
            let job = {
                let rx = jobs.lock().unwrap_or_else(|p| p.into_inner());
                rx.recv()
            };
            let Ok(job) = job else {
                return; // The pool was dropped.
            };
            queued.fetch_sub(1, Ordering::Relaxed);
            if job.cancel.load(Ordering::Relaxed) {
                continue; // The connection is gone; nobody waits for this.
            }
            let conn = job.conn;
            let (outcome, known_account) =
                std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                    self.handle(job.request, &job.cancel)
                }))
                .unwrap_or_else(|_| {
                    log::error!("auth worker panicked on a job for connection {}", conn.key);
                    (AuthOutcome::Unavailable, false)
                });
            let result = Done {
                conn,
                outcome,
                known_account,
            };
            if done.send(result).is_err() {
                return;
            }
            wake();
        }
    }

    /// The outcome, and whether a failed login named a real account.
    fn handle(&mut self, request: AuthRequest, cancel: &AtomicBool) -> (AuthOutcome, bool) {
        let result = match request {
            AuthRequest::Register { name, password } => self
                .register(&name, &password, cancel)
                .map(|outcome| (outcome, false)),
            AuthRequest::Login { name, password } => self.login(&name, &password),
        };
        result.unwrap_or_else(|e| {
            log::error!("account store error: {e}");
            (AuthOutcome::Unavailable, false)
        })
    }

    fn register(
        &mut self,
        name: &str,
        password: &str,
        cancel: &AtomicBool,
    ) -> Result<AuthOutcome, Error> {
        // The session checked the length; check again, since `bcrypt::hash`
        // would silently ignore everything past 72 bytes.
        if password.len() > MAX_PASSWORD {
            return Ok(AuthOutcome::Unavailable);
        }
        if self.find(name)?.is_some() {
            return Ok(AuthOutcome::NameTaken);
        }
        let hash = bcrypt::hash(password, self.cost)
            .map_err(|e| Error::new(ErrorKind::Database, format!("bcrypt: {e}")))?;
        // The user gave up (or timed out) while we hashed: store nothing,
        // or they would find the name taken without ever being told it is
        // theirs.
        if cancel.load(Ordering::Relaxed) {
            return Ok(AuthOutcome::Unavailable);
        }
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs() as i64);
        // IMMEDIATE takes the write lock up front, so a concurrent writer
        // makes us wait (busy_timeout) instead of failing with SQLITE_BUSY.
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)?;
        let inserted = tx.execute(
            "INSERT INTO users (name, hash, created_at) VALUES (?1, ?2, ?3)
             ON CONFLICT (name) DO NOTHING",
            (name, &hash, now),
        )?;
        tx.commit()?;
        // Another connection may have registered the name while we hashed.
        Ok(if inserted == 1 {
            AuthOutcome::Registered(name.to_owned())
        } else {
            AuthOutcome::NameTaken
        })
    }

    fn login(&mut self, name: &str, password: &str) -> Result<(AuthOutcome, bool), Error> {
        let account = self.find(name)?;
        let hash = account.as_ref().map_or(&*self.dummy, |(_, h)| h.as_str());
        // bcrypt would compare only the first 72 bytes of a longer password,
        // and no account has one: verify anyway, for equal timing, and fail.
        let matches = bcrypt::verify(password, hash).unwrap_or(false);
        Ok(match account {
            Some((shown, _)) if matches && password.len() <= MAX_PASSWORD => {
                (AuthOutcome::LoggedIn(shown), false)
            }
            Some(_) => (AuthOutcome::WrongCredentials, true),
            None => (AuthOutcome::WrongCredentials, false),
        })
    }

    /// The account's registered name and hash, matched without regard to case.
    fn find(&self, name: &str) -> Result<Option<(String, String)>, Error> {
        Ok(self
            .conn
            .query_row(
                "SELECT name, hash FROM users WHERE name = ?1",
                [name],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .optional()?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::mpsc;

    fn pool(dir: &Path) -> (AuthPool, mpsc::Receiver<()>) {
        let (tx, rx) = mpsc::channel();
        let tx = Mutex::new(tx);
        let wake = Arc::new(move || {
            let _ = tx.lock().map(|t| t.send(()));
        });
        let config = AuthConfig {
            db: dir.join("accounts.db"),
            bcrypt_cost: 4,
            workers: 2,
            queue: 8,
        };
        (AuthPool::start(&config, wake).expect("pool starts"), rx)
    }

    fn run(
        pool: &AuthPool,
        woke: &mpsc::Receiver<()>,
        key: usize,
        request: AuthRequest,
    ) -> AuthOutcome {
        let conn = ConnId { key, serial: 7 };
        let cancel = Arc::new(AtomicBool::new(false));
        assert!(
            pool.submit(Job {
                conn,
                request,
                cancel
            })
            .is_ok()
        );
        woke.recv_timeout(Duration::from_secs(10))
            .expect("worker wakes the loop");
        let done = pool.try_recv().expect("result queued before the wake");
        assert_eq!(done.conn, conn);
        done.outcome
    }

    fn register(name: &str, password: &str) -> AuthRequest {
        AuthRequest::Register {
            name: name.into(),
            password: password.into(),
        }
    }

    fn login(name: &str, password: &str) -> AuthRequest {
        AuthRequest::Login {
            name: name.into(),
            password: password.into(),
        }
    }

    #[test]
    fn dummy_hash_has_the_configured_cost_and_verifies() {
        let h = dummy_hash(12).unwrap();
        assert!(h.starts_with("$2b$12$") && h.len() == 60, "{h}");
        let cheap = dummy_hash(5).unwrap();
        assert_eq!(
            bcrypt::verify("neochat dummy password", &cheap).ok(),
            Some(false)
        );
    }

    #[test]
    fn register_login_and_case_insensitive_names() {
        let dir = tempfile::tempdir().unwrap();
        let (pool, woke) = pool(dir.path());
        let pw = "p".repeat(72);
        assert_eq!(
            run(&pool, &woke, 1, register("Alice", &pw)),
            AuthOutcome::Registered("Alice".into())
        );
        assert_eq!(
            run(&pool, &woke, 1, register("aLICE", "other-password")),
            AuthOutcome::NameTaken
        );
        assert_eq!(
            run(&pool, &woke, 2, login("ALICE", &pw)),
            AuthOutcome::LoggedIn("Alice".into())
        );
        let mut last_changed = pw.clone();
        last_changed.replace_range(71.., "q");
        assert_eq!(
            run(&pool, &woke, 2, login("alice", &last_changed)),
            AuthOutcome::WrongCredentials
        );
        // Longer than 72 bytes never matches, though bcrypt would say it does.
        let longer = format!("{pw}extra");
        assert_eq!(
            run(&pool, &woke, 2, login("alice", &longer)),
            AuthOutcome::WrongCredentials
        );
        assert_eq!(
            run(&pool, &woke, 3, login("nobody", &pw)),
            AuthOutcome::WrongCredentials
        );
        pool.shutdown(Duration::from_secs(5));

        // Stored as a hash, with the schema version set; survives reopening.
        let conn = open(&dir.path().join("accounts.db")).unwrap();
        let (name, hash): (String, String) = conn
            .query_row("SELECT name, hash FROM users", [], |r| {
                Ok((r.get(0)?, r.get(1)?))
            })
            .unwrap();
        assert_eq!(name, "Alice");
        assert!(hash.starts_with("$2b$04$") && !hash.contains(&pw));
        let version: i64 = conn
            .query_row("PRAGMA user_version", [], |r| r.get(0))
            .unwrap();
        assert_eq!(version, SCHEMA_VERSION);
        let (pool, woke) = self::pool(dir.path());
        assert_eq!(
            run(&pool, &woke, 4, login("alice", &pw)),
            AuthOutcome::LoggedIn("Alice".into())
        );
    }

    #[test]
    fn a_newer_schema_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("accounts.db");
        Connection::open(&path)
            .unwrap()
            .execute_batch("PRAGMA user_version = 99")
            .unwrap();
        let config = AuthConfig {
            db: path,
            bcrypt_cost: 4,
            workers: 1,
            queue: 1,
        };
        let err = AuthPool::start(&config, Arc::new(|| {}))
            .err()
            .expect("refused");
        assert_eq!(err.kind(), ErrorKind::SchemaTooNew);
    }

    #[test]
    fn a_full_queue_gives_the_job_back() {
        let dir = tempfile::tempdir().unwrap();
        let config = AuthConfig {
            db: dir.path().join("a.db"),
            bcrypt_cost: 4,
            workers: 1,
            queue: 1,
        };
        let pool = AuthPool::start(&config, Arc::new(|| {})).unwrap();
        let refused = (0..50).any(|i| {
            pool.submit(Job {
                conn: ConnId { key: i, serial: 0 },
                request: login("x", "y"),
                cancel: Arc::new(AtomicBool::new(false)),
            })
            .is_err()
        });
        assert!(refused);
    }

    #[test]
    fn a_cancelled_job_is_skipped_and_stores_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let (pool, woke) = pool(dir.path());
        let conn = ConnId { key: 9, serial: 1 };
        let cancel = Arc::new(AtomicBool::new(true));
        let request = register("ghost", "password-1");
        assert!(
            pool.submit(Job {
                conn,
                request,
                cancel
            })
            .is_ok()
        );
        // The next job's result comes first and alone: the cancelled one
        // produced none.
        let outcome = run(&pool, &woke, 3, login("ghost", "password-1"));
        assert_eq!(outcome, AuthOutcome::WrongCredentials);
        assert!(pool.try_recv().is_none());
    }
}
