//! The one store thread, which makes every write (and the reads that must
//! see them), and [`Store`], the loop's handle on it.
//!
//! Everything goes down one channel, in order: the loop's [`Op`]s, the
//! auth workers' registrations and re-hashed passwords, and barriers. The
//! thread takes whatever is waiting (at most [`MAX_BATCH`]), carries it out
//! in ONE transaction, commits (one fsync for the batch: group commit), and
//! only then answers: [`Answer`]s on the store's channel, registrations on
//! the auth pool's `Done` channel, each followed by one call of its wake
//! closure. A read in a batch ([`Op::Load`], [`Op::History`]) sees every
//! write sent before it. A batch of writes nobody waits for (messages,
//! cursors, rooms) first waits up to [`LINGER`] for more: on a disk whose
//! fsyncs stall the whole machine (this VM's), one commit per message or
//! two cost every user's latency; anything somebody waits for ends the
//! wait at once.
//!
//! Failures stay small: an op that fails is logged and skipped (a read
//! answers `Err`), the others of its batch go on; a batch whose commit
//! fails, or that panics, stores nothing, answers every read `Err` and
//! every registration `Unavailable`, and the thread serves the next one.
//! On a database it cannot write (opened read-only) the thread still
//! answers reads, and drops writes with a warning.
//!
//! When idle, and at least every `retention.every` anyway, the thread
//! deletes messages older than `--history-days`, a small batch per
//! transaction, so that the loop's writes never wait long behind it.
//!
//! Memory: the channel is unbounded (sending never blocks the loop), and
//! bounded by [`StoreConfig::max_queue`]: the loop's ops count their bytes
//! while they wait, and past the bound [`Store::send`] refuses a message
//! (stored nowhere, the loop delivers it all the same) instead of queueing
//! it. Other ops are always taken: they are bounded by what connections do
//! (one load per login, one `/history` per command under flood control).

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, Sender};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use rusqlite::{Connection, TransactionBehavior};

use super::accounts::{self, AuthLink, Stored, Write};
use super::ops::{Answer, Change, Op, Reply, Snapshot};
use super::{
    Access, Error, ErrorKind, files, messages, migrate, moderation, open, private_files, rooms,
};

/// The most commands carried out in one transaction.
pub const MAX_BATCH: usize = 1024;

/// How long a batch of writes nobody waits for may wait for more before it
/// is committed: messages are on disk within about this (inside the
/// protocol's second, so a crash loses at most this much), and a busy
/// server commits them about four times a second, whatever the rate.
pub const LINGER: Duration = Duration::from_millis(250);

/// How often a lingering batch looks for a command somebody waits for: the
/// most such a command waits behind it.
const LINGER_POLL: Duration = Duration::from_millis(5);

/// The newest messages of each room the snapshot holds, by default (the
/// loop's ring).
pub const DEFAULT_RING: usize = 256;

/// How often the thread reads what the admin subcommands changed (the
/// `changes` table) while the server runs.
pub const CHANGES_EVERY: Duration = Duration::from_secs(2);

/// How long an expiry pass waits for another program's write lock before
/// it leaves the work to the next pass.
const EXPIRY_BUSY: Duration = Duration::from_millis(50);

/// Rows of `changes` are kept this long (seconds), then deleted.
const CHANGES_KEPT: i64 = 86_400;

/// Called after answers are queued: wakes the loop.
pub type Wake = Arc<dyn Fn() + Send + Sync>;

/// Now, in Unix seconds (injectable for tests).
pub type Clock = Arc<dyn Fn() -> i64 + Send + Sync>;

/// How expiring old messages is paced.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Retention {
    /// Between two expiry transactions, when the last one found little.
    pub every: Duration,
    /// Between two expiry transactions while there is a backlog (the last
    /// one deleted a full batch).
    pub again: Duration,
    /// The most messages deleted in one transaction.
    pub batch: usize,
}

impl Default for Retention {
    fn default() -> Retention {
        Retention {
            every: Duration::from_secs(20),
            again: Duration::from_secs(1),
            batch: 500,
        }
    }
}

