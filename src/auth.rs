//! Accounts: the worker pool that hashes, verifies and stores passwords.
//!
//! bcrypt takes hundreds of milliseconds at production cost and SQLite
//! writes wait for the disk, so neither may run on the event loop. This
//! module owns a bounded job queue, N worker threads each with its own
//! `rusqlite::Connection` (a connection is `Send` but not `Sync`) for
//! reading, one writer thread that stores new accounts (and re-hashed
//! passwords), and a result channel.
//!
//! Workers run at reduced priority, so hashing never takes the CPU from the
//! event loop; all but the first at idle priority, which gets next to no
//! CPU while other processes keep the machine busy. So nothing may wait on
//! such a worker: workers take jobs from an MPMC channel without holding a
//! lock while they wait; a check stalled on an idle worker is run again by
//! worker 0 (the first to finish answers); and no worker holds SQLite's
//! write lock, where a starved one would stall every other registration
//! (and past `BUSY_TIMEOUT`, fail them). The writer runs at normal
//! priority, and commits whatever registrations are waiting in one
//! transaction (one fsync for all of them). A worker sends its result first and then wakes the
//! reactor through the one `mio::Waker`; wakes coalesce, so the reactor
//! drains every result on each wake.
//!
//! When `--bcrypt-cost` has changed since an account was made, its next
//! successful login hashes the password again at the current cost, after
//! the user has the answer, and the writer stores it; failing to only
//! leaves the old hash (logged). An unknown name is checked against a dummy
//! hash of the cost most stored hashes have (`costs`), so that it takes as
//! long as a known name's wrong password whatever the flag says.
//!
//! It knows nothing of sockets or of the protocol's text. Plaintext
//! passwords live only in jobs and are never stored or logged.
//!
//! Whatever goes wrong with one job (a locked or read-only database, a
//! panic) answers that job `Unavailable` and leaves the worker serving: an
//! account is acknowledged only after its transaction committed, a database
//! the server cannot write still serves logins, and a lock held elsewhere
//! makes each batch of registrations wait at most `BUSY_TIMEOUT` (2 s)
//! before it fails (one that arrives while a batch waits can wait for that
//! batch and then its own: twice that). Logins do not wait for it: workers
//! hand new accounts to the writer and go on.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicUsize, Ordering};
use std::sync::mpsc::{self, Receiver, Sender};
use std::sync::{Arc, Mutex, MutexGuard, TryLockError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crossbeam_channel as channel;
use rusqlite::{Connection, OptionalExtension, TransactionBehavior};

use crate::session::{AuthOutcome, AuthRequest, ConnId, MAX_PASSWORD};
use crate::store::{Access, migrate, open, private_files};
pub use crate::store::{Error, ErrorKind, SCHEMA_VERSION};

mod costs;
use costs::{Costs, hash_cost};

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
    jobs: Option<channel::Sender<Job>>,
    /// What the workers share, the count of queued jobs among it.
    shared: Arc<Shared>,
    limit: usize,
    results: Receiver<Done>,
    threads: Vec<JoinHandle<()>>,
    /// Each worker's database connection. Workers lock theirs only while
    /// they use it (never while hashing), so at shutdown the loop thread can
    /// take and close them itself: workers run at idle priority and, on a
    /// busy machine, might not get the CPU to close them (and checkpoint the
    /// WAL into the database file) before the process exits.
    stores: Vec<Store>,
}

/// A worker's connection; `None` once the pool has closed it.
type Store = Arc<Mutex<Option<Connection>>>;

impl AuthPool {
    /// Opens (creating or migrating) the database, then starts the workers.
    /// `wake` is called after each result is queued.
    pub fn start(
        config: &AuthConfig,
        wake: Arc<dyn Fn() + Send + Sync>,
    ) -> Result<AuthPool, Error> {
        private_files(&config.db);
        let (conn, access) = open(&config.db)?;
        migrate(&conn, access, &config.db)?;
        let costs = costs::load(&conn, config.bcrypt_cost)?;
        drop(conn);
        match access {
            Access::ReadWrite => {}
            Access::ReadOnly => log::warn!(
                "database {} is read-only: existing users can log in, \
                 registrations will be refused",
                config.db.display()
            ),
            Access::Immutable => log::warn!(
                "database {} and its directory are read-only: opened as an \
                 immutable snapshot (SQLite cannot otherwise read a WAL \
                 database where it cannot create the -wal and -shm files); \
                 existing users can log in, registrations will be refused, \
                 and changes other programs make to it will not be seen",
                config.db.display()
            ),
        }

        log::info!(
            "unknown names are checked at bcrypt cost {} ({})",
            costs.most_common(),
            costs.why()
        );
        if costs.stale() > 0 {
            log::info!(
                "{} of {} accounts have a hash of another cost than --bcrypt-cost {}: \
                 each is re-hashed at its next login",
                costs.stale(),
                costs.accounts(),
                config.bcrypt_cost
            );
        }
        let dummy = Dummy::new(costs.most_common())?;

        // Unbounded channel, bounded by `queued`: nothing is allocated for
        // jobs that never come. Every worker receives from it directly (no
        // lock to hold while waiting), and sending never blocks the loop.
        let (job_tx, job_rx) = channel::unbounded::<Job>();
        let (done_tx, done_rx) = mpsc::channel::<Done>();
        let workers = config.workers.max(1);
        let shared = Arc::new(Shared {
            jobs: job_rx,
            queued: AtomicUsize::new(0),
            done: done_tx,
            wake,
            running: (0..workers).map(|_| Mutex::new(None)).collect(),
            takeover_after: takeover_after(config.bcrypt_cost),
        });
        log::debug!(
            "a password check running longer than {:?} on an idle-priority \
             worker is taken over by worker 0",
            shared.takeover_after
        );
        let mut threads = Vec::new();
        let mut stores = Vec::new();
        let (write_tx, write_rx) = mpsc::channel::<Write>();
        {
            let (conn, _) = open(&config.db)?;
            let store: Store = Arc::new(Mutex::new(Some(conn)));
            stores.push(store.clone());
            let done = shared.done.clone();
            let wake = shared.wake.clone();
            let writer = Writer {
                store,
                done,
                wake,
                costs,
                unknown_cost: dummy.cost.clone(),
            };
            let handle = std::thread::Builder::new()
                .name("auth-writer".into())
                .spawn(move || writer.run(&write_rx))
                .map_err(|e| Error::new(ErrorKind::Thread, e.to_string()))?;
            threads.push(handle);
        }
        for i in 0..workers {
            let (conn, access) = open(&config.db)?;
            let store: Store = Arc::new(Mutex::new(Some(conn)));
            stores.push(store.clone());
            let worker = Worker {
                index: i,
                store,
                read_only: access != Access::ReadWrite,
                cost: config.bcrypt_cost,
                dummy: dummy.clone(),
                writer: write_tx.clone(),
            };
            let shared = shared.clone();
            let handle = std::thread::Builder::new()
                .name(format!("auth-{i}"))
                .spawn(move || worker.run(&shared))
                .map_err(|e| Error::new(ErrorKind::Thread, e.to_string()))?;
            threads.push(handle);
        }
        Ok(AuthPool {
            jobs: Some(job_tx),
            shared,
            limit: config.queue.max(1),
            results: done_rx,
            threads,
            stores,
        })
    }

