//! Tests of the bcrypt pool: registrations and logins end to end through
//! the store thread, re-hashing, cancellation, panics, the queue bound,
//! and worker 0 taking over checks stalled on idle-priority workers.

use super::*;
use crate::store::tests::{answers, names};
use crate::store::{StoreConfig, migrate};
use costs::Costs;
use std::path::{Path, PathBuf};
use std::sync::mpsc;

/// A registration with this password panics inside its write
/// transaction (test builds only).
pub(super) const PANIC_IN_TRANSACTION: &str = "panic-in-transaction";

/// A job with this password sleeps for `STALL` on any worker but the
/// first, before it starts (test builds only).
pub(super) const STALL_ON_IDLE_WORKER: &str = "stall-on-idle-worker";
pub(super) const STALL: Duration = Duration::from_secs(6);

/// How long a test waits for an answer it expects.
const ANSWER: Duration = Duration::from_secs(10);

/// A pool and the store it writes to.
struct Pool {
    auth: AuthPool,
    store: Store,
}

impl std::ops::Deref for Pool {
    type Target = AuthPool;
    fn deref(&self) -> &AuthPool {
        &self.auth
    }
}

impl Pool {
    /// The pool, then the store (whose connection is then the last). The
    /// store thread, which commits, closes and checkpoints, gets at least
    /// 5 s: on a loaded machine 50 ms is not always enough for that, and
    /// the tests time the pool, not the store.
    fn shutdown(self, timeout: Duration) {
        self.auth.shutdown(timeout);
        let store_timeout = timeout.max(Duration::from_secs(5));
        assert!(self.store.shutdown(store_timeout), "the store thread stops");
    }
}

fn pool(dir: &Path) -> (Pool, mpsc::Receiver<()>) {
    pool_of(dir, 2)
}

fn pool_of(dir: &Path, workers: usize) -> (Pool, mpsc::Receiver<()>) {
    pool_at(dir, workers, 4)
}

fn start(db: PathBuf, config: &AuthConfig, wake: Arc<dyn Fn() + Send + Sync>) -> Pool {
    let (store, _) = Store::start(StoreConfig::new(db), wake.clone()).expect("store starts");
    let auth = AuthPool::start(config, &store, wake).expect("pool starts");
    Pool { auth, store }
}

fn pool_at(dir: &Path, workers: usize, cost: u32) -> (Pool, mpsc::Receiver<()>) {
    let (tx, rx) = mpsc::channel();
    let tx = Mutex::new(tx);
    let wake = Arc::new(move || {
        let _ = tx.lock().map(|t| t.send(()));
    });
    let config = AuthConfig {
        bcrypt_cost: cost,
        workers,
        queue: 8,
    };
    (start(dir.join("accounts.db"), &config, wake), rx)
}

fn run(pool: &Pool, woke: &mpsc::Receiver<()>, key: usize, request: AuthRequest) -> AuthOutcome {
    let job = test_job(key, request);
    let conn = job.conn;
    assert!(pool.submit(job).is_ok());
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

/// Shutdown closes every connection itself, even one whose worker is
/// still hashing (or, at idle priority on a busy machine, not getting
/// the CPU): the last close checkpoints the WAL and removes `-wal`.
#[test]
fn shutdown_closes_the_store_while_a_worker_is_still_hashing() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("accounts.db");
    let config = AuthConfig {
        // Slow enough (well over a second unoptimised) to be mid-hash.
        bcrypt_cost: 11,
        workers: 1,
        queue: 8,
    };
    let pool = start(db.clone(), &config, Arc::new(|| {}));
    let wal = dir.path().join("accounts.db-wal");
    assert!(wal.exists(), "an open WAL database has a -wal file");
    assert!(
        pool.submit(test_job(1, register("carol", "password-1")))
            .is_ok()
    );
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while pool.shared.queued.load(Ordering::Relaxed) > 0 && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(1));
    }
    assert_eq!(
        pool.shared.queued.load(Ordering::Relaxed),
        0,
        "job not taken"
    );
    pool.shutdown(Duration::from_millis(50));
    assert!(!wal.exists(), "the -wal file outlived shutdown");
    let (conn, _) = open(&db).unwrap();
    // The worker hashes on, but nothing can be stored any more.
    assert_eq!(names(&conn), Vec::<String>::new());
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
    let (conn, access) = open(&dir.path().join("accounts.db")).unwrap();
    assert_eq!(access, Access::ReadWrite);
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