/// Settings of the store.
#[derive(Clone)]
pub struct StoreConfig {
    pub db: PathBuf,
    /// `--history-days`: messages older than this are deleted (private
    /// messages still waiting for their recipient too: the operator's
    /// promise is N days of history); `None` keeps them for ever.
    pub history_days: Option<u32>,
    /// How many of each room's newest messages the snapshot holds.
    pub ring: usize,
    /// Bytes of messages that may wait for the thread (see the module
    /// documentation).
    pub max_queue: usize,
    pub retention: Retention,
    pub clock: Clock,
    /// Where uploaded files' bytes are: those of expired files are removed
    /// there, and a file is recorded only if its bytes are there. `None`:
    /// rows only.
    pub blobs: Option<crate::files::Blobs>,
}

impl StoreConfig {
    /// The defaults: 90 days of history, a ring of [`DEFAULT_RING`], 64 MiB
    /// of queue, the system clock.
    pub fn new(db: impl Into<PathBuf>) -> StoreConfig {
        StoreConfig {
            db: db.into(),
            history_days: Some(90),
            ring: DEFAULT_RING,
            max_queue: 64 << 20,
            retention: Retention::default(),
            clock: Arc::new(unix_now),
            blobs: None,
        }
    }
}

impl std::fmt::Debug for StoreConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StoreConfig")
            .field("db", &self.db)
            .field("history_days", &self.history_days)
            .field("ring", &self.ring)
            .field("max_queue", &self.max_queue)
            .field("retention", &self.retention)
            .finish_non_exhaustive()
    }
}

/// The system clock in Unix seconds.
pub fn unix_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

/// Why [`Store::send`] did not take an op (it is dropped).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Refused {
    /// Too many bytes of messages wait already: the disk is behind.
    Full,
    /// The store thread has stopped.
    Closed,
}

/// What goes down the channel.
pub(crate) enum Cmd {
    /// An op of the loop, and the bytes it counts against `max_queue`.
    Op {
        op: Op,
        cost: usize,
    },
    Account(Write),
    /// Installs where account writes are answered (sent by the auth pool
    /// before its first write).
    Link(AuthLink),
    /// Answered `true` once everything sent before it is committed
    /// (`false`: its batch failed).
    Barrier(Sender<bool>),
    /// Commit what is waiting, close the connection, stop.
    Close,
}

/// Where the auth workers send accounts to be stored.
#[derive(Clone)]
pub(crate) struct AccountWriter(Sender<Cmd>);

impl AccountWriter {
    /// False when the store thread has stopped.
    pub fn send(&self, write: Write) -> bool {
        self.0.send(Cmd::Account(write)).is_ok()
    }
}

/// The running store thread.
pub struct Store {
    cmds: Sender<Cmd>,
    answers: Receiver<Answer>,
    changes: Receiver<Change>,
    /// Bytes of ops waiting in the channel.
    queued: Arc<AtomicUsize>,
    max_queue: usize,
    thread: Option<JoinHandle<()>>,
    db: PathBuf,
    access: Access,
}

impl Store {
    /// Opens the database (creating it owner-only, or migrating it), reads
    /// the [`Snapshot`] and starts the thread. `wake` is called after
    /// answers are queued.
    pub fn start(config: StoreConfig, wake: Wake) -> Result<(Store, Snapshot), Error> {
        private_files(&config.db);
        let (conn, access) = open(&config.db)?;
        migrate(&conn, access, &config.db)?;
        match access {
            Access::ReadWrite => {}
            Access::ReadOnly => log::warn!(
                "database {} is read-only: existing users can log in, \
                 registrations will be refused and nothing will be stored",
                config.db.display()
            ),
            Access::Immutable => log::warn!(
                "database {} and its directory are read-only: opened as an \
                 immutable snapshot (SQLite cannot otherwise read a WAL \
                 database where it cannot create the -wal and -shm files); \
                 existing users can log in, registrations will be refused, \
                 nothing will be stored, and changes other programs make to \
                 it will not be seen",
                config.db.display()
            ),
        }
        if access == Access::ReadWrite {
            match rooms::drop_empty(&conn) {
                Ok(0) => {}
                Ok(n) => log::info!("{n} rooms left empty by deleted accounts were deleted"),
                Err(e) => log::warn!("cannot delete rooms left empty: {e}"),
            }
        }
        if access == Access::ReadWrite
            && let Some(blobs) = &config.blobs
        {
            sweep_files(&conn, blobs);
        }
        let snapshot = rooms::snapshot(&conn, config.ring)?;
        let store = Store::spawn(conn, access, &config, snapshot.last_change, wake)?;
        Ok((store, snapshot))
    }