    /// Queues a job, or gives it back when the queue is full.
    pub fn submit(&self, job: Job) -> Result<(), Job> {
        let Some(jobs) = &self.jobs else {
            return Err(job);
        };
        let queued = &self.shared.queued;
        if queued.load(Ordering::Relaxed) >= self.limit {
            return Err(job);
        }
        queued.fetch_add(1, Ordering::Relaxed);
        jobs.send(job).map_err(|e| {
            queued.fetch_sub(1, Ordering::Relaxed);
            e.into_inner()
        })
    }

    /// The next finished job, if any.
    pub fn try_recv(&self) -> Option<Done> {
        self.results.try_recv().ok()
    }

    /// Closes the queue, then closes the workers' database connections,
    /// waiting up to `timeout` for a worker that is using one (a
    /// registration in progress commits or rolls back as a whole either
    /// way). The last connection closed checkpoints the WAL into the
    /// database file and removes the `-wal` and `-shm` files. A worker
    /// still hashing finds its connection gone and gives up.
    pub fn shutdown(mut self, timeout: Duration) {
        self.jobs = None;
        let deadline = std::time::Instant::now() + timeout;
        let mut in_use = 0;
        for store in &self.stores {
            let conn = loop {
                match store.try_lock() {
                    Ok(mut slot) => break slot.take(),
                    // The worker panicked while holding it: the transaction
                    // rolled back as it unwound; the connection is sound.
                    Err(TryLockError::Poisoned(p)) => break p.into_inner().take(),
                    Err(TryLockError::WouldBlock) if std::time::Instant::now() < deadline => {
                        std::thread::sleep(Duration::from_millis(1));
                    }
                    Err(TryLockError::WouldBlock) => {
                        in_use += 1;
                        break None;
                    }
                }
            };
            if let Some(conn) = conn
                && let Err((_, e)) = conn.close()
            {
                log::warn!("closing the account store: {e}");
            }
        }
        if in_use > 0 {
            log::warn!(
                "{in_use} auth worker(s) still busy with the database after {timeout:?}; \
                 the next start recovers from the write-ahead log"
            );
        }
        for handle in self.threads.drain(..) {
            if handle.is_finished() {
                let _ = handle.join();
            }
        }
    }
}

/// "Unknown user" is verified against this hash, so it costs what a wrong
/// password costs and the two cannot be told apart by timing. Its cost is
/// the one most accounts have (see `costs`), which the writer may change
/// while the server runs.
#[derive(Clone)]
struct Dummy {
    /// Salt and hash of a cheap hash, without its `$2b$NN$` prefix.
    rest: Arc<str>,
    /// The cost to label it with, published by the writer.
    cost: Arc<AtomicU32>,
}

impl Dummy {
    fn new(cost: u32) -> Result<Dummy, Error> {
        Ok(Dummy {
            rest: dummy_rest()?.into(),
            cost: Arc::new(AtomicU32::new(cost)),
        })
    }

    /// The dummy hash at the current cost, and that cost.
    fn hash(&self) -> (String, u32) {
        let cost = self.cost.load(Ordering::Relaxed);
        (relabel(&self.rest, cost), cost)
    }
}

/// Hashing at the real cost here would delay start-up (by days at cost 31);
/// verification cost depends only on the cost field, so hash cheaply and
/// relabel it: this is the part after the cost.
fn dummy_rest() -> Result<String, Error> {
    let cheap = bcrypt::hash("neochat dummy password", 4)
        .map_err(|e| Error::new(ErrorKind::Thread, format!("bcrypt: {e}")))?;
    // "$2b$04$" then 22 characters of salt and 31 of hash.
    Ok(cheap.get(7..).unwrap_or_default().to_owned())
}

