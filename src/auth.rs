//! Accounts: the worker pool that hashes and verifies passwords.
//!
//! bcrypt takes hundreds of milliseconds at production cost and SQLite
//! writes wait for the disk, so neither may run on the event loop. This
//! module owns a bounded job queue, N worker threads each with its own
//! `rusqlite::Connection` (a connection is `Send` but not `Sync`) for
//! reading accounts (`store::accounts`), and a result channel. New
//! accounts (and re-hashed passwords) go to the one store thread
//! (`store::writer`), which stores them and answers on the same channel.
//!
//! Workers run at reduced priority, so hashing never takes the CPU from the
//! event loop; all but the first at idle priority, which gets next to no
//! CPU while other processes keep the machine busy. So nothing may wait on
//! such a worker: workers take jobs from an MPMC channel without holding a
//! lock while they wait; a check stalled on an idle worker is run again by
//! worker 0 (the first to finish answers); and no worker holds SQLite's
//! write lock, where a starved one would stall every other registration
//! (and past `BUSY_TIMEOUT`, fail them). The store thread runs at normal
//! priority, and commits whatever registrations are waiting in one
//! transaction with the rest of its batch (one fsync for all of them). A
//! worker sends its result first and then wakes the
//! reactor through the one `mio::Waker`; wakes coalesce, so the reactor
//! drains every result on each wake.
//!
//! When `--bcrypt-cost` has changed since an account was made, its next
//! successful login hashes the password again at the current cost, after
//! the user has the answer, and the store thread stores it; failing to only
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
//! hand new accounts to the store thread and go on.

use std::sync::atomic::{AtomicBool, AtomicU32, AtomicUsize, Ordering};
use std::sync::mpsc::{self, Receiver, Sender};
use std::sync::{Arc, Mutex, MutexGuard, TryLockError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crossbeam_channel as channel;
use rusqlite::Connection;

use crate::session::{AuthOutcome, AuthRequest, ConnId, MAX_PASSWORD};
use crate::store::accounts::{self, AuthLink, NewAccount, PasswordChange, Rehash, Write};
use crate::store::writer::AccountWriter;
use crate::store::{Access, Store, open};
pub use crate::store::{Error, ErrorKind, SCHEMA_VERSION};

pub(crate) mod costs;
use costs::hash_cost;

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
    slots: Vec<Slot>,
}

/// A worker's connection; `None` once the pool has closed it.
type Slot = Arc<Mutex<Option<Connection>>>;

impl AuthPool {
    /// Starts the workers on `store`'s database, which [`Store::start`]
    /// has opened and migrated; new accounts go to its thread. `wake` is
    /// called after each result is queued.
    pub fn start(
        config: &AuthConfig,
        store: &Store,
        wake: Arc<dyn Fn() + Send + Sync>,
    ) -> Result<AuthPool, Error> {
        let db = store.db();
        let (conn, _) = open(db)?;
        let costs = costs::load(&conn, config.bcrypt_cost)?;
        drop(conn);

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
        let mut slots = Vec::new();
        // The store thread keeps the count of hashes by cost from now on.
        let writer = store.accounts(AuthLink {
            done: shared.done.clone(),
            wake: shared.wake.clone(),
            costs,
            unknown_cost: dummy.cost.clone(),
        });
        for i in 0..workers {
            let (conn, access) = open(db)?;
            let slot: Slot = Arc::new(Mutex::new(Some(conn)));
            slots.push(slot.clone());
            let worker = Worker {
                index: i,
                store: slot,
                read_only: access != Access::ReadWrite || !store.writable(),
                cost: config.bcrypt_cost,
                dummy: dummy.clone(),
                writer: writer.clone(),
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
            slots,
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
        for slot in &self.slots {
            let conn = loop {
                match slot.try_lock() {
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
/// the one most accounts have (see `costs`), which the store thread may change
/// while the server runs.
#[derive(Clone)]
struct Dummy {
    /// Salt and hash of a cheap hash, without its `$2b$NN$` prefix.
    rest: Arc<str>,
    /// The cost to label it with, published by the store thread.
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
    store: Slot,
    /// The database cannot be written: registrations are refused before
    /// anything is hashed.
    read_only: bool,
    cost: u32,
    dummy: Dummy,
    /// Where new accounts and re-hashed passwords go to be stored.
    writer: AccountWriter,
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
pub(crate) struct CpuClock(#[cfg(target_os = "linux")] libc::clockid_t);

impl CpuClock {
    /// The calling thread's clock.
    pub(crate) fn current() -> Option<CpuClock> {
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
    pub(crate) fn read(self) -> Option<Duration> {
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
    /// at the configured cost, and hands it to the store thread. A failure only
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
        if !self.writer.send(write) {
            log::debug!("the store thread has stopped: a re-hash is not stored");
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
            AuthRequest::ChangePassword { name, current, new } => {
                self.change_password(name, current, new, task)
            }
        };
        result.unwrap_or_else(|e| {
            crate::error_every!(crate::log_every::PERIOD, "account store error: {e}");
            Some(Answer::new(AuthOutcome::Unavailable, false))
        })
    }

    /// `None` when the store thread answers (or another worker running the same
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
        let created_at = crate::store::writer::unix_now();
        let write = Write::Register(NewAccount {
            conn: task.job.conn,
            name: name.to_owned(),
            hash,
            created_at,
            cancel: cancel.clone(),
            #[cfg(test)]
            panic: password == tests::PANIC_IN_TRANSACTION,
        });
        if !self.writer.send(write) {
            return Err(closed());
        }
        // The store thread answers, as soon as the account is stored (or not):
        // this worker may be kept off the CPU by then.
        Ok(None)
    }

    /// `/passwd`: checks `current` as a login would, then hashes `new` and
    /// hands the change to the store thread, which answers. A wrong
    /// current password is answered here, as a failed login of a known
    /// account.
    fn change_password(
        &self,
        name: &str,
        current: &str,
        new: &str,
        task: &Task,
    ) -> Result<Option<Answer>, Error> {
        if new.len() > MAX_PASSWORD || self.read_only {
            return Ok(Some(Answer::new(AuthOutcome::Unavailable, false)));
        }
        let Some((shown, hash)) = self.find(name)? else {
            // Deleted meanwhile.
            return Ok(Some(Answer::new(AuthOutcome::Unavailable, false)));
        };
        let matches = bcrypt::verify(current, &hash).unwrap_or(false);
        if !matches || current.len() > MAX_PASSWORD {
            return Ok(Some(Answer::new(AuthOutcome::WrongCredentials, true)));
        }
        let new_hash = bcrypt::hash(new, self.cost)
            .map_err(|e| Error::new(ErrorKind::Database, format!("bcrypt: {e}")))?;
        let cancel = &task.job.cancel;
        if cancel.load(Ordering::Relaxed) {
            return Ok(Some(Answer::new(AuthOutcome::Unavailable, false)));
        }
        if !task.claim(self.index) {
            return Ok(None);
        }
        let write = Write::Password(PasswordChange {
            conn: task.job.conn,
            name: shown,
            old: hash,
            new: new_hash,
            cancel: cancel.clone(),
        });
        if !self.writer.send(write) {
            return Err(closed());
        }
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
        let slot = self.lock();
        let conn = slot.as_ref().ok_or_else(closed)?;
        accounts::find(conn, name)
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

/// The pool closed the worker's connection: it is shutting down.
fn closed() -> Error {
    Error::new(ErrorKind::Database, "the account store is closed")
}

#[cfg(test)]
mod tests;