    /// Starts the thread on an open, migrated connection.
    pub(crate) fn spawn(
        conn: Connection,
        access: Access,
        config: &StoreConfig,
        last_change: i64,
        wake: Wake,
    ) -> Result<Store, Error> {
        let (cmd_tx, cmd_rx) = mpsc::channel();
        let (answer_tx, answer_rx) = mpsc::channel();
        let (change_tx, change_rx) = mpsc::channel();
        let queued = Arc::new(AtomicUsize::new(0));
        let writer = Writer {
            conn: Some(conn),
            writable: access == Access::ReadWrite,
            answers: answer_tx,
            changes: change_tx,
            last_change,
            wake,
            link: None,
            queued: queued.clone(),
            history_days: config.history_days,
            retention: config.retention,
            clock: config.clock.clone(),
            failed: false,
            blobs: config.blobs.clone(),
        };
        let thread = std::thread::Builder::new()
            .name("store".into())
            .spawn(move || writer.run(&cmd_rx))
            .map_err(|e| Error::new(ErrorKind::Thread, e.to_string()))?;
        Ok(Store {
            cmds: cmd_tx,
            answers: answer_rx,
            changes: change_rx,
            queued,
            max_queue: config.max_queue,
            thread: Some(thread),
            db: config.db.clone(),
            access,
        })
    }

    /// Queues an op; never blocks. A message is refused when `max_queue`
    /// bytes wait already; anything is refused once the thread has stopped.
    pub fn send(&self, op: Op) -> Result<(), Refused> {
        let cost = cost(&op);
        if matches!(op, Op::Message { .. })
            && self.queued.load(Ordering::Relaxed).saturating_add(cost) > self.max_queue
        {
            crate::warn_every!(
                crate::log_every::PERIOD,
                "the database is behind ({} bytes waiting): a message is not stored",
                self.queued.load(Ordering::Relaxed)
            );
            return Err(Refused::Full);
        }
        self.queued.fetch_add(cost, Ordering::Relaxed);
        self.cmds.send(Cmd::Op { op, cost }).map_err(|_| {
            self.queued.fetch_sub(cost, Ordering::Relaxed);
            Refused::Closed
        })
    }

    /// The next answer, if any.
    pub fn try_recv(&self) -> Option<Answer> {
        self.answers.try_recv().ok()
    }

    /// The next change an operator made with the admin subcommands, if any
    /// (read every [`CHANGES_EVERY`]; the loop is woken for them).
    pub fn try_change(&self) -> Option<Change> {
        self.changes.try_recv().ok()
    }

    /// Waits up to `timeout` until everything sent so far is committed;
    /// false if it is not (timed out, or a batch failed since the last
    /// flush: logged).
    pub fn flush(&self, timeout: Duration) -> bool {
        let (tx, rx) = mpsc::channel();
        if self.cmds.send(Cmd::Barrier(tx)).is_err() {
            return false;
        }
        rx.recv_timeout(timeout).unwrap_or(false)
    }

    /// Commits what is waiting and closes the database (the last
    /// connection closed checkpoints the write-ahead log into the file),
    /// waiting up to `timeout`; false if the thread had not finished by
    /// then (the next start recovers from the log).
    pub fn shutdown(mut self, timeout: Duration) -> bool {
        let _ = self.cmds.send(Cmd::Close);
        let Some(thread) = self.thread.take() else {
            return true;
        };
        let deadline = Instant::now() + timeout;
        while !thread.is_finished() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(1));
        }
        if !thread.is_finished() {
            log::warn!(
                "the store thread has not finished writing after {timeout:?}; \
                 the next start recovers from the write-ahead log"
            );
            return false;
        }
        if thread.join().is_err() {
            log::error!("the store thread panicked");
        }
        true
    }

    /// The database file.
    pub fn db(&self) -> &Path {
        &self.db
    }

    /// Whether the store can write (registrations are refused otherwise).
    pub fn writable(&self) -> bool {
        self.access == Access::ReadWrite
    }

    /// Where the auth pool's writes go; `link` says where they are
    /// answered, and is installed before any of them is carried out.
    pub(crate) fn accounts(&self, link: AuthLink) -> AccountWriter {
        let _ = self.cmds.send(Cmd::Link(link));
        AccountWriter(self.cmds.clone())
    }
}