fn relabel(rest: &str, cost: u32) -> String {
    format!("$2b${cost:02}${rest}")
}

#[cfg(test)]
fn dummy_hash(cost: u32) -> Result<String, Error> {
    Ok(relabel(&dummy_rest()?, cost))
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
    store: Store,
    /// The database cannot be written: registrations are refused before
    /// anything is hashed.
    read_only: bool,
    cost: u32,
    dummy: Dummy,
    /// Where new accounts and re-hashed passwords go to be stored.
    writer: Sender<Write>,
}

/// What the workers share.
struct Shared {
    jobs: channel::Receiver<Job>,
    /// Jobs queued and not yet taken by a worker.
    queued: AtomicUsize,
    done: Sender<Done>,
    /// Called after each result is queued.
    wake: Arc<dyn Fn() + Send + Sync>,
    /// What each worker past the first is working on, and since when: a
    /// worker at idle priority can be kept off the CPU for as long as other
    /// processes keep it busy, and then worker 0 takes its check over.
    running: Vec<Mutex<Option<Running>>>,
    takeover_after: Duration,
}

/// A job a worker has started.
struct Running {
    since: Instant,
    /// The worker's CPU clock and its reading at `since`: a worker that is
    /// slow but getting the CPU (more workers than free CPUs) is left alone.
    cpu: Option<(CpuClock, Duration)>,
    task: Arc<Task>,
    /// Worker 0 has taken it over already.
    taken_over: bool,
}

/// A job, as two workers may hold it: whichever finishes first answers.
struct Task {
    job: Job,
    /// 1 + the index of the worker that answers; 0 while nobody has. A
    /// registration is claimed before it is stored, so only one is.
    claimed: AtomicUsize,
}

impl Task {
    /// Whether `worker` answers this task: the first to ask does.
    fn claim(&self, worker: usize) -> bool {
        match self
            .claimed
            .compare_exchange(0, worker + 1, Ordering::AcqRel, Ordering::Acquire)
        {
            Ok(_) => true,
            Err(owner) => owner == worker + 1,
        }
    }
}

/// How often worker 0, while it has nothing to do, looks for jobs stalled
/// on idle-priority workers (or waiting for one of them to wake up).
const TAKEOVER_POLL: Duration = Duration::from_millis(100);

/// A thread's CPU-time clock, which other threads can read.
#[derive(Clone, Copy, Debug)]
struct CpuClock(#[cfg(target_os = "linux")] libc::clockid_t);

impl CpuClock {
    /// The calling thread's clock.
    fn current() -> Option<CpuClock> {
        #[cfg(target_os = "linux")]
        {
            let mut id: libc::clockid_t = 0;
            // SAFETY: pthread_self is always valid for the calling thread,
            // and `id` is a valid place for the result.
            let rc = unsafe { libc::pthread_getcpuclockid(libc::pthread_self(), &mut id) };
            (rc == 0).then_some(CpuClock(id))
        }
        #[cfg(not(target_os = "linux"))]
        None
    }

    /// The CPU time the thread has used.
    fn read(self) -> Option<Duration> {
        #[cfg(target_os = "linux")]
        {
            let mut ts = libc::timespec {
                tv_sec: 0,
                tv_nsec: 0,
            };
            // SAFETY: `ts` is a valid timespec to write; a clock id of a
            // thread that has gone makes the call fail, not misbehave.
            let rc = unsafe { libc::clock_gettime(self.0, &mut ts) };
            (rc == 0).then(|| Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32))
        }
        #[cfg(not(target_os = "linux"))]
        None
    }
}

/// How long a check may run on an idle-priority worker before worker 0 runs
/// it too, if the worker got less than a quarter of a CPU meanwhile: three
/// times what a check at `cost` takes here, measured at start (bcrypt's work
/// doubles with each step of the cost), and at least 200 ms.
fn takeover_after(cost: u32) -> Duration {
    let Ok(hash) = bcrypt::hash("neochat timing", 4) else {
        return Duration::from_secs(1);
    };
    let at_cost_4 = (0..3)
        .map(|_| {
            let t = Instant::now();
            let _ = bcrypt::verify("neochat timing", &hash);
            t.elapsed()
        })
        .min()
        .unwrap_or(Duration::from_millis(1));
    let factor = 1u32 << cost.saturating_sub(4).min(20);
    at_cost_4
        .checked_mul(factor.saturating_mul(3))
        .unwrap_or(Duration::MAX)
        .clamp(Duration::from_millis(200), Duration::from_secs(86_400))
}

impl Worker {
    fn run(self, shared: &Shared) {
        lower_priority(self.index);
        let steady = self.index == 0;
        // Alone, worker 0 has nobody to take over from: it just waits.
        let poll = steady && shared.running.len() > 1;
        let clock = CpuClock::current();
        loop {
            if steady && let Some(task) = self.stalled(shared) {
                if !self.work(&task, shared) {
                    return;
                }
                continue;
            }
            let job = if poll {
                match shared.jobs.recv_timeout(TAKEOVER_POLL) {
                    Ok(job) => job,
                    Err(channel::RecvTimeoutError::Timeout) => continue,
                    Err(channel::RecvTimeoutError::Disconnected) => return,
                }
            } else {
                match shared.jobs.recv() {
                    Ok(job) => job,
                    Err(_) => return, // The pool was dropped.
                }
            };
            shared.queued.fetch_sub(1, Ordering::Relaxed);
            if job.cancel.load(Ordering::Relaxed) {
                // The connection is gone; nobody waits for this.
                log::debug!("conn {}: password check dropped unrun", job.conn.key);
                continue;
            }
            log::debug!("conn {}: password check started", job.conn.key);
            let task = Arc::new(Task {
                job,
                claimed: AtomicUsize::new(0),
            });
            let slot = &shared.running[self.index];
            // (A worker preempted between taking the job and this store
            // hides it from worker 0; the window is a few instructions
            // against a hash's hundreds of milliseconds.)
            if !steady {
                *lock(slot) = Some(Running {
                    since: Instant::now(),
                    cpu: clock.and_then(|c| Some((c, c.read()?))),
                    task: task.clone(),
                    taken_over: false,
                });
            }
            let alive = self.work(&task, shared);
            if !steady {
                *lock(slot) = None;
            }
            if !alive {
                return;
            }
        }
    }