/// The stored hash of `name`.
fn stored_hash(db: &Path, name: &str) -> String {
    let (conn, _) = open(db).unwrap();
    conn.query_row("SELECT hash FROM users WHERE name = ?1", [name], |r| {
        r.get(0)
    })
    .unwrap()
}

/// After `--bcrypt-cost` changed, a successful login stores the
/// password again at the new cost (after answering: the test waits for
/// it); a failed one changes nothing. The new hash logs in.
#[test]
fn a_login_re_hashes_a_password_of_another_cost() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("accounts.db");
    let (pool, woke) = pool_at(dir.path(), 2, 4);
    for (key, name) in [(1, "alice"), (2, "bob")] {
        assert_eq!(
            run(&pool, &woke, key, register(name, "password-1")),
            AuthOutcome::Registered(name.into())
        );
    }
    pool.shutdown(Duration::from_secs(5));

    let (pool, woke) = pool_at(dir.path(), 2, 5);
    assert_eq!(
        run(&pool, &woke, 1, login("ALICE", "password-1")),
        AuthOutcome::LoggedIn("alice".into())
    );
    assert_eq!(
        run(&pool, &woke, 2, login("bob", "password-2")),
        AuthOutcome::WrongCredentials
    );
    let deadline = Instant::now() + ANSWER;
    while !stored_hash(&db, "alice").starts_with("$2b$05$") && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(10));
    }
    assert_eq!(hash_cost(&stored_hash(&db, "alice")), Some(5));
    assert_eq!(hash_cost(&stored_hash(&db, "bob")), Some(4));
    assert_eq!(
        run(&pool, &woke, 3, login("alice", "password-1")),
        AuthOutcome::LoggedIn("alice".into())
    );
    assert_eq!(
        run(&pool, &woke, 3, login("alice", "password-2")),
        AuthOutcome::WrongCredentials
    );
    pool.shutdown(Duration::from_secs(5));
}

#[test]
fn a_full_queue_gives_the_job_back() {
    let dir = tempfile::tempdir().unwrap();
    let config = AuthConfig {
        bcrypt_cost: 4,
        workers: 1,
        queue: 1,
    };
    let pool = start(dir.path().join("a.db"), &config, Arc::new(|| {}));
    let refused = (0..50).any(|i| pool.submit(test_job(i, login("x", "y"))).is_err());
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

/// The worker wraps each job in `catch_unwind`: a job that panics, even
/// inside its write transaction, answers Unavailable, rolls back, and the
/// one worker of the pool goes on to serve the next jobs.
#[test]
fn a_panicking_job_answers_unavailable_and_the_worker_goes_on() {
    let dir = tempfile::tempdir().unwrap();
    let (pool, woke) = pool_of(dir.path(), 1);
    assert_eq!(
        run(&pool, &woke, 1, register("bob", PANIC_IN_TRANSACTION)),
        AuthOutcome::Unavailable
    );
    // The same worker (there is only one): the insert was rolled back,
    // so the name is free, and the connection is out of the transaction.
    assert_eq!(
        run(&pool, &woke, 2, register("bob", "password-1")),
        AuthOutcome::Registered("bob".into())
    );
    assert_eq!(
        run(&pool, &woke, 3, login("bob", "password-1")),
        AuthOutcome::LoggedIn("bob".into())
    );
    assert_eq!(
        run(&pool, &woke, 1, register("bob", PANIC_IN_TRANSACTION)),
        AuthOutcome::NameTaken
    );
    // And it left no lock behind: another connection writes at once.
    let other = Connection::open(dir.path().join("accounts.db")).unwrap();
    other.busy_timeout(Duration::ZERO).unwrap();
    other
        .execute_batch("BEGIN IMMEDIATE; DELETE FROM users WHERE name = 'nobody'; COMMIT")
        .unwrap();
    let count: i64 = other
        .query_row("SELECT count(*) FROM users", [], |r| r.get(0))
        .unwrap();
    assert_eq!(count, 1);
    pool.shutdown(Duration::from_secs(5));
}

/// A fresh database with the current schema: its directory (delete it
/// last), its path, and a connection to look at it.
fn migrated() -> (tempfile::TempDir, PathBuf, Connection) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("accounts.db");
    let (conn, access) = open(&path).unwrap();
    migrate(&conn, access, &path).unwrap();
    (dir, path, conn)
}