impl Drop for Store {
    /// Dropped without [`Store::shutdown`]: the thread still commits what
    /// is waiting and stops, unwaited for.
    fn drop(&mut self) {
        if self.thread.is_some() {
            let _ = self.cmds.send(Cmd::Close);
        }
    }
}

/// What an op weighs in the queue: its text and names, and a little for
/// the rest.
fn cost(op: &Op) -> usize {
    const BASE: usize = 128;
    BASE + match op {
        Op::Message { message: m, .. } => {
            m.text.len()
                + m.sender.len()
                + m.room.as_ref().map_or(0, String::len)
                + m.recipient.as_ref().map_or(0, String::len)
        }
        Op::Topic { topic, .. } => topic.as_ref().map_or(0, String::len),
        Op::Seen { seen, .. } => seen.iter().map(|(r, _)| r.len() + 16).sum(),
        _ => 0,
    }
}

/// What became of one command of a batch.
enum Outcome {
    /// A write done (or skipped, logged), or a command with no answer.
    Done,
    Reply(Reply),
    Stored(Stored),
}

/// The thread's state.
pub(crate) struct Writer {
    /// `None` once closed.
    pub(crate) conn: Option<Connection>,
    /// False on a read-only database: writes are dropped, reads go on.
    pub(crate) writable: bool,
    pub(crate) answers: Sender<Answer>,
    /// Where what the admin subcommands changed is reported.
    pub(crate) changes: Sender<Change>,
    /// The newest row of `changes` reported.
    pub(crate) last_change: i64,
    pub(crate) wake: Wake,
    pub(crate) link: Option<AuthLink>,
    pub(crate) queued: Arc<AtomicUsize>,
    pub(crate) history_days: Option<u32>,
    pub(crate) retention: Retention,
    pub(crate) clock: Clock,
    /// A batch failed since the last barrier: the next one answers false.
    pub(crate) failed: bool,
    pub(crate) blobs: Option<crate::files::Blobs>,
}

impl Writer {
    pub(crate) fn run(mut self, cmds: &Receiver<Cmd>) {
        // The first pass soon after start: what expired while the server
        // was down (messages, files) goes at once, not 20 s later.
        let mut next_expiry = self.writable.then(|| Instant::now() + self.retention.again);
        let mut next_changes = Instant::now() + CHANGES_EVERY;
        loop {
            let due = next_expiry.map_or(next_changes, |at| at.min(next_changes));
            let first = match cmds.recv_timeout(due.saturating_duration_since(Instant::now())) {
                Ok(cmd) => Some(cmd),
                Err(RecvTimeoutError::Timeout) => None,
                Err(RecvTimeoutError::Disconnected) => break,
            };
            if let Some(first) = first {
                let batch = self.gather(first, cmds);
                if self.batch(batch) {
                    break;
                }
            }
            // Due even while the loop keeps the thread busy: one small
            // read or transaction between batches.
            if Instant::now() >= next_changes {
                self.read_changes();
                next_changes = Instant::now() + CHANGES_EVERY;
            }
            if let Some(at) = next_expiry
                && Instant::now() >= at
            {
                let full = self.expire_once() >= self.retention.batch;
                let wait = if full {
                    self.retention.again
                } else {
                    self.retention.every
                };
                next_expiry = Some(Instant::now() + wait);
            }
        }
        self.close();
    }

    /// Reports what the admin subcommands changed since the last look
    /// (one read of an index when nothing did) and wakes the loop for it.
    fn read_changes(&mut self) {
        let Some(conn) = self.conn.as_ref() else {
            return;
        };
        match moderation::changes_after(conn, self.last_change) {
            Ok((changes, last)) => {
                self.last_change = last;
                if changes.is_empty() {
                    return;
                }
                for change in changes {
                    if self.changes.send(change).is_err() {
                        return;
                    }
                }
                (self.wake)();
            }
            Err(e) => crate::warn_every!(
                crate::log_every::PERIOD,
                "cannot read what the admin commands changed: {e}"
            ),
        }
    }