    /// A check that has run too long on another worker, to be run here too.
    /// Never waits for another worker's lock: one that holds it can be off
    /// the CPU.
    fn stalled(&self, shared: &Shared) -> Option<Arc<Task>> {
        for (index, slot) in shared.running.iter().enumerate().skip(1) {
            let mut slot = match slot.try_lock() {
                Ok(slot) => slot,
                Err(TryLockError::Poisoned(p)) => p.into_inner(),
                Err(TryLockError::WouldBlock) => continue,
            };
            let Some(running) = slot.as_mut() else {
                continue;
            };
            let task = &running.task;
            let wall = running.since.elapsed();
            // Less than a quarter of a CPU since it started (or no way to
            // tell): kept off the CPU, not merely sharing it.
            let starved = running.cpu.is_none_or(|(clock, at_start)| {
                clock
                    .read()
                    .is_none_or(|now| now.saturating_sub(at_start) * 4 < wall)
            });
            if !running.taken_over
                && wall >= shared.takeover_after
                && starved
                && task.claimed.load(Ordering::Acquire) == 0
                && !task.job.cancel.load(Ordering::Relaxed)
            {
                running.taken_over = true;
                log::debug!(
                    "conn {}: worker {index} has not finished its password check \
                     in {:?}; worker 0 runs it too",
                    task.job.conn.key,
                    running.since.elapsed()
                );
                return Some(task.clone());
            }
        }
        None
    }