/// What `workers` workers share, answering on `done`.
fn test_shared(
    jobs: channel::Receiver<Job>,
    done: Sender<Done>,
    workers: usize,
    takeover_after: Duration,
) -> Shared {
    Shared {
        jobs,
        queued: AtomicUsize::new(0),
        done,
        wake: Arc::new(|| {}),
        running: (0..workers).map(|_| Mutex::new(None)).collect(),
        takeover_after,
    }
}

fn test_job(key: usize, request: AuthRequest) -> Job {
    Job {
        conn: ConnId { key, serial: 1 },
        request,
        cancel: Arc::new(AtomicBool::new(false)),
    }
}

fn test_task(key: usize, request: AuthRequest) -> Task {
    Task {
        job: test_job(key, request),
        claimed: AtomicUsize::new(0),
    }
}

/// A store thread on the database at `path`, answering registrations
/// on `done`, and where workers send them.
fn writer(path: &Path, done: Sender<Done>) -> (Store, AccountWriter) {
    let (store, _) = Store::start(StoreConfig::new(path), Arc::new(|| {})).expect("store starts");
    let writer = store.accounts(AuthLink {
        done,
        wake: Arc::new(|| {}),
        costs: Costs::new(4),
        unknown_cost: Arc::new(AtomicU32::new(4)),
    });
    (store, writer)
}

/// A worker on the database at `path`, not started.
fn test_worker(path: &Path, index: usize, writer: AccountWriter) -> Worker {
    let (conn, _) = open(path).unwrap();
    Worker {
        index,
        store: Arc::new(Mutex::new(Some(conn))),
        read_only: false,
        cost: 4,
        dummy: Dummy::new(4).unwrap(),
        writer,
    }
}

/// A registration is claimed before it is stored. Here an idle worker
/// has stored one (the writer answered the user) and is then kept off
/// the CPU; worker 0, running the same task, finds the name taken and
/// must not answer that too.
#[test]
fn a_registration_is_claimed_before_it_is_stored() {
    let (_dir, path, conn) = migrated();
    let (done_tx, done_rx) = mpsc::channel();
    let (_store, write_tx) = writer(&path, done_tx.clone());
    let shared = test_shared(
        channel::unbounded().1,
        done_tx,
        2,
        Duration::from_millis(100),
    );
    let task = test_task(1, register("dave", "password-1"));
    let idle = test_worker(&path, 1, write_tx.clone());
    let steady = test_worker(&path, 0, write_tx);
    assert!(idle.handle(&task).is_none(), "the writer answers");
    assert_eq!(
        answers(&done_rx, 1, ANSWER),
        [(1, AuthOutcome::Registered("dave".into()))]
    );
    assert!(steady.work(&task, &shared));
    assert!(done_rx.try_recv().is_err(), "the task was answered twice");
    assert_eq!(names(&conn), ["dave"]);
}