    /// Everything waiting after `first`, at most [`MAX_BATCH`]. A batch of
    /// writes nobody waits for (messages, cursors, rooms) also waits up to
    /// [`LINGER`] for more, so that a busy room costs one commit (one
    /// fsync) per few dozen messages instead of one per message or two;
    /// anything somebody waits for (a login's read, `/history`, a
    /// registration, a flush) ends the wait at once.
    fn gather(&self, first: Cmd, cmds: &Receiver<Cmd>) -> Vec<Cmd> {
        let mut lazy = is_lazy(&first);
        let deadline = Instant::now() + LINGER;
        let mut batch = vec![first];
        while batch.len() < MAX_BATCH {
            match cmds.try_recv() {
                Ok(cmd) => {
                    lazy &= is_lazy(&cmd);
                    batch.push(cmd);
                }
                // While lingering the thread sleeps rather than waiting on
                // the channel: a waiting receiver is woken by every send,
                // which at 2,000 messages a second costs the loop a futex
                // call and this thread a switch per message.
                Err(_) if lazy => {
                    let left = deadline.saturating_duration_since(Instant::now());
                    if left.is_zero() {
                        break;
                    }
                    std::thread::sleep(left.min(LINGER_POLL));
                }
                Err(_) => break,
            }
        }
        batch
    }

    fn close(&mut self) {
        if let Some(conn) = self.conn.take()
            && let Err((_, e)) = conn.close()
        {
            log::warn!("closing the database: {e}");
        }
    }

    /// Carries out a batch and answers it; true when it held [`Cmd::Close`].
    pub(crate) fn batch(&mut self, batch: Vec<Cmd>) -> bool {
        let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| self.commit(&batch)))
            .unwrap_or_else(|_| {
                log::error!(
                    "store thread panicked; nothing of its batch of {} was stored",
                    batch.len()
                );
                Err(Error::new(
                    ErrorKind::Database,
                    "the store failed (a bug: see the log)",
                ))
            });
        let (outcomes, committed) = match result {
            Ok(outcomes) => (outcomes, true),
            Err(e) => {
                crate::error_every!(crate::log_every::PERIOD, "database error: {e}");
                self.failed = true;
                (batch.iter().map(|cmd| failed(cmd, &e)).collect(), false)
            }
        };
        let (mut answered, mut done, mut closing) = (false, false, false);
        for (cmd, outcome) in batch.into_iter().zip(outcomes) {
            match (cmd, outcome) {
                (Cmd::Op { op, cost }, outcome) => {
                    self.queued.fetch_sub(cost, Ordering::Relaxed);
                    if let (Some(conn), Outcome::Reply(reply)) = (op.asker(), outcome) {
                        // The loop has gone only at shutdown.
                        answered |= self.answers.send(Answer { conn, reply }).is_ok();
                    }
                }
                (Cmd::Account(write), outcome) => {
                    let stored = match outcome {
                        Outcome::Stored(stored) => stored,
                        _ => Stored::Failed,
                    };
                    if let Some(link) = &mut self.link
                        && let Some(answer) = link.settle(write, stored)
                    {
                        done |= link.done.send(answer).is_ok();
                    }
                }
                (Cmd::Link(link), _) => self.link = Some(link),
                (Cmd::Barrier(tx), _) => {
                    let _ = tx.send(committed && !self.failed);
                    self.failed = false;
                }
                (Cmd::Close, _) => closing = true,
            }
        }
        if answered {
            (self.wake)();
        }
        if let Some(link) = &self.link {
            if done {
                (link.wake)();
            }
            link.publish_unknown_cost();
        }
        closing
    }

    /// Carries out the batch in one transaction: everything in it is
    /// durable when this returns `Ok`, and nothing is when it fails or
    /// panics (the transaction rolls back as it is dropped).
    fn commit(&mut self, batch: &[Cmd]) -> Result<Vec<Outcome>, Error> {
        let writable = self.writable;
        let now = (self.clock)();
        let blobs = self.blobs.as_ref();
        let conn = self
            .conn
            .as_mut()
            .ok_or_else(|| Error::new(ErrorKind::Database, "the database is closed"))?;
        // Nothing to read or write: no transaction (a barrier alone).
        if !batch
            .iter()
            .any(|c| matches!(c, Cmd::Op { .. } | Cmd::Account(_)))
        {
            return Ok(batch.iter().map(|_| Outcome::Done).collect());
        }
        // IMMEDIATE takes the write lock up front, so another program
        // writing makes us wait (busy_timeout) instead of failing with
        // SQLITE_BUSY; a database we cannot write is only read.
        let behavior = if writable {
            TransactionBehavior::Immediate
        } else {
            TransactionBehavior::Deferred
        };
        let e = match conn.transaction_with_behavior(behavior) {
            Ok(tx) => return apply(tx, batch, writable, now, blobs),
            Err(e) => e,
        };
        if !is_locked(&e) {
            return Err(e.into());
        }
        // Another program holds the write lock past the busy timeout: this
        // batch's changes are lost (logged), but its reads are still
        // answered from what is on disk (WAL lets readers in), so logins
        // and `/history` go on while the lock lasts.
        crate::error_every!(
            crate::log_every::PERIOD,
            "database is locked by another program: the changes of a batch of {} \
             are not stored ({e})",
            batch.len()
        );
        self.failed = true;
        let tx = conn.transaction_with_behavior(TransactionBehavior::Deferred)?;
        apply(tx, batch, false, now, blobs)
    }

    /// Deletes one small batch of expired messages (and the expired tokens,
    /// and old rows of `changes`); how many messages.
    fn expire_once(&mut self) -> usize {
        // Rows of `changes` not yet reported to the loop are kept.
        let reported = self.last_change;
        let Some(conn) = self.conn.as_mut() else {
            return 0;
        };
        let now = (self.clock)();
        let days = self.history_days;
        let batch = self.retention.batch;
        // Expiry can wait for a later pass: it never waits for another
        // program's lock as long as a login's read or a message would.
        if let Err(e) = conn.busy_timeout(EXPIRY_BUSY) {
            log::debug!("busy timeout: {e}");
        }
        let result = conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(Error::from)
            .and_then(|tx| {
                moderation::expire_tokens(&tx, now)?;
                moderation::prune_changes(&tx, now.saturating_sub(CHANGES_KEPT), reported)?;
                let (n, expired) = match days {
                    Some(days) => {
                        let cutoff = now.saturating_sub(i64::from(days) * 86_400);
                        (
                            messages::expire(&tx, cutoff, batch)?,
                            files::expire(&tx, cutoff, batch)?,
                        )
                    }
                    None => (0, files::Expired::default()),
                };
                tx.commit()?;
                Ok((n, expired))
            });
        if let Err(e) = conn.busy_timeout(super::BUSY_TIMEOUT) {
            log::warn!("cannot restore the busy timeout: {e}");
        }
        match result {
            Ok((n, expired)) => {
                if n > 0 {
                    log::debug!("{n} messages older than {days:?} days deleted");
                }
                let files = expired.freed.len();
                self.files_expired(expired);
                n.max(files)
            }
            Err(e) => {
                crate::warn_every!(crate::log_every::PERIOD, "cannot delete old messages: {e}");
                0
            }
        }
    }
}

