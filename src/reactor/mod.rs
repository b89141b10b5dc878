//! The event loop: every line of mio, and nothing of the protocol.
//!
//! One thread, one `mio::Poll`, the listeners, a `Slab` of connections
//! (socket, [`Transport`], [`Session`], [`Outbox`]), one `Waker` shared with
//! the auth workers, and the signal source. Sessions decide what to say; this module carries it out:
//! it appends to output buffers, writes them when sockets allow, routes
//! broadcasts and private messages, runs the timers and closes connections.
//!
//! Rules it keeps (see DESIGN.md):
//! - mio is edge-triggered, so reads, writes and accepts drain to
//!   `WouldBlock`; a connection cut short for fairness, or whose auth result
//!   just arrived, is put on the `again` list and read without a new event.
//! - Output is appended during a loop turn and written once at its end, so
//!   everything a connection got in one turn leaves in one `write`. WRITABLE
//!   interest is held only while bytes remain.
//! - Closing has two phases: during a turn a connection is only marked; it
//!   is removed after the turn's writes.
//! - Every auth job carries the connection's `ConnId`; a result whose serial
//!   no longer matches its slot is dropped.
//! - Accept errors never stop the loop: on EMFILE and friends accepting
//!   pauses and is retried on a timer or when a connection closes.
//! - Broadcast output is paced: every reader's output grows by the same
//!   bytes, so one token bucket (the [`Pacer`]) bounds how fast it may
//!   grow. Over the rate, reading input waits (senders are held back by TCP
//!   flow control) until the turn's output has been written. A burst from
//!   many senders at once is thus delivered in slices, and readers that keep
//!   reading are never cut off as slow consumers because of it. With many
//!   readers the room is smaller: together they may gain at most a quarter
//!   of `--max-total-output` at once.
//!
//! - The unsent output of all connections together is counted as it grows
//!   (each push) and shrinks (each flush and close), in the [`Ledger`];
//!   past `--max-total-output` the connections holding the most are cut
//!   off, each first handed what its socket takes at that moment.
//!
//! Files: this one has the server, its loop, timers, signals and shutdown;
//! `conn` the connection and the slab of them; `sockets` accepting, reading,
//! writing and closing sockets; `route` carrying out what sessions ask
//! (send, broadcast, auth jobs, closing) and the output bounds; `pacer` the
//! broadcast pacer; `ledger` the count of unsent output; `outbox` a
//! connection's bounded output buffer.

mod audit;
mod backlog;
mod conn;
mod crypto;
mod files;
mod ledger;
pub mod outbox;
mod pacer;
mod route;
mod sockets;

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap, VecDeque};
use std::io;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use log::{debug, info, warn};
use mio::net::TcpListener;
use mio::{Events, Interest, Poll, Token, Waker};

use crate::auth::{AuthConfig, AuthPool, Done};
use crate::chat::hub::{Hub, HubConfig};
use crate::chat::session::{Action, ConnId, Ctx, SessionConfig};
use crate::limits::{Cidr, LimitConfig, Limits};
use crate::store::{Store, StoreConfig};
use crate::transport::tls::{self, CertSource};
use crate::transport::{self as tp};
use backlog::{Backlog, Work};
use conn::{Closing, Conns};
use ledger::Ledger;
use pacer::Pacer;
pub use sockets::raise_fd_limit;
use sockets::{deregister, listen, listen_backlog};

#[cfg(doc)]
use crate::chat::session::Session;
#[cfg(doc)]
use crate::transport::Transport;
#[cfg(doc)]
use outbox::Outbox;

const WAKER: Token = Token(usize::MAX - 1);
const SIGNALS: Token = Token(usize::MAX - 2);
/// Signals whose default action would end the process, caught and ignored.
const IGNORED_SIGNALS: &[i32] = &[
    signal_hook::consts::SIGUSR1,
    signal_hook::consts::SIGUSR2,
    signal_hook::consts::SIGALRM,
    signal_hook::consts::SIGQUIT,
    signal_hook::consts::SIGVTALRM,
    signal_hook::consts::SIGIO,
    signal_hook::consts::SIGXCPU,
    signal_hook::consts::SIGXFSZ,
];
/// Listeners take the tokens below these, one each.
const LISTENER_BASE: usize = usize::MAX - 3;
const MAX_LISTENERS: usize = 64;
/// How often WebSocket connections are pinged.
const PING_EVERY: Duration = Duration::from_secs(30);