    /// Runs the task and answers it, unless another worker did. False when
    /// the pool is gone.
    fn work(&self, task: &Task, shared: &Shared) -> bool {
        let conn = task.job.conn;
        let answer = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| self.handle(task)))
            .unwrap_or_else(|_| {
                log::error!("auth worker panicked on a job for connection {}", conn.key);
                Some(Answer::new(AuthOutcome::Unavailable, false))
            });
        let Some(Answer {
            outcome,
            known_account,
            stale,
        }) = answer
        else {
            return true;
        };
        if !task.claim(self.index) {
            return true; // Another worker answered first.
        }
        let result = Done {
            conn,
            outcome,
            known_account,
        };
        if shared.done.send(result).is_err() {
            return false;
        }
        (shared.wake)();
        // The user has their answer; the new hash costs them nothing. Only
        // the worker that answered gets here, so a login is re-hashed once.
        if let Some(stale) = stale {
            let rehashed =
                std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| self.rehash(task, stale)));
            if rehashed.is_err() {
                log::error!("auth worker panicked re-hashing a password");
            }
        }
        true
    }

    /// Hashes the password of a login that matched a hash of another cost
    /// at the configured cost, and hands it to the writer. A failure only
    /// leaves the old hash in place (logged): the login stands.
    fn rehash(&self, task: &Task, stale: Stale) {
        let AuthRequest::Login { password, .. } = &task.job.request else {
            return;
        };
        let hash = match bcrypt::hash(password, self.cost) {
            Ok(hash) => hash,
            Err(e) => {
                log::error!("cannot re-hash the password of {}: bcrypt: {e}", stale.name);
                return;
            }
        };
        let write = Write::Rehash(Rehash {
            name: stale.name,
            old: stale.hash,
            new: hash,
        });
        if self.writer.send(write).is_err() {
            log::debug!("the account writer has stopped: a re-hash is not stored");
        }
    }

    /// The answer; `None` when another worker has answered already.
    fn handle(&self, task: &Task) -> Option<Answer> {
        #[cfg(test)]
        if self.index > 0
            && matches!(&task.job.request,
                AuthRequest::Register { password, .. } | AuthRequest::Login { password, .. }
                    if password == tests::STALL_ON_IDLE_WORKER)
        {
            std::thread::sleep(tests::STALL);
        }
        let result = match &task.job.request {
            AuthRequest::Register { name, password } => self
                .register(name, password, task)
                .map(|outcome| outcome.map(|outcome| Answer::new(outcome, false))),
            AuthRequest::Login { name, password } => self.login(name, password).map(Some),
        };
        result.unwrap_or_else(|e| {
            crate::error_every!(crate::log_every::PERIOD, "account store error: {e}");
            Some(Answer::new(AuthOutcome::Unavailable, false))
        })
    }

    /// `None` when the writer answers (or another worker running the same
    /// task got to store it first).
    fn register(
        &self,
        name: &str,
        password: &str,
        task: &Task,
    ) -> Result<Option<AuthOutcome>, Error> {
        let cancel = &task.job.cancel;
        // The session checked the length; check again, since `bcrypt::hash`
        // would silently ignore everything past 72 bytes.
        if password.len() > MAX_PASSWORD {
            return Ok(Some(AuthOutcome::Unavailable));
        }
        if self.find(name)?.is_some() {
            return Ok(Some(AuthOutcome::NameTaken));
        }
        if self.read_only {
            crate::warn_every!(
                crate::log_every::PERIOD,
                "registration refused: the database is read-only"
            );
            return Ok(Some(AuthOutcome::Unavailable));
        }
        let hash = bcrypt::hash(password, self.cost)
            .map_err(|e| Error::new(ErrorKind::Database, format!("bcrypt: {e}")))?;
        // The user gave up (or timed out) while we hashed: store nothing,
        // or they would find the name taken without ever being told it is
        // theirs.
        if cancel.load(Ordering::Relaxed) {
            return Ok(Some(AuthOutcome::Unavailable));
        }
        // One account, one write, even when two workers hashed it.
        if !task.claim(self.index) {
            return Ok(None);
        }
        let created_at = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs() as i64);
        let write = Write::Register(NewAccount {
            conn: task.job.conn,
            name: name.to_owned(),
            hash,
            created_at,
            cancel: cancel.clone(),
            #[cfg(test)]
            panic: password == tests::PANIC_IN_TRANSACTION,
        });
        if self.writer.send(write).is_err() {
            return Err(closed());
        }
        // The writer answers, as soon as the account is stored (or not):
        // this worker may be kept off the CPU by then.
        Ok(None)
    }

    fn login(&self, name: &str, password: &str) -> Result<Answer, Error> {
        let account = self.find(name)?;
        let dummy;
        let hash = match &account {
            Some((_, hash)) => hash.as_str(),
            None => {
                let cost;
                (dummy, cost) = self.dummy.hash();
                log::debug!("no such account: checked against a dummy hash of cost {cost}");
                &dummy
            }
        };
        // bcrypt would compare only the first 72 bytes of a longer password,
        // and no account has one: verify anyway, for equal timing, and fail.
        let matches = bcrypt::verify(password, hash).unwrap_or(false);
        Ok(match account {
            Some((shown, hash)) if matches && password.len() <= MAX_PASSWORD => {
                let stale = self.is_stale(&hash).then(|| Stale {
                    name: shown.clone(),
                    hash,
                });
                Answer {
                    outcome: AuthOutcome::LoggedIn(shown),
                    known_account: false,
                    stale,
                }
            }
            Some(_) => Answer::new(AuthOutcome::WrongCredentials, true),
            None => Answer::new(AuthOutcome::WrongCredentials, false),
        })
    }

    /// Whether a hash that just matched should be replaced by one at the
    /// configured cost (not when the database cannot be written).
    fn is_stale(&self, hash: &str) -> bool {
        let cost = hash_cost(hash);
        if cost == Some(self.cost) {
            return false;
        }
        if self.read_only {
            log::debug!(
                "a hash of cost {cost:?} is kept: the database is read-only \
                 (--bcrypt-cost {})",
                self.cost
            );
            return false;
        }
        true
    }

    /// The account's registered name and hash, matched without regard to case.
    fn find(&self, name: &str) -> Result<Option<(String, String)>, Error> {
        let store = self.lock();
        let conn = store.as_ref().ok_or_else(closed)?;
        Ok(conn
            .query_row(
                "SELECT name, hash FROM users WHERE name = ?1",
                [name],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .optional()?)
    }

    /// This worker's connection slot. A poisoned lock means this worker
    /// panicked while using it; the transaction rolled back as it unwound.
    fn lock(&self) -> MutexGuard<'_, Option<Connection>> {
        lock(&self.store)
    }
}

/// Locks `m`, poisoned or not. Every mutex here guards a value a panic
/// cannot leave half-changed (a connection whose transaction rolled back as
/// the panic unwound, or a slot that is only ever replaced whole).
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// What a worker's job came to, for the connection that asked.
struct Answer {
    outcome: AuthOutcome,
    /// A failed login named an account that exists (see [`Done`]).
    known_account: bool,
    /// A login that matched a hash of another cost than the configured one:
    /// to be re-hashed once the user has the answer.
    stale: Option<Stale>,
}

impl Answer {
    fn new(outcome: AuthOutcome, known_account: bool) -> Answer {
        Answer {
            outcome,
            known_account,
            stale: None,
        }
    }
}

/// An account whose stored hash has another cost than `--bcrypt-cost`.
struct Stale {
    /// As registered.
    name: String,
    /// The stored hash, which the new one replaces only if it is still
    /// there.
    hash: String,
}

/// What the writer stores.
enum Write {
    Register(NewAccount),
    Rehash(Rehash),
}

/// A password hashed again at the configured cost, after a login. Nobody
/// waits for it.
struct Rehash {
    name: String,
    old: String,
    new: String,
}

/// A new account for the writer to store.
struct NewAccount {
    /// Who asked: the writer answers them.
    conn: ConnId,
    name: String,
    hash: String,
    created_at: i64,
    /// Set when the user has gone: the account is not stored.
    cancel: Arc<AtomicBool>,
    /// Tests make the write panic inside its transaction.
    #[cfg(test)]
    panic: bool,
}

/// What became of a [`Write`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Stored {
    Inserted,
    Taken,
    Cancelled,
    /// Nothing was stored (the error is logged once, by the writer).
    Failed,
    /// A re-hash replaced the old hash.
    Rehashed,
    /// A re-hash found the old hash gone (another login re-hashed it, or
    /// the account was changed or deleted meanwhile): nothing to do.
    Superseded,
}

/// The most writes committed in one transaction.
const MAX_BATCH: usize = 64;