impl Writer {
    /// After expired files' rows are gone: their bytes no row points at
    /// are removed, and the loop is told whose quotas shrank.
    fn files_expired(&mut self, expired: files::Expired) {
        if expired.freed.is_empty() {
            return;
        }
        log::info!(
            "{} files older than the history deleted",
            expired.freed.len()
        );
        if let Some(blobs) = &self.blobs {
            for sha in &expired.orphans {
                if let Err(e) = blobs.remove(sha) {
                    crate::warn_every!(
                        crate::log_every::PERIOD,
                        "cannot remove an expired file's bytes: {e}"
                    );
                }
            }
        }
        if self
            .changes
            .send(Change::FilesExpired(expired.freed))
            .is_ok()
        {
            (self.wake)();
        }
    }
}

/// Removes, at start, the stored files no row points at (no upload is
/// under way yet): what a stop or a failed write left between storing an
/// upload's bytes and recording them.
fn sweep_files(conn: &Connection, blobs: &crate::files::Blobs) {
    let stored = match blobs.all() {
        Ok(stored) => stored,
        Err(e) => return log::warn!("cannot list the stored files: {e}"),
    };
    match files::unreferenced(conn, &stored) {
        Ok(orphans) => {
            for sha in &orphans {
                if let Err(e) = blobs.remove(sha) {
                    log::warn!("cannot remove a file no upload recorded: {e}");
                }
            }
            if !orphans.is_empty() {
                log::info!("removed {} stored files no upload recorded", orphans.len());
            }
        }
        Err(e) => log::warn!("cannot check the stored files: {e}"),
    }
}