/// Bytes read per `read` call, into one buffer shared by all connections.
const READ_CHUNK: usize = 64 * 1024;
/// Reads per connection per turn before others get their go.
const READS_PER_TURN: usize = 16;
/// How long to wait before accepting again after EMFILE and the like.
const ACCEPT_RETRY: Duration = Duration::from_millis(100);
/// Readiness events taken from epoll per turn. Small enough that a turn
/// stays short when thousands of sockets are ready at once (a login storm):
/// 256 against 1,024 halved the p99 of a chat pair during 10,000 token
/// logins (BENCHMARKS.md, "Token logins"); a room's fan-out is unaffected
/// (its writes are made at the end of the turn, not per event).
const EVENTS_PER_POLL: usize = 256;
/// Jobs each files thread's queue holds: chunks of uploads (a read each,
/// 64 KiB at most) or reads of downloads; 4 MiB of uploads at most.
const FILES_QUEUE: usize = 64;
/// How long a closing connection may take to drain its last lines.
const LINGER: Duration = Duration::from_secs(5);
/// How often idle connections' output buffers are freed.
const RELEASE_EVERY: Duration = Duration::from_secs(1);
/// The most time a turn spends writing output that may wait.
const LAZY_SLICE: Duration = Duration::from_micros(150);
/// Slab slots swept for idle buffers per turn.
const SWEEP_STEP: usize = 256;
/// How long shutdown waits for output to drain.
const SHUTDOWN_FLUSH: Duration = Duration::from_secs(2);
/// How long shutdown waits for a password worker in the middle of a
/// database write before closing the account store without it.
const AUTH_SHUTDOWN: Duration = Duration::from_secs(2);
/// How long shutdown waits for the store thread to commit what the loop
/// sent, before the shutdown line and again before exit.
const STORE_SHUTDOWN: Duration = Duration::from_secs(5);
/// How fast every reader's output may grow, sustained, in output limits
/// (`--max-output`) a second: 64 MiB/s with the default 1 MiB. A chat room
/// is far below this (the fan-out benchmark, 10 M deliveries a second to
/// 100 readers, is about 6 MB/s each); a burst of many senders together is
/// not.
const BROADCAST_LIMITS_PER_SEC: f64 = 64.0;
const SHUTDOWN_LINE: &[u8] = b"* server shutting down\n";
const FULL_LINE: &[u8] = b"! server full\n";
/// Default bound of the password-check queue. Connections from outside the
/// exempt list can have at most `--max-pending-logins` (50) checks out, so
/// this bound is for the rest: local bots and tools logging in by the
/// hundred, or a server run with the pending limit off. A job is a few
/// hundred bytes; at cost 12 on two cores (about 8 checks a second) the
/// tail of a full queue would reach the login timeout, and the jobs of
/// connections that timed out are skipped, not hashed.
pub const DEFAULT_AUTH_QUEUE: usize = 1024;

/// Everything the server can be told at start-up.
#[derive(Clone, Debug)]
pub struct Config {
    /// Addresses to listen on (one port serves every kind of client).
    pub listen: Vec<SocketAddr>,
    pub db: PathBuf,
    /// `--history-days`: messages older than this are deleted; `None`
    /// keeps them for ever.
    pub history_days: Option<u32>,
    pub bcrypt_cost: u32,
    /// Lines per second per connection (burst twice that); `None` is off,
    /// for both buckets.
    pub rate: Option<u32>,
    /// Bytes of lines per second per connection; `None` is off.
    pub rate_bytes: Option<u32>,
    pub login_timeout: Duration,
    pub max_clients: usize,
    pub max_output: usize,
    /// Unsent output of all connections together past which those holding
    /// the most are cut off (`--max-total-output`).
    pub max_total_output: usize,
    pub max_line: usize,
    pub workers: usize,
    /// TLS workers (`--tls-workers`); 0: TLS work stays on the loop.
    pub tls_workers: usize,
    /// Password checks that may wait for a worker; `None` is off (bounded
    /// only by `max_clients`, one job per connection).
    pub max_auth_queue: Option<usize>,
    /// Per-source limits (`--max-per-ip` and friends).
    pub limits: LimitConfig,
    /// Where the TLS certificate comes from; `None` is `--tls off`.
    pub tls: Option<CertSource>,
    /// `--plaintext any`: plain text to every address, not only loopback.
    pub plaintext_any: bool,
    /// `--proxy-from`: peers whose PROXY headers and `X-Forwarded-For` are
    /// believed.
    pub proxy_from: Vec<Cidr>,
    /// `--allowed-origin`: WebSocket origins besides the server's own.
    pub allowed_origins: Vec<String>,
    /// Rooms, history and presence (`--history` and friends).
    pub hub: HubConfig,
    /// `--public-url`: where users reach the server, for the URLs of
    /// uploads (`https://chat.example.org`, no trailing `/`).
    pub public_url: Option<String>,
}

impl Default for Config {
    /// The flags' defaults (see `config`): one place for every default.
    fn default() -> Self {
        crate::config::Flags::default().to_config()
    }
}

/// Keeps large allocations (the output of readers that fell behind, from
/// 128 KiB up) mapped on their own, so that freeing one, when its reader
/// catches up or is cut off, gives the memory back at once. glibc would
/// otherwise raise its mmap threshold after the first such free and serve
/// those sizes from the heap, where freed memory stays resident until a
/// trim: measured under a `/who` flood of 1,500 users that never read,
/// that is a peak of about 430 MiB instead of 300-350 under the default
/// `--max-total-output` of 256 MiB. Growing a mapped buffer is an
/// `mremap`, without a copy.
fn pin_mmap_threshold() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only changes a tuning parameter of the allocator.
    if unsafe { libc::mallopt(libc::M_MMAP_THRESHOLD, 128 * 1024) } != 1 {
        debug!("mallopt(M_MMAP_THRESHOLD) failed");
    }
}

/// The scheduler slice the loop's thread asks for.
const LOOP_SLICE_NS: u64 = 100_000;