/// Worker 0 takes over a check only from a worker kept off the CPU, not
/// from one that is slow because it shares the CPU (more workers than
/// free CPUs), which would only double the work.
#[test]
fn only_a_worker_starved_of_the_cpu_is_taken_over() {
    let (_dir, path, _) = migrated();
    let shared = test_shared(
        channel::unbounded().1,
        mpsc::channel().0,
        2,
        Duration::from_millis(150),
    );
    let (_store, write_tx) = writer(&path, mpsc::channel().0);
    let steady = test_worker(&path, 0, write_tx);
    // A thread that keeps busy (`spin`) or sleeps, for 600 ms, and
    // tells its CPU clock.
    let thread = |spin: bool| {
        let (tx, rx) = mpsc::channel();
        let handle = std::thread::spawn(move || {
            let clock = CpuClock::current().expect("a CPU clock");
            tx.send((clock, clock.read().expect("readable"))).unwrap();
            let end = Instant::now() + Duration::from_millis(600);
            while Instant::now() < end {
                if !spin {
                    std::thread::sleep(end - Instant::now());
                }
            }
        });
        (rx.recv().unwrap(), handle)
    };
    for (spin, expect_takeover) in [(true, false), (false, true)] {
        let (cpu, handle) = thread(spin);
        let task = Arc::new(test_task(1, login("x", "y")));
        *lock(&shared.running[1]) = Some(Running {
            since: Instant::now(),
            cpu: Some(cpu),
            task,
            taken_over: false,
        });
        assert!(steady.stalled(&shared).is_none(), "taken over at once");
        std::thread::sleep(Duration::from_millis(400));
        assert_eq!(
            steady.stalled(&shared).is_some(),
            expect_takeover,
            "spinning: {spin}"
        );
        handle.join().unwrap();
    }
}

/// A check stuck on an idle-priority worker (here made to sleep, as if
/// other processes kept it off the CPU) is taken over by worker 0 and
/// answered once; a registration is stored once.
#[test]
fn worker_0_takes_over_a_check_stalled_on_an_idle_worker() {
    let (_dir, path, conn) = migrated();
    let (job_tx, job_rx) = channel::unbounded();
    let (done_tx, done_rx) = mpsc::channel();
    let shared = Arc::new(test_shared(job_rx, done_tx, 3, Duration::from_millis(100)));
    let (_store, write_tx) = writer(&path, shared.done.clone());
    let worker = |index| {
        let worker = test_worker(&path, index, write_tx.clone());
        let shared = shared.clone();
        std::thread::spawn(move || worker.run(&shared))
    };
    let submit = |key, request| {
        shared.queued.fetch_add(1, Ordering::Relaxed);
        job_tx.send(test_job(key, request)).unwrap();
    };
    // Only idle workers run when the jobs arrive, so they take them.
    let idle = worker(1);
    let idle_too = worker(2);
    submit(1, register("carol", STALL_ON_IDLE_WORKER));
    submit(2, login("nobody", STALL_ON_IDLE_WORKER));
    let deadline = Instant::now() + Duration::from_secs(10);
    while shared.queued.load(Ordering::Relaxed) > 0 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(1));
    }
    assert_eq!(shared.queued.load(Ordering::Relaxed), 0, "jobs not taken");
    let steady = worker(0);
    // Worker 0 answers long before the stall ends.
    assert_eq!(
        answers(&done_rx, 2, STALL / 2),
        [
            (1, AuthOutcome::Registered("carol".into())),
            (2, AuthOutcome::WrongCredentials)
        ]
    );
    // The stalled workers finish their copies and answer nothing more.
    drop(job_tx);
    for handle in [idle, idle_too, steady] {
        handle.join().expect("workers exit when the queue closes");
    }
    assert!(done_rx.try_recv().is_err(), "a check was answered twice");
    assert_eq!(names(&conn), ["carol"]);
}