/// The one thread that writes accounts, at normal priority, and answers
/// the registrations it stores (or fails to).
struct Writer {
    store: Store,
    done: Sender<Done>,
    wake: Arc<dyn Fn() + Send + Sync>,
    /// The stored hashes by cost: only this thread changes them, so it
    /// keeps the count, and publishes the most common cost in
    /// `unknown_cost` for the workers.
    costs: Costs,
    unknown_cost: Arc<AtomicU32>,
}

impl Writer {
    fn run(mut self, writes: &Receiver<Write>) {
        while let Ok(first) = writes.recv() {
            let mut batch = vec![first];
            while batch.len() < MAX_BATCH {
                match writes.try_recv() {
                    Ok(write) => batch.push(write),
                    Err(_) => break,
                }
            }
            let stored =
                std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| self.commit(&batch)))
                    .unwrap_or_else(|_| {
                        log::error!(
                            "account writer panicked; nothing of its batch of {} was stored",
                            batch.len()
                        );
                        Ok(vec![Stored::Failed; batch.len()])
                    })
                    .unwrap_or_else(|e| {
                        crate::error_every!(crate::log_every::PERIOD, "account store error: {e}");
                        vec![Stored::Failed; batch.len()]
                    });
            let mut answered = false;
            for (write, stored) in batch.into_iter().zip(stored) {
                let account = match write {
                    Write::Register(account) => account,
                    Write::Rehash(rehash) => {
                        self.rehashed(&rehash, stored);
                        continue;
                    }
                };
                let outcome = match stored {
                    Stored::Inserted => {
                        if let Some(cost) = hash_cost(&account.hash) {
                            self.costs.add(cost, 1);
                        }
                        AuthOutcome::Registered(account.name)
                    }
                    // Another connection registered the name meanwhile.
                    Stored::Taken => AuthOutcome::NameTaken,
                    Stored::Cancelled | Stored::Failed | Stored::Rehashed | Stored::Superseded => {
                        AuthOutcome::Unavailable
                    }
                };
                let done = Done {
                    conn: account.conn,
                    outcome,
                    known_account: false,
                };
                // The loop has gone only at shutdown.
                if self.done.send(done).is_err() {
                    return;
                }
                answered = true;
            }
            if answered {
                (self.wake)();
            }
            self.publish_unknown_cost();
        }
    }

    /// Counts (or logs) what became of a re-hash.
    fn rehashed(&mut self, rehash: &Rehash, stored: Stored) {
        let (from, to) = (hash_cost(&rehash.old), hash_cost(&rehash.new));
        match stored {
            Stored::Rehashed => {
                if let (Some(from), Some(to)) = (from, to) {
                    self.costs.moved(from, to);
                }
                log::info!(
                    "password of {} re-hashed from bcrypt cost {} to {}",
                    rehash.name,
                    from.map_or_else(|| "?".to_owned(), |c| c.to_string()),
                    to.map_or_else(|| "?".to_owned(), |c| c.to_string()),
                );
            }
            Stored::Superseded => {
                log::debug!(
                    "password of {} changed meanwhile: not re-hashed",
                    rehash.name
                );
            }
            // The batch failed: logged once already. The old hash stays,
            // and the next login tries again.
            _ => crate::warn_every!(
                crate::log_every::PERIOD,
                "password of {} not re-hashed (the old hash stays)",
                rehash.name
            ),
        }
    }

    /// Tells the workers the cost to check unknown names at, if it changed.
    fn publish_unknown_cost(&self) {
        let cost = self.costs.most_common();
        if self.unknown_cost.swap(cost, Ordering::Relaxed) != cost {
            log::info!(
                "unknown names are now checked at bcrypt cost {cost} ({})",
                self.costs.why()
            );
        }
    }

    /// Stores the batch in one transaction: every account in it is durable
    /// when this returns `Ok`, and none is when it fails or panics (the
    /// transaction rolls back as it is dropped).
    fn commit(&self, batch: &[Write]) -> Result<Vec<Stored>, Error> {
        let mut store = lock(&self.store);
        let conn = store.as_mut().ok_or_else(closed)?;
        // IMMEDIATE takes the write lock up front, so another program
        // writing makes us wait (busy_timeout) instead of failing with
        // SQLITE_BUSY.
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        let mut stored = Vec::with_capacity(batch.len());
        {
            let mut insert = tx.prepare_cached(
                "INSERT INTO users (name, hash, created_at) VALUES (?1, ?2, ?3)
                 ON CONFLICT (name) DO NOTHING",
            )?;
            // Only over the hash that matched: a hash changed meanwhile
            // (by another login's re-hash, or by hand) is not overwritten.
            let mut update =
                tx.prepare_cached("UPDATE users SET hash = ?1 WHERE name = ?2 AND hash = ?3")?;
            for write in batch {
                let write = match write {
                    Write::Register(account) => account,
                    Write::Rehash(r) => {
                        let changed = update.execute((&r.new, &r.name, &r.old))?;
                        stored.push(if changed == 1 {
                            Stored::Rehashed
                        } else {
                            Stored::Superseded
                        });
                        continue;
                    }
                };
                // The user gave up (or timed out) while we hashed: store
                // nothing, or they would find the name taken without ever
                // being told it is theirs.
                if write.cancel.load(Ordering::Relaxed) {
                    stored.push(Stored::Cancelled);
                    continue;
                }
                let inserted = insert.execute((&write.name, &write.hash, write.created_at))?;
                #[cfg(test)]
                if write.panic {
                    panic!("fault injected by a test inside the write transaction");
                }
                stored.push(if inserted == 1 {
                    Stored::Inserted
                } else {
                    Stored::Taken
                });
            }
        }
        if stored
            .iter()
            .any(|s| matches!(s, Stored::Inserted | Stored::Rehashed))
        {
            tx.commit()?;
        }
        Ok(stored)
    }
}