/// Asks the kernel to treat the calling thread (the loop's) as a task that
/// runs briefly and often: a fair-class slice of [`LOOP_SLICE_NS`] instead
/// of the default 0.75-3 ms. On Linux 6.12 and later (EEVDF), a woken task
/// with a shorter slice than the one running preempts it at once; without
/// that, a woken loop waited up to half a millisecond for the TLS worker
/// or the store thread to finish their slice (seen with `perf sched` during
/// a burst of 1,000 browsers), although those threads run at a lower
/// priority. The loop's share of the CPU does not change, nor its nice
/// value; kernels before 6.12 ignore the slice, and the loop runs as
/// before. Left alone under a real-time policy an operator chose.
fn ask_for_short_slices() {
    #[cfg(target_os = "linux")]
    {
        /// `struct sched_attr`, version 0 (include/uapi/linux/sched/types.h).
        #[repr(C)]
        struct SchedAttr {
            size: u32,
            sched_policy: u32,
            sched_flags: u64,
            sched_nice: i32,
            sched_priority: u32,
            sched_runtime: u64,
            sched_deadline: u64,
            sched_period: u64,
        }
        // SAFETY: sched_getscheduler and getpriority only read the calling
        // thread's settings; errno is the calling thread's.
        let (policy, nice) = unsafe {
            let policy = libc::sched_getscheduler(0);
            *libc::__errno_location() = 0;
            let nice = libc::getpriority(libc::PRIO_PROCESS, libc::gettid() as libc::id_t);
            let failed = nice == -1 && *libc::__errno_location() != 0;
            (policy, (!failed).then_some(nice))
        };
        let (libc::SCHED_OTHER, Some(nice)) = (policy, nice) else {
            return;
        };
        let attr = SchedAttr {
            size: std::mem::size_of::<SchedAttr>() as u32,
            sched_policy: libc::SCHED_OTHER as u32,
            sched_flags: 0,
            sched_nice: nice,
            sched_priority: 0,
            sched_runtime: LOOP_SLICE_NS,
            sched_deadline: 0,
            sched_period: 0,
        };
        // SAFETY: pid 0 is the calling thread; `attr` is a valid, fully
        // initialised sched_attr of the size it declares, and outlives the
        // call; the kernel only reads it.
        let r =
            unsafe { libc::syscall(libc::SYS_sched_setattr, 0, &attr as *const SchedAttr, 0u32) };
        if r == 0 {
            debug!(
                "the event loop asked for {} us slices (Linux 6.12 and later)",
                LOOP_SLICE_NS / 1000
            );
        } else {
            debug!(
                "the event loop keeps the default slice: {}",
                io::Error::last_os_error()
            );
        }
    }
}

/// Asks a running server to shut down as if it got SIGTERM.
#[derive(Clone)]
pub struct ShutdownHandle {
    flag: Arc<AtomicBool>,
    waker: Arc<Waker>,
}

impl ShutdownHandle {
    pub fn shutdown(&self) {
        self.flag.store(true, Ordering::SeqCst);
        if let Err(e) = self.waker.wake() {
            warn!("cannot wake the event loop for shutdown: {e}");
        }
    }
}

/// What every session handler is given besides its session: the settings,
/// the roster, and the vector its actions go to (always empty between
/// calls).
struct Chat {
    config: SessionConfig,
    hub: Hub,
    actions: Vec<Action>,
}

impl Chat {
    fn ctx(&mut self, now: Instant) -> Ctx<'_> {
        Ctx {
            now,
            wall: wall_clock(),
            config: &self.config,
            hub: &mut self.hub,
            actions: &mut self.actions,
        }
    }
}

/// Unix seconds now (the times messages are stored with).
fn wall_clock() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
}