/// What a command comes to when it could not be carried out.
fn failed(cmd: &Cmd, e: &Error) -> Outcome {
    match cmd {
        Cmd::Op { op, .. } => match op.failed_reply(|| e.clone()) {
            Some((_, reply)) => Outcome::Reply(reply),
            None => Outcome::Done,
        },
        Cmd::Account(_) => Outcome::Stored(Stored::Failed),
        _ => Outcome::Done,
    }
}

/// Carries out `batch` in `tx` and commits; see [`Writer::commit`].
fn apply(
    tx: rusqlite::Transaction<'_>,
    batch: &[Cmd],
    writable: bool,
    now: i64,
    blobs: Option<&crate::files::Blobs>,
) -> Result<Vec<Outcome>, Error> {
    let mut outcomes = Vec::with_capacity(batch.len());
    // Each room's count is raised once for the batch.
    let mut counts: Vec<(&str, u64)> = Vec::new();
    for cmd in batch {
        match cmd {
            Cmd::Op {
                op:
                    Op::Message {
                        message:
                            super::ops::Message {
                                room: Some(room),
                                n,
                                ..
                            },
                        ..
                    },
                ..
            } => match counts.iter_mut().find(|(r, _)| *r == room.as_str()) {
                Some((_, max)) => *max = (*max).max(*n),
                None => counts.push((room.as_str(), *n)),
            },
            // A room deleted (and perhaps made again) in the batch starts
            // its count afresh.
            Cmd::Op {
                op: Op::DeleteRoom { name },
                ..
            } => counts.retain(|(r, _)| *r != name.as_str()),
            _ => {}
        }
        let outcome = match cmd {
            Cmd::Op { op, .. } => carry_out(&tx, op, writable, now, blobs),
            Cmd::Account(_) if !writable => {
                crate::warn_every!(
                    crate::log_every::PERIOD,
                    "registration refused: the database is read-only"
                );
                Ok(Outcome::Stored(Stored::Failed))
            }
            Cmd::Account(write) => accounts::apply(&tx, write).map(Outcome::Stored),
            _ => Ok(Outcome::Done),
        };
        // SQLite rolled the whole transaction back (disk full, I/O
        // error): the batch fails.
        if tx.is_autocommit() {
            return Err(outcome.err().unwrap_or_else(|| {
                Error::new(ErrorKind::Database, "the transaction was rolled back")
            }));
        }
        outcomes.push(match outcome {
            Ok(outcome) => outcome,
            // Only this statement was undone: the rest of the batch goes on.
            Err(e) => {
                crate::error_every!(crate::log_every::PERIOD, "database error: {e}");
                failed(cmd, &e)
            }
        });
    }
    if writable {
        for (room, n) in counts {
            if let Err(e) = messages::raise_count(&tx, room, n) {
                crate::error_every!(crate::log_every::PERIOD, "database error: {e}");
            }
        }
    }
    tx.commit()?;
    Ok(outcomes)
}

/// A revocation done: answered if somebody waits for it.
fn revoked(answered: bool) -> Outcome {
    if answered {
        Outcome::Reply(Reply::Revoked(Ok(())))
    } else {
        Outcome::Done
    }
}

/// A command nobody waits for: it may wait [`LINGER`] for company.
fn is_lazy(cmd: &Cmd) -> bool {
    match cmd {
        // Tokens too: a revoked token must be gone at once.
        Cmd::Op { op, .. } => !matches!(
            op,
            Op::Load { .. }
                | Op::History { .. }
                | Op::CreateToken { .. }
                | Op::CheckToken { .. }
                | Op::RevokeToken { .. }
                | Op::RevokeTokens { .. }
                | Op::RecordFile { .. }
                | Op::FindFile { .. }
        ),
        _ => false,
    }
}

/// SQLite's "busy" or "locked": someone else holds the lock.
fn is_locked(e: &rusqlite::Error) -> bool {
    matches!(
        e.sqlite_error_code(),
        Some(rusqlite::ErrorCode::DatabaseBusy | rusqlite::ErrorCode::DatabaseLocked)
    )
}