/// The pool closed the worker's connection: it is shutting down.
fn closed() -> Error {
    Error::new(ErrorKind::Database, "the account store is closed")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::immutable_uri;
    use rusqlite::OpenFlags;
    use std::path::Path;
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

    fn pool(dir: &Path) -> (AuthPool, mpsc::Receiver<()>) {
        pool_of(dir, 2)
    }

    fn pool_of(dir: &Path, workers: usize) -> (AuthPool, mpsc::Receiver<()>) {
        pool_at(dir, workers, 4)
    }

    fn pool_at(dir: &Path, workers: usize, cost: u32) -> (AuthPool, mpsc::Receiver<()>) {
        let (tx, rx) = mpsc::channel();
        let tx = Mutex::new(tx);
        let wake = Arc::new(move || {
            let _ = tx.lock().map(|t| t.send(()));
        });
        let config = AuthConfig {
            db: dir.join("accounts.db"),
            bcrypt_cost: cost,
            workers,
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
        let config = AuthConfig {
            db: dir.path().join("accounts.db"),
            // Slow enough (well over a second unoptimised) to be mid-hash.
            bcrypt_cost: 11,
            workers: 1,
            queue: 8,
        };
        let pool = AuthPool::start(&config, Arc::new(|| {})).expect("pool starts");
        let wal = dir.path().join("accounts.db-wal");
        assert!(wal.exists(), "an open WAL database has a -wal file");
        assert!(
            pool.submit(test_job(1, register("carol", "password-1")))
                .is_ok()
        );
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while pool.shared.queued.load(Ordering::Relaxed) > 0 && std::time::Instant::now() < deadline
        {
            std::thread::sleep(Duration::from_millis(1));
        }
        assert_eq!(
            pool.shared.queued.load(Ordering::Relaxed),
            0,
            "job not taken"
        );
        pool.shutdown(Duration::from_millis(50));
        assert!(!wal.exists(), "the -wal file outlived shutdown");
        let (conn, _) = open(&config.db).unwrap();
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

    /// The writer counts the hashes by cost as it stores them, and tells
    /// the workers the most common one; a re-hash whose old hash has gone
    /// changes nothing.
    #[test]
    fn the_writer_keeps_the_cost_of_unknown_names_up_to_date() {
        let (_dir, path, conn) = migrated();
        let (done_tx, done_rx) = mpsc::channel();
        let mut w = writer(&path, done_tx);
        w.costs = Costs::new(5);
        let unknown = w.unknown_cost.clone();
        let hash = |cost: u32, n: char| format!("$2b${cost:02}${}", n.to_string().repeat(53));
        let (write_tx, write_rx) = mpsc::channel();
        let handle = std::thread::spawn(move || w.run(&write_rx));
        let register = |key: usize, name: char, cost: u32| {
            write_tx
                .send(Write::Register(NewAccount {
                    conn: ConnId { key, serial: 1 },
                    name: name.to_string(),
                    hash: hash(cost, name),
                    created_at: 0,
                    cancel: Arc::new(AtomicBool::new(false)),
                    panic: false,
                }))
                .unwrap();
            let done = done_rx.recv_timeout(ANSWER).expect("the writer answers");
            assert_eq!(done.outcome, AuthOutcome::Registered(name.to_string()));
        };
        let rehash = |name: char, old: String| {
            write_tx
                .send(Write::Rehash(Rehash {
                    name: name.to_string(),
                    old,
                    new: hash(5, name),
                }))
                .unwrap();
        };
        for (key, name) in [(1, 'a'), (2, 'b'), (3, 'c'), (4, 'd')] {
            register(key, name, 4);
        }
        assert_eq!(unknown.load(Ordering::Relaxed), 4);
        // 4: b, c, d; 5: a.
        rehash('a', hash(4, 'a'));
        // b's hash is not the one the re-hash replaces: it stays.
        rehash('b', hash(4, 'x'));
        // 4: b, c, d; 5: a, z. (Counting b as moved would make it a tie,
        // and a tie goes to the configured cost, 5.)
        register(5, 'z', 5);
        assert_eq!(unknown.load(Ordering::Relaxed), 4);
        // 4: b, d; 5: a, c, z.
        rehash('c', hash(4, 'c'));
        let deadline = Instant::now() + ANSWER;
        while unknown.load(Ordering::Relaxed) != 5 && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(5));
        }
        assert_eq!(unknown.load(Ordering::Relaxed), 5);
        let hashes: Vec<String> = conn
            .prepare("SELECT hash FROM users ORDER BY name")
            .unwrap()
            .query_map([], |r| r.get(0))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        assert_eq!(
            hashes,
            [
                hash(5, 'a'),
                hash(4, 'b'),
                hash(5, 'c'),
                hash(4, 'd'),
                hash(5, 'z')
            ]
        );
        drop(write_tx);
        handle.join().unwrap();
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

    /// A writer on the database at `path`, answering on `done`.
    fn writer(path: &Path, done: Sender<Done>) -> Writer {
        let (conn, _) = open(path).unwrap();
        Writer {
            store: Arc::new(Mutex::new(Some(conn))),
            done,
            wake: Arc::new(|| {}),
            costs: Costs::new(4),
            unknown_cost: Arc::new(AtomicU32::new(4)),
        }
    }

    fn write(key: usize, name: &str, cancelled: bool, panic: bool) -> Write {
        Write::Register(NewAccount {
            conn: ConnId { key, serial: 1 },
            name: name.into(),
            hash: format!("hash of {name}"),
            created_at: 0,
            cancel: Arc::new(AtomicBool::new(cancelled)),
            panic,
        })
    }

    fn names(conn: &Connection) -> Vec<String> {
        let mut stmt = conn
            .prepare("SELECT name FROM users ORDER BY name")
            .unwrap();
        stmt.query_map([], |r| r.get(0))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap()
    }

    /// The answers on `done` for `n` connections, by key, each arriving
    /// within `within`.
    fn answers(done: &Receiver<Done>, n: usize, within: Duration) -> Vec<(usize, AuthOutcome)> {
        let mut got: Vec<(usize, AuthOutcome)> = (0..n)
            .map(|i| {
                let d = done
                    .recv_timeout(within)
                    .unwrap_or_else(|e| panic!("answer {i} of {n} not within {within:?}: {e}"));
                (d.conn.key, d.outcome)
            })
            .collect();
        got.sort_by_key(|(key, _)| *key);
        got
    }

    /// Registrations waiting together are committed in one transaction,
    /// each with its own answer; a panic in the batch stores none of it,
    /// and the writer goes on.
    #[test]
    fn the_writer_commits_a_batch_with_one_answer_each() {
        let (_dir, path, conn) = migrated();
        let (done_tx, done_rx) = mpsc::channel();

        // Queued before the writer starts, so they form one batch.
        let (write_tx, write_rx) = mpsc::channel();
        for w in [
            write(1, "carol", false, false),
            write(2, "CAROL", false, false),
            write(3, "dave", true, false),
            write(4, "erin", false, false),
        ] {
            write_tx.send(w).unwrap();
        }
        let w = writer(&path, done_tx.clone());
        let handle = std::thread::spawn(move || w.run(&write_rx));
        assert_eq!(
            answers(&done_rx, 4, ANSWER),
            [
                (1, AuthOutcome::Registered("carol".into())),
                (2, AuthOutcome::NameTaken),
                (3, AuthOutcome::Unavailable),
                (4, AuthOutcome::Registered("erin".into())),
            ]
        );
        assert_eq!(names(&conn), ["carol", "erin"]);

        // A batch that panics part-way stores none of it.
        let (write_tx2, write_rx2) = mpsc::channel();
        for w in [
            write(5, "frank", false, false),
            write(6, "grace", false, true),
            write(7, "heidi", false, false),
        ] {
            write_tx2.send(w).unwrap();
        }
        let w = writer(&path, done_tx);
        let handle2 = std::thread::spawn(move || w.run(&write_rx2));
        assert_eq!(
            answers(&done_rx, 3, ANSWER),
            [
                (5, AuthOutcome::Unavailable),
                (6, AuthOutcome::Unavailable),
                (7, AuthOutcome::Unavailable),
            ]
        );
        assert_eq!(names(&conn), ["carol", "erin"]);
        // The writer is still serving, and holds no lock.
        write_tx2.send(write(8, "frank", false, false)).unwrap();
        assert_eq!(
            answers(&done_rx, 1, ANSWER),
            [(8, AuthOutcome::Registered("frank".into()))]
        );
        assert_eq!(names(&conn), ["carol", "erin", "frank"]);
        drop((write_tx, write_tx2));
        handle.join().unwrap();
        handle2.join().unwrap();
    }

    /// A worker on the database at `path`, not started.
    fn test_worker(path: &Path, index: usize, writer: Sender<Write>) -> Worker {
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
        let (write_tx, write_rx) = mpsc::channel();
        let w = writer(&path, done_tx.clone());
        std::thread::spawn(move || w.run(&write_rx));
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
        let steady = test_worker(&path, 0, mpsc::channel().0);
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
        let (write_tx, write_rx) = mpsc::channel();
        let w = writer(&path, shared.done.clone());
        std::thread::spawn(move || w.run(&write_rx));
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

    #[test]
    fn immutable_uri_escapes_what_uris_reserve() {
        assert_eq!(
            immutable_uri(Path::new("/tmp/a b/x?y#z%.db")),
            "file:/tmp/a%20b/x%3Fy%23z%25.db?immutable=1"
        );
    }

    /// Opened read-only (as SQLite does by itself with a write-protected
    /// file; root ignores file modes, so the flag stands in for them here),
    /// a database with the current schema is used as it is, and one that
    /// needs migrating is refused with a message that says so.
    #[test]
    fn a_read_only_database_is_used_as_it_is_or_refused_clearly() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("accounts.db");
        Connection::open(&path)
            .unwrap()
            .execute_batch("PRAGMA journal_mode=WAL; CREATE TABLE old (x)")
            .unwrap();
        let ro = Connection::open_with_flags(&path, OpenFlags::SQLITE_OPEN_READ_ONLY).unwrap();
        let err = migrate(&ro, Access::ReadOnly, &path).expect_err("needs migrating");
        assert_eq!(err.kind(), ErrorKind::ReadOnly);
        assert!(
            err.to_string().contains("read-only") && err.to_string().contains("version 0"),
            "{err}"
        );
        drop(ro);

        let (rw, access) = open(&path).unwrap();
        migrate(&rw, access, &path).unwrap();
        drop(rw);
        let ro = Connection::open_with_flags(&path, OpenFlags::SQLITE_OPEN_READ_ONLY).unwrap();
        migrate(&ro, Access::ReadOnly, &path).expect("already migrated: nothing to write");
    }
}