/// A bound server, ready to [`run`](Server::run).
pub struct Server {
    poll: Poll,
    /// Empty once shutdown begins.
    listeners: Vec<TcpListener>,
    local_addrs: Vec<SocketAddr>,
    /// What every connection's transport shares (the TLS configuration is
    /// replaced on SIGHUP).
    transport: tp::Settings,
    /// The certificate's fingerprint, as logged.
    fingerprint: Option<String>,
    signals: Option<signal_hook_mio::v1_0::Signals>,
    waker: Arc<Waker>,
    stop: Arc<AtomicBool>,
    auth: AuthPool,
    /// The TLS workers; `None` with `--tls-workers 0`.
    crypto: Option<crypto::Pool>,
    /// The one store thread, for every write.
    store: Store,
    limits: Limits,
    config: Config,
    /// What sessions share: the one context every handler gets.
    chat: Chat,
    conns: Conns,
    /// Unsent output per connection and in all (`--max-total-output`).
    ledger: Ledger,
    next_serial: u64,
    /// Connections with output appended this turn.
    dirty: Vec<usize>,
    /// Connections with output made by backlog work (the welcome of a
    /// login just answered, an HTTP answer sealed by a TLS worker), oldest
    /// first: written at the start of the next turn's backlog slice, not at
    /// the end of this turn, so that the chat lines read meanwhile do not
    /// wait behind those writes (see [`backlog`]).
    held_out: VecDeque<ConnId>,
    /// Connections with output that may wait ([`Action::Notice`]), oldest
    /// first: written after `dirty`, for at most [`LAZY_SLICE`] a turn.
    lazy: VecDeque<usize>,
    /// Connections marked closing, to remove after the turn's writes.
    doomed: Vec<ConnId>,
    /// Connections to read without waiting for an event.
    again: Vec<ConnId>,
    /// Connections whose input waits until the pacer has room, in the order
    /// they will be read: those turned away before reading anything first,
    /// then (`paced_back`) those that used up the room, so that a flooder
    /// cannot stay at the head of the line.
    paced: Vec<ConnId>,
    paced_back: Vec<ConnId>,
    pacer: Pacer,
    /// Results made on the loop itself (queue full), handled like workers'.
    local_results: VecDeque<Done>,
    /// Answers (errors) to reads the store thread refused (never, unless
    /// it has stopped), handed over like its own.
    store_refused: VecDeque<crate::store::ops::Answer>,
    login_deadlines: VecDeque<(Instant, ConnId)>,
    linger_deadlines: VecDeque<(Instant, ConnId)>,
    accept_retry: Option<Instant>,
    /// Connections not chatting yet with input to read, oldest first: read
    /// in the turn's backlog slice, after every chatting one.
    deferred: VecDeque<ConnId>,
    /// A listener had more connections waiting than the last slice
    /// accepted: accept again in the next.
    accept_more: bool,
    /// Answers of the auth workers or the store thread were left for the
    /// next slice.
    answers_left: bool,
    /// The slices of loop time given to logins ([`backlog`]).
    backlog: Backlog,
    /// The last accept line logged said accepts are paused (what the
    /// operator reads as the current state).
    accept_stall_logged: bool,
    /// Next sweep that frees emptied output buffers.
    next_release: Instant,
    /// Output buffers freed since the allocator last gave memory back.
    untrimmed: usize,
    /// Where the sweep of idle buffers goes on (a slab key).
    sweep_from: usize,
    shutdown_deadline: Option<Instant>,
    /// Transports waiting for a time (0.3 s for a silent client, 10 s for
    /// an HTTP head).
    transport_deadlines: BinaryHeap<Reverse<(Instant, ConnId)>>,
    next_ping: Instant,
    scratch: Box<[u8]>,
    /// The files threads: uploads' bytes go in through one, downloads'
    /// come out through the other.
    disk_in: crate::files::Writer,
    disk_out: crate::files::Writer,
    /// Transfers by the id the files threads know them by.
    transfers: HashMap<u64, ConnId>,
    next_transfer: u64,
    /// Downloads that keep their buffers between pieces (`files`).
    bulk_downloads: usize,
    /// Connections with a job waiting for room in a files queue.
    held: Vec<ConnId>,
    /// Jobs that end transfers, waiting for room (they are never dropped).
    control_in: VecDeque<crate::files::Job>,
    control_out: VecDeque<crate::files::Job>,
    /// Uploads stored whose rows the store is writing, by connection.
    recording: HashMap<ConnId, files::Recording>,
    /// Uploads being finished by the thread whose clients went away, by
    /// transfer id, with the connection they came on.
    orphans: HashMap<u64, (ConnId, crate::chat::uploads::Slot)>,
}