/// One op, inside the batch's transaction.
fn carry_out(
    conn: &Connection,
    op: &Op,
    writable: bool,
    now: i64,
    blobs: Option<&crate::files::Blobs>,
) -> Result<Outcome, Error> {
    match op {
        Op::Load { account, .. } => {
            let state = messages::load(conn, account);
            return Ok(Outcome::Reply(Reply::Loaded(state)));
        }
        Op::History {
            account,
            of,
            limit,
            before,
            ..
        } => {
            let found = messages::history(conn, account, of, *limit, *before);
            return Ok(Outcome::Reply(Reply::History(found)));
        }
        Op::CheckToken { hash, now, .. } => {
            let found = moderation::check_token(conn, hash, *now);
            return Ok(Outcome::Reply(Reply::TokenAccount(found)));
        }
        Op::FindFile { id, .. } => {
            return Ok(Outcome::Reply(Reply::File(files::find(conn, id))));
        }
        Op::RecordFile { .. } if !writable => {
            let e = Error::new(ErrorKind::ReadOnly, "the database is read-only");
            return Ok(Outcome::Reply(Reply::FileRecorded(Err(e))));
        }
        Op::RecordFile { row, .. } => {
            // Its bytes may have been removed as an expired file's since
            // the upload found them there (the same bytes): not recorded
            // then, rather than recorded without them.
            if let Some(blobs) = blobs
                && !blobs.path_of(&row.sha).exists()
            {
                let e = Error::new(ErrorKind::Database, "the file's bytes are gone");
                return Ok(Outcome::Reply(Reply::FileRecorded(Err(e))));
            }
            let recorded = files::insert(conn, row);
            return Ok(Outcome::Reply(Reply::FileRecorded(recorded)));
        }
        // A revocation someone waits for must not be dropped silently.
        Op::RevokeToken { conn: Some(_), .. } | Op::RevokeTokens { conn: Some(_), .. }
            if !writable =>
        {
            let e = Error::new(ErrorKind::ReadOnly, "the database cannot be written");
            return Ok(Outcome::Reply(Reply::Revoked(Err(e))));
        }
        Op::RevokeToken { conn: who, hash } if writable => {
            moderation::revoke_token(conn, hash)?;
            return Ok(revoked(who.is_some()));
        }
        Op::RevokeTokens { conn: who, account } if writable => {
            moderation::revoke_tokens(conn, account)?;
            return Ok(revoked(who.is_some()));
        }
        Op::CreateToken { .. } if !writable => {
            let e = Error::new(ErrorKind::ReadOnly, "the database is read-only");
            return Ok(Outcome::Reply(Reply::TokenStored(Err(e))));
        }
        Op::CreateToken {
            account,
            hash,
            created_at,
            expires_at,
            ..
        } => {
            let stored = moderation::create_token(conn, account, hash, *created_at, *expires_at);
            return Ok(Outcome::Reply(Reply::TokenStored(stored)));
        }
        _ if !writable => {
            crate::warn_every!(
                crate::log_every::PERIOD,
                "the database is read-only: a change is not stored"
            );
            return Ok(Outcome::Done);
        }
        Op::Message { message, pending } => messages::insert(conn, message, *pending)?,
        Op::CreateRoom { name, owner, at } => rooms::create(conn, name, owner, *at)?,
        Op::DeleteRoom { name } => rooms::delete(conn, name)?,
        Op::Topic { room, topic, by } => rooms::topic(conn, room, topic.as_deref(), by)?,
        Op::Join {
            room,
            account,
            seen,
        } => rooms::join(conn, room, account, *seen, now)?,
        Op::Part { room, account } => rooms::part(conn, room, account)?,
        Op::Seen { account, seen } => rooms::seen(conn, account, seen, now)?,
        Op::Delivered { account, up_to } => messages::delivered(conn, account, *up_to)?,
        Op::RevokeToken { hash, .. } => moderation::revoke_token(conn, hash)?,
        Op::RevokeTokens { account, .. } => {
            moderation::revoke_tokens(conn, account)?;
        }
        Op::Operator {
            room,
            account,
            on,
            by,
            at,
        } => moderation::operator(conn, room, account, *on, by, *at)?,
        Op::Sanction { row, at } => moderation::sanction(conn, row, *at)?,
        Op::Lift {
            room,
            account,
            kind,
        } => moderation::lift(conn, room, account, *kind)?,
        Op::Forget { account } => moderation::forget(conn, account)?,
    }
    Ok(Outcome::Done)
}