impl Server {
    /// Opens the database, starts the auth workers and binds the listener.
    pub fn bind(config: Config) -> io::Result<Server> {
        pin_mmap_threshold();
        let poll = Poll::new()?;
        // Listeners, the waker, the database's files, the signal pipe and
        // logs: a few dozen besides the connections.
        sockets::reserve_descriptors(&poll, config.max_clients.saturating_add(64));
        let waker = Arc::new(Waker::new(poll.registry(), WAKER)?);
        let wake = {
            let waker = waker.clone();
            Arc::new(move || {
                if let Err(e) = waker.wake() {
                    warn!("a worker cannot wake the event loop: {e}");
                }
            })
        };
        // Uploads' bytes live in `files/` beside the database. Where that
        // cannot be made (a read-only directory), uploads are refused and
        // stored files are still served.
        let (blobs, uploads) = match crate::files::Blobs::open(&config.db) {
            Ok(blobs) => (blobs, true),
            Err(e) => {
                warn!(
                    "uploads are off: cannot open the files directory beside {}: {e}",
                    config.db.display()
                );
                (crate::files::Blobs::at(&config.db), false)
            }
        };
        // Opened and migrated before the auth workers open theirs.
        let (store, snapshot) = Store::start(
            StoreConfig {
                history_days: config.history_days,
                blobs: Some(blobs.clone()),
                ..StoreConfig::new(config.db.clone())
            },
            wake.clone(),
        )
        .map_err(io::Error::other)?;
        let disk_in = crate::files::Writer::start(blobs.clone(), FILES_QUEUE, wake.clone())?;
        let disk_out = crate::files::Writer::start(blobs, FILES_QUEUE, wake.clone())?;
        let crypto = match config.tls_workers {
            0 => None,
            n => Some(crypto::Pool::start(n, wake.clone())?),
        };
        let auth = AuthPool::start(
            &AuthConfig {
                bcrypt_cost: config.bcrypt_cost,
                workers: config.workers,
                // Off still means bounded: at most one job per connection
                // is out (a closed connection's job is cancelled, and
                // skipped by workers).
                queue: config.max_auth_queue.unwrap_or(config.max_clients),
            },
            &store,
            wake,
        )
        .map_err(io::Error::other)?;

        let (tls_config, fingerprint) = match &config.tls {
            Some(source) => {
                let loaded = tls::load(source, &config.db).map_err(io::Error::other)?;
                info!(
                    "TLS certificate {} ({})",
                    loaded.fingerprint,
                    source.paths(&config.db).0.display()
                );
                (Some(loaded.config), Some(loaded.fingerprint))
            }
            None => {
                info!("TLS is off (--tls off)");
                (None, None)
            }
        };
        if config.listen.is_empty() || config.listen.len() > MAX_LISTENERS {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("give 1 to {MAX_LISTENERS} addresses to listen on"),
            ));
        }
        let mut listeners = Vec::new();
        let mut local_addrs = Vec::new();
        for (i, addr) in config.listen.iter().enumerate() {
            let mut listener =
                TcpListener::from_std(listen(*addr, listen_backlog(config.max_clients))?);
            local_addrs.push(listener.local_addr()?);
            poll.registry().register(
                &mut listener,
                Token(LISTENER_BASE - i),
                Interest::READABLE,
            )?;
            listeners.push(listener);
        }
        let transport = tp::Settings {
            tls: tls_config,
            plaintext_any: config.plaintext_any,
            allowed_origins: config.allowed_origins.clone(),
            max_line: config.max_line,
        };
        let mut chat = Chat {
            config: SessionConfig {
                max_line: config.max_line,
                rate: config.rate,
                rate_bytes: config.rate_bytes,
            },
            hub: Hub::from_snapshot(config.hub.clone(), &snapshot),
            actions: Vec::new(),
        };
        // Capped as the descriptor table is: a library caller's huge
        // --max-clients must not ask for more than memory can hold.
        chat.hub.reserve(config.max_clients.min(1 << 20));
        if !uploads || !store.writable() {
            chat.hub.uploads.disable();
        }
        // Room for a quarter of the output limit at once, and for all
        // readers together a quarter of the total bound, but for two of the
        // longest lines whatever the limits.
        let least = 2 * config.max_line + 64;
        let pacer = Pacer::new(
            (config.max_output / 4).max(least),
            least,
            config.max_total_output / 4,
            config.max_output.max(64 * 1024) as f64 * BROADCAST_LIMITS_PER_SEC,
        );
        Ok(Server {
            poll,
            listeners,
            local_addrs,
            transport,
            fingerprint,
            signals: None,
            waker,
            stop: Arc::new(AtomicBool::new(false)),
            auth,
            crypto,
            store,
            limits: Limits::new(config.limits.clone()),
            chat,
            conns: Conns::with_capacity(config.max_clients.min(1024)),
            ledger: Ledger::default(),
            config,
            next_serial: 0,
            dirty: Vec::new(),
            held_out: VecDeque::new(),
            lazy: VecDeque::new(),
            doomed: Vec::new(),
            again: Vec::new(),
            paced: Vec::new(),
            paced_back: Vec::new(),
            pacer,
            local_results: VecDeque::new(),
            store_refused: VecDeque::new(),
            login_deadlines: VecDeque::new(),
            linger_deadlines: VecDeque::new(),
            accept_retry: None,
            accept_more: false,
            deferred: VecDeque::new(),
            answers_left: false,
            backlog: Backlog::new(Instant::now()),
            accept_stall_logged: false,
            next_release: Instant::now() + RELEASE_EVERY,
            untrimmed: 0,
            sweep_from: 0,
            shutdown_deadline: None,
            transport_deadlines: BinaryHeap::new(),
            next_ping: Instant::now() + PING_EVERY,
            scratch: vec![0; READ_CHUNK].into_boxed_slice(),
            disk_in,
            disk_out,
            transfers: HashMap::new(),
            next_transfer: 0,
            bulk_downloads: 0,
            held: Vec::new(),
            control_in: VecDeque::new(),
            control_out: VecDeque::new(),
            recording: HashMap::new(),
            orphans: HashMap::new(),
        })
    }

    /// The (first) address actually bound (useful with port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addrs[0]
    }

    /// Every address bound, one per `--listen`.
    pub fn local_addrs(&self) -> &[SocketAddr] {
        &self.local_addrs
    }

    /// The TLS certificate's fingerprint (`None` with TLS off).
    pub fn fingerprint(&self) -> Option<&str> {
        self.fingerprint.as_deref()
    }

    /// Shut down gracefully on SIGINT and SIGTERM. Binaries want this;
    /// in-process users (tests, benchmarks) use [`Server::shutdown_handle`].
    pub fn handle_signals(&mut self) -> io::Result<()> {
        let mut signals = signal_hook_mio::v1_0::Signals::new([
            signal_hook::consts::SIGINT,
            signal_hook::consts::SIGTERM,
            signal_hook::consts::SIGHUP,
        ])?;
        // No other signal stops the server: those whose default is to end
        // the process are caught and logged (SIGPIPE Rust already ignores).
        for signal in IGNORED_SIGNALS {
            signals.add_signal(*signal)?;
        }
        self.poll
            .registry()
            .register(&mut signals, SIGNALS, Interest::READABLE)?;
        self.signals = Some(signals);
        Ok(())
    }

    pub fn shutdown_handle(&self) -> ShutdownHandle {
        ShutdownHandle {
            flag: self.stop.clone(),
            waker: self.waker.clone(),
        }
    }

    /// Runs until shut down. Errors only if `poll` itself fails.
    pub fn run(mut self) -> io::Result<()> {
        let mut events = Events::with_capacity(EVENTS_PER_POLL);
        ask_for_short_slices();
        info!("event loop running on {:?}", self.local_addrs);
        loop {
            let timeout = self.poll_timeout(Instant::now());
            if let Err(e) = self.poll.poll(&mut events, timeout) {
                // A signal landing interrupts epoll_wait: not an error.
                if e.kind() == io::ErrorKind::Interrupted {
                    continue;
                }
                return Err(e);
            }
            let now = Instant::now();
            self.backlog.begin(now);
            self.pacer.refill(now);
            // Connections cut short last turn; those cut short now wait for
            // the next one, so one flooder gets one share per turn. Those
            // held by the pacer go first once it has room: they have waited
            // longest.
            let mut again = std::mem::take(&mut self.again);
            if self.pacer.may_resume() && !(self.paced.is_empty() && self.paced_back.is_empty()) {
                let mut paced = std::mem::take(&mut self.paced);
                paced.append(&mut self.paced_back);
                for id in &paced {
                    if let Some(conn) = self.conns.get_mut(*id) {
                        conn.paced = false;
                    }
                }
                paced.append(&mut again);
                again = paced;
            }
            for id in again {
                if let Some(conn) = self.conns.get_mut(id) {
                    conn.again = false;
                }
                if self.is_live(id) {
                    self.read(id.key, now);
                }
            }
            for event in events.iter() {
                match event.token() {
                    Token(t) if t <= LISTENER_BASE && t > LISTENER_BASE - MAX_LISTENERS => {
                        self.accept(LISTENER_BASE - t, now)
                    }
                    // Results are drained below, every turn.
                    WAKER => {
                        if self.stop.load(Ordering::SeqCst) {
                            self.begin_shutdown(now);
                        }
                    }
                    SIGNALS => self.on_signals(now),
                    Token(key) => {
                        if event.is_error() {
                            self.on_socket_error(key);
                        }
                        if event.is_writable() {
                            self.flush(key);
                        }
                        if event.is_error() {
                            self.read(key, now);
                        } else if event.is_readable() || event.is_read_closed() {
                            self.read_or_defer(key, now);
                        }
                    }
                }
            }
            // The backlog's slice: first the output its last slice made,
            // then more logins.
            self.write_held();
            let mark = self.dirty.len();
            while !self.deferred.is_empty() && self.backlog.may(Work::Read) {
                let Some(id) = self.deferred.pop_front() else {
                    break;
                };
                if let Some(conn) = self.conns.get_mut(id) {
                    conn.deferred = false;
                }
                if self.is_live(id) {
                    self.read(id.key, now);
                }
            }
            self.answers_left = false;
            self.drain_results(now);
            self.drain_store(now);
            self.hold_output(mark);
            self.drain_files();
            self.drain_crypto(now);
            self.run_timers(now);
            self.end_turn(now);
            self.backlog.end(Instant::now());
            if self
                .shutdown_deadline
                .is_some_and(|deadline| self.conns.is_empty() || now >= deadline)
            {
                info!("stopped ({} connections not drained)", self.conns.len());
                self.auth.shutdown(AUTH_SHUTDOWN);
                // Everything the loop sent is written, and the database
                // closed (its write-ahead log checkpointed).
                self.store.shutdown(STORE_SHUTDOWN);
                return Ok(());
            }
        }
    }

    /// Writes the turn's output, then removes closed connections (whose
    /// left notices are more output), until nothing is left to do.
    fn end_turn(&mut self, now: Instant) {
        loop {
            loop {
                // In the order they were marked: the chat lines read first
                // in the turn go out before the output of the logins
                // worked on after them.
                while !self.dirty.is_empty() {
                    let mut dirty = std::mem::take(&mut self.dirty);
                    for &key in &dirty {
                        if let Some(conn) = self.conns.at_mut(key) {
                            conn.dirty = false;
                            self.flush(key);
                        }
                    }
                    dirty.clear();
                    if self.dirty.is_empty() {
                        // Keep the allocation.
                        self.dirty = dirty;
                    }
                }
                if self.doomed.is_empty() {
                    break;
                }
                while let Some(id) = self.doomed.pop() {
                    self.reap(id, now);
                }
            }
            self.flush_lazy();
            // A write that failed closed its connection: reap it now.
            if self.doomed.is_empty() {
                break;
            }
        }
    }

    /// Writes the output that may wait, oldest first, for at most
    /// [`LAZY_SLICE`]; the rest goes out in the next turns, which come at
    /// once. Hundreds told who joined cost a few microseconds each to
    /// write: all at once, they held a turn for milliseconds.
    fn flush_lazy(&mut self) {
        if self.lazy.is_empty() {
            return;
        }
        let began = Instant::now();
        let mut written = 0u32;
        while let Some(&key) = self.lazy.front() {
            // The clock is read before each write but the first: a write
            // costs 5-60 us on loopback (it delivers the bytes), a clock
            // read tens of nanoseconds. Read every 8 writes, the slice of
            // 150 us ran to 500 us in a storm of logins told who joined.
            if written > 0 && began.elapsed() >= LAZY_SLICE {
                break;
            }
            self.lazy.pop_front();
            // The slot may hold a newer connection: its flag says whether
            // it is on the list itself.
            let Some(conn) = self.conns.at_mut(key).filter(|c| c.lazy) else {
                continue;
            };
            conn.lazy = false;
            if !conn.out.is_empty() {
                written += 1;
                self.flush(key);
            }
        }
    }

    /// Backlog work waits for the next slice.
    fn backlog_left(&self) -> bool {
        self.accept_more
            || self.answers_left
            || !self.deferred.is_empty()
            || !self.held_out.is_empty()
    }

    /// Takes the output that this turn's backlog work (since `mark` on the
    /// dirty list) made for connections still entering (a login's welcome,
    /// an HTTP answer) off the dirty list: it is written in the next slice
    /// instead. A turn's slice of logins made output that cost more to
    /// write than the slice itself (20-40 us a login on loopback), and a
    /// chat line read while the turn wrote it waited for all of it. Output
    /// for people already chatting (a file announced to a room, an answer
    /// to `/history`) goes out with the turn. When shutting down,
    /// everything is written at once.
    fn hold_output(&mut self, mark: usize) {
        if self.shutdown_deadline.is_some() || mark >= self.dirty.len() {
            return;
        }
        let mut kept = mark;
        for i in mark..self.dirty.len() {
            let key = self.dirty[i];
            match self.conns.at_mut(key) {
                Some(conn) if conn.entering => {
                    conn.dirty = false;
                    let id = conn.id;
                    self.hold(id);
                }
                _ => {
                    self.dirty[kept] = key;
                    kept += 1;
                }
            }
        }
        self.dirty.truncate(kept);
    }

    /// Puts a connection's output on the held list (see [`Self::hold_output`]),
    /// unless it is written with this turn anyway (on the dirty list, or
    /// shutting down).
    fn hold(&mut self, id: ConnId) {
        if let Some(conn) = self.conns.get_mut(id)
            && !conn.dirty
            && !conn.held_out
        {
            if self.shutdown_deadline.is_some() {
                conn.dirty = true;
                self.dirty.push(id.key);
            } else {
                conn.held_out = true;
                self.held_out.push_back(id);
            }
        }
    }

    /// Writes held output, oldest first, while the backlog's slice lasts.
    /// A connection written meanwhile (it got a chat line and was flushed
    /// with the turn) is skipped without being charged for.
    fn write_held(&mut self) {
        while let Some(&id) = self.held_out.front() {
            if !self.conns.get(id).is_some_and(|c| c.held_out) {
                self.held_out.pop_front();
                continue;
            }
            if !self.backlog.may(Work::Write) {
                break;
            }
            self.held_out.pop_front();
            // `flush` takes it off the held list.
            self.flush(id.key);
        }
    }

    fn poll_timeout(&self, now: Instant) -> Option<Duration> {
        if !self.again.is_empty() || !self.lazy.is_empty() {
            return Some(Duration::ZERO);
        }
        if self.backlog_left() || !self.local_results.is_empty() {
            // Exactly then, not rounded up: epoll rounds up to 1 ms.
            let wait = self.backlog.opens_at().saturating_duration_since(now);
            if wait.is_zero() {
                return Some(wait);
            }
            if let Some(other) = self.other_deadline(now)
                && other < wait
            {
                return Some(other);
            }
            return Some(wait);
        }
        self.other_deadline(now)
    }

    /// The nearest timer, rounded up.
    fn other_deadline(&self, now: Instant) -> Option<Duration> {
        [
            (!(self.paced.is_empty() && self.paced_back.is_empty()))
                .then(|| self.pacer.resume_at(now)),
            self.login_deadlines.front().map(|d| d.0),
            self.transport_deadlines.peek().map(|d| d.0.0),
            self.linger_deadlines.front().map(|d| d.0),
            self.accept_retry,
            self.shutdown_deadline,
            // An empty server sleeps until something happens.
            (!self.conns.is_empty()).then_some(self.next_release),
        ]
        .into_iter()
        .flatten()
        .min()
        // Round up: waking a hair early would just loop with zero timeouts.
        .map(|t| t.saturating_duration_since(now) + Duration::from_millis(1))
    }

    /// Reads a chatting connection now; one that is not chatting yet (a
    /// login, a TLS handshake, an HTTP request) waits on `deferred`. In a
    /// storm of thousands of logins, epoll hands out their readiness first
    /// (it is first in), and reading them all before anything else would
    /// make every chatting user wait behind the whole storm.
    fn read_or_defer(&mut self, key: usize, now: Instant) {
        match self.conns.at_mut(key) {
            Some(conn)
                if !conn.session.is_chatting()
                    && conn.closing.is_none()
                    && conn.transfer.is_none() =>
            {
                if !conn.deferred {
                    conn.deferred = true;
                    self.deferred.push_back(conn.id);
                }
            }
            _ => self.read(key, now),
        }
    }

    fn is_live(&self, id: ConnId) -> bool {
        self.conns.get(id).is_some_and(|c| c.closing.is_none())
    }

    // ---- timers ----

    fn run_timers(&mut self, now: Instant) {
        // Deadlines are pushed with a fixed offset from "now", so each queue
        // is already in order: pop from the front while due.
        while let Some(&(at, id)) = self.login_deadlines.front() {
            if at > now {
                break;
            }
            self.login_deadlines.pop_front();
            // A file transfer takes as long as it takes (an upload that
            // stalls is dropped by its own idle timeout).
            let Some(conn) = self
                .conns
                .get_mut(id)
                .filter(|c| c.closing.is_none() && c.transfer.is_none())
            else {
                continue;
            };
            conn.session.handle_login_timeout(&mut self.chat.ctx(now));
            self.apply(id);
        }
        while let Some(&(at, id)) = self.linger_deadlines.front() {
            if at > now {
                break;
            }
            self.linger_deadlines.pop_front();
            if self.conns.get(id).is_some() {
                debug!("conn {}: did not finish closing in time", id.key);
                self.mark_closing(id, Closing::Now, "did not finish closing in time");
            }
        }
        while let Some(&Reverse((at, id))) = self.transport_deadlines.peek() {
            if at > now {
                break;
            }
            self.transport_deadlines.pop();
            if self.conns.get(id).is_some() {
                // A login's deadline (a silent client is taken for a line
                // client) is backlog work like its input: in a storm,
                // thousands of them come due while their connections wait
                // for the backlog, and reading them here, unpaced, made
                // turns of up to a millisecond.
                self.read_or_defer(id.key, now);
            }
        }
        if now >= self.next_ping {
            self.next_ping = now + PING_EVERY;
            for (key, conn) in self.conns.iter_mut() {
                if conn.transport.is_websocket() && conn.closing.is_none() {
                    conn.transport.ping();
                    if !conn.dirty {
                        conn.dirty = true;
                        self.dirty.push(key);
                    }
                }
            }
        }
        if self.accept_retry.is_some_and(|t| t <= now) || self.accept_more {
            self.accept_retry = None;
            self.accept_more = false;
            for which in 0..self.listeners.len() {
                self.accept(which, now);
            }
        }
        if now >= self.next_release {
            if self.release_buffers() {
                self.next_release = now + RELEASE_EVERY;
                self.limits.prune(now);
                self.chat.hub.uploads.expire(now);
                self.drop_stalled(now);
            } else {
                // The rest of the sweep next turn.
                self.next_release = now;
            }
        }
    }

    /// Frees the output buffers of connections with nothing pending. A busy
    /// connection keeps its buffer from turn to turn (no malloc per write);
    /// this sweep makes sure an idle one holds none. Once a second over the
    /// whole slab, [`SWEEP_STEP`] slots a turn: freeing 10,000 buffers at
    /// once (after a login storm) held the loop for 3 ms. True once the
    /// sweep has reached the end of the slab.
    fn release_buffers(&mut self) -> bool {
        let mut freed = 0usize;
        let from = self.sweep_from;
        let to = from.saturating_add(SWEEP_STEP).min(self.conns.slots());
        for key in from..to {
            if let Some(conn) = self.conns.at_mut(key) {
                freed += usize::from(conn.out.release());
                freed += usize::from(conn.transport.release());
            }
        }
        let done = to >= self.conns.slots();
        self.sweep_from = if done { 0 } else { to };
        if freed > 0 {
            debug!("freed {freed} idle output buffers");
        }
        // glibc keeps freed memory in its heap, where holes between live
        // blocks never go back to the system on their own: after a burst
        // (thousands joining, each sent the online list) that would leave
        // the resident size high for good. Hand the free pages back, once
        // the logins have stopped: a trim walks the whole heap (milliseconds
        // with 10,000 connections), and in a storm it came every second.
        self.untrimmed += freed;
        #[cfg(all(target_os = "linux", target_env = "gnu"))]
        if done && self.untrimmed >= 64 && self.backlog.is_idle() {
            self.untrimmed = 0;
            // SAFETY: malloc_trim only releases free memory of the allocator.
            unsafe {
                libc::malloc_trim(0);
            }
        }
        done
    }

    // ---- signals ----

    /// SIGHUP reloads the certificate; SIGINT and SIGTERM shut down.
    fn on_signals(&mut self, now: Instant) {
        let pending: Vec<i32> = match &mut self.signals {
            Some(signals) => signals.pending().collect(),
            None => return,
        };
        for signal in pending {
            if signal == signal_hook::consts::SIGHUP {
                self.reload_tls();
            } else if IGNORED_SIGNALS.contains(&signal) {
                info!("signal {signal} ignored (SIGINT or SIGTERM stops the server)");
            } else {
                info!("signal {signal}: shutting down");
                self.begin_shutdown(now);
            }
        }
    }

    /// Loads the certificate again for new connections (after a renewal);
    /// a bad file keeps the old one. Connections already open keep theirs.
    fn reload_tls(&mut self) {
        let Some(source) = &self.config.tls else {
            info!("SIGHUP: TLS is off, nothing to reload");
            return;
        };
        match tls::load(source, &self.config.db) {
            Ok(loaded) => {
                info!(
                    "SIGHUP: TLS certificate reloaded: {} ({})",
                    loaded.fingerprint,
                    source.paths(&self.config.db).0.display()
                );
                self.transport.tls = Some(loaded.config);
                self.fingerprint = Some(loaded.fingerprint);
            }
            Err(e) => warn!("SIGHUP: keeping the old certificate: {e}"),
        }
    }

    // ---- shutdown ----

    /// Stops accepting, tells everybody, and gives output a moment to drain.
    fn begin_shutdown(&mut self, now: Instant) {
        if self.shutdown_deadline.is_some() {
            return;
        }
        self.shutdown_deadline = Some(now + SHUTDOWN_FLUSH);
        for mut listener in std::mem::take(&mut self.listeners) {
            deregister(self.poll.registry(), &mut listener);
        }
        self.accept_retry = None;
        let going =
            |conn: &conn::Conn| !matches!(conn.closing, Some(Closing::Now | Closing::Draining));
        // Everybody goes offline, silently: the shutdown line is last.
        for (_, conn) in self.conns.iter_mut() {
            if going(conn) {
                conn.session.handle_shutdown(&mut self.chat.ctx(now));
            }
        }
        // Nothing is said any more, but what the accounts had seen is kept.
        for action in std::mem::take(&mut self.chat.actions) {
            if let Action::Store(op) = action {
                self.store_op(op);
            }
        }
        // What was delivered, and where everybody stopped reading, is on
        // disk before anybody is told the server is going.
        if !self.store.flush(STORE_SHUTDOWN) {
            warn!("shutting down with writes not yet on disk");
        }
        for (key, conn) in self.conns.iter_mut() {
            if !going(conn) {
                continue;
            }
            // Only a line client is told (an HTTP client gets its answer).
            if conn.transport.is_chat() {
                conn.out.push_always(SHUTDOWN_LINE);
            }
            conn.transport.finish();
            conn.closing = Some(Closing::AfterFlush);
            conn.reason = "server shutting down";
            if !conn.dirty {
                conn.dirty = true;
                self.dirty.push(key);
            }
            self.doomed.push(conn.id);
        }
    }
}
