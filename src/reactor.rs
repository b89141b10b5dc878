//! The event loop: every line of mio, and nothing of the protocol.
//!
//! One thread, one `mio::Poll`, one listener, a `Slab` of connections (socket,
//! [`Session`], [`Outbox`]), one `Waker` shared with the auth workers, and the
//! signal source. Sessions decide what to say; this module carries it out:
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
//!   reading are never cut off as slow consumers because of it.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, VecDeque};
use std::io::{self, Read, Write};
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use log::{debug, info, warn};
use mio::net::{TcpListener, TcpStream};
use mio::{Events, Interest, Poll, Registry, Token, Waker};
use slab::Slab;

use crate::auth::{AuthConfig, AuthPool, Done, Job};
use crate::chat::session::{
    Action, AuthOutcome, AuthRequest, ConnId, Ctx, Roster, Session, SessionConfig,
};
use crate::limits::Cidr;
use crate::limits::{Admission, Hit, LimitConfig, Limits, LoginAnswer, Source};
use crate::outbox::{Flushed, Outbox};
use crate::transport::tls::{self, CertSource};
use crate::transport::{self as tp, Input, Transport};

const WAKER: Token = Token(usize::MAX - 1);
const SIGNALS: Token = Token(usize::MAX - 2);
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
/// How long a closing connection may take to drain its last lines.
const LINGER: Duration = Duration::from_secs(5);
/// How often idle connections' output buffers are freed.
const RELEASE_EVERY: Duration = Duration::from_secs(1);
/// How long shutdown waits for output to drain.
const SHUTDOWN_FLUSH: Duration = Duration::from_secs(2);
/// How long shutdown waits for a password worker in the middle of a
/// database write before closing the account store without it.
const AUTH_SHUTDOWN: Duration = Duration::from_secs(2);
const LISTEN_BACKLOG: i32 = 1024;
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
    pub bcrypt_cost: u32,
    /// Lines per second per connection (burst twice that); `None` is off.
    pub rate: Option<u32>,
    pub login_timeout: Duration,
    pub max_clients: usize,
    pub max_output: usize,
    pub max_line: usize,
    pub workers: usize,
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
}

impl Default for Config {
    /// The flags' defaults (see `config`): one place for every default.
    fn default() -> Self {
        crate::config::Flags::default().to_config()
    }
}

/// How a connection is closing.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Closing {
    /// Write what is queued first (`/quit`, login timeout, end of input).
    AfterFlush,
    /// Everything is written and our side shut down; reading and dropping
    /// input until the peer closes too. Closing a socket with unread input
    /// sends a reset, which can destroy our last lines still in flight, so
    /// we linger like a web server does.
    Draining,
    /// Drop it now (socket error, output limit passed).
    Now,
}

struct Conn {
    stream: TcpStream,
    id: ConnId,
    /// The client's address: the TCP peer, or the one a trusted proxy named.
    peer: SocketAddr,
    transport: Transport,
    session: Session,
    out: Outbox,
    interest: Interest,
    closing: Option<Closing>,
    /// Why it is closing, for the log.
    reason: &'static str,
    /// Already on the `dirty` list.
    dirty: bool,
    /// Set to abandon this connection's auth job, if one is out.
    job: Option<Arc<AtomicBool>>,
    /// On the `paced` list: its input waits for the pacer.
    paced: bool,
    /// What the limits counted for this connection.
    admission: Admission,
    /// The job out, for the limits to count its result.
    attempt: Option<Attempt>,
}

impl Conn {
    /// Whether to read the socket: not while the session waits for a
    /// password check (its input stays in the kernel, bounded), nor after
    /// the end of input.
    fn wants_bytes(&self) -> bool {
        !self.transport.eof() && (!self.transport.is_chat() || self.session.wants_input())
    }

    /// Nothing is left to write, at any layer.
    fn all_written(&self) -> bool {
        self.out.is_empty() && !self.transport.has_pending()
    }
}

/// An auth job in flight, as the limits see it.
enum Attempt {
    /// A login for this name (as typed), started then.
    Login(String, Instant),
    Register,
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
    limits: Limits,
    config: Config,
    session_config: SessionConfig,
    conns: Slab<Conn>,
    next_serial: u64,
    roster: Roster,
    /// Scratch for session output; always empty between calls.
    actions: Vec<Action>,
    /// Connections with output appended this turn.
    dirty: Vec<usize>,
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
    login_deadlines: VecDeque<(Instant, ConnId)>,
    linger_deadlines: VecDeque<(Instant, ConnId)>,
    accept_retry: Option<Instant>,
    accept_stalled: bool,
    /// Next sweep that frees emptied output buffers.
    next_release: Instant,
    shutdown_deadline: Option<Instant>,
    /// Transports waiting for a time (0.3 s for a silent client, 10 s for
    /// an HTTP head), as (time, slab key, serial).
    transport_deadlines: BinaryHeap<Reverse<(Instant, usize, u64)>>,
    next_ping: Instant,
    scratch: Box<[u8]>,
}

impl Server {
    /// Opens the database, starts the auth workers and binds the listener.
    pub fn bind(config: Config) -> io::Result<Server> {
        let poll = Poll::new()?;
        let waker = Arc::new(Waker::new(poll.registry(), WAKER)?);
        let wake = {
            let waker = waker.clone();
            Arc::new(move || {
                if let Err(e) = waker.wake() {
                    warn!("auth worker cannot wake the event loop: {e}");
                }
            })
        };
        let auth = AuthPool::start(
            &AuthConfig {
                db: config.db.clone(),
                bcrypt_cost: config.bcrypt_cost,
                workers: config.workers,
                // Off still means bounded: at most one job per connection
                // is out (a closed connection's job is cancelled, and
                // skipped by workers).
                queue: config.max_auth_queue.unwrap_or(config.max_clients),
            },
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
            let mut listener = TcpListener::from_std(listen(*addr)?);
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
        let session_config = SessionConfig {
            max_line: config.max_line,
            rate: config.rate,
        };
        // Room for a quarter of the output limit at once, and for two of the
        // longest lines whatever the limits.
        let pacer = Pacer::new(
            (config.max_output / 4).max(2 * config.max_line + 64),
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
            limits: Limits::new(config.limits.clone()),
            session_config,
            conns: Slab::with_capacity(config.max_clients.min(1024)),
            config,
            next_serial: 0,
            roster: Roster::new(),
            actions: Vec::new(),
            dirty: Vec::new(),
            doomed: Vec::new(),
            again: Vec::new(),
            paced: Vec::new(),
            paced_back: Vec::new(),
            pacer,
            local_results: VecDeque::new(),
            login_deadlines: VecDeque::new(),
            linger_deadlines: VecDeque::new(),
            accept_retry: None,
            accept_stalled: false,
            next_release: Instant::now() + RELEASE_EVERY,
            shutdown_deadline: None,
            transport_deadlines: BinaryHeap::new(),
            next_ping: Instant::now() + PING_EVERY,
            scratch: vec![0; READ_CHUNK].into_boxed_slice(),
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
        let mut events = Events::with_capacity(1024);
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
                    if let Some(conn) = self.conns.get_mut(id.key).filter(|c| c.id == *id) {
                        conn.paced = false;
                    }
                }
                paced.append(&mut again);
                again = paced;
            }
            for id in again {
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
                        if event.is_readable() || event.is_read_closed() || event.is_error() {
                            self.read(key, now);
                        }
                    }
                }
            }
            self.drain_results(now);
            self.run_timers(now);
            self.end_turn(now);
            if self
                .shutdown_deadline
                .is_some_and(|deadline| self.conns.is_empty() || now >= deadline)
            {
                info!("stopped ({} connections not drained)", self.conns.len());
                self.auth.shutdown(AUTH_SHUTDOWN);
                return Ok(());
            }
        }
    }

    /// Writes the turn's output, then removes closed connections (whose
    /// left notices are more output), until nothing is left to do.
    fn end_turn(&mut self, now: Instant) {
        loop {
            while let Some(key) = self.dirty.pop() {
                if let Some(conn) = self.conns.get_mut(key) {
                    conn.dirty = false;
                    self.flush(key);
                }
            }
            if self.doomed.is_empty() {
                break;
            }
            while let Some(id) = self.doomed.pop() {
                self.reap(id, now);
            }
        }
    }

    fn poll_timeout(&self, now: Instant) -> Option<Duration> {
        if !self.again.is_empty() || !self.local_results.is_empty() {
            return Some(Duration::ZERO);
        }
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

    fn is_live(&self, id: ConnId) -> bool {
        self.conns
            .get(id.key)
            .is_some_and(|c| c.id == id && c.closing.is_none())
    }

    // ---- accepting ----

    fn accept(&mut self, which: usize, now: Instant) {
        loop {
            let Some(listener) = self.listeners.get(which) else {
                return;
            };
            match listener.accept() {
                Ok((stream, peer)) => {
                    if self.accept_stalled {
                        self.accept_stalled = false;
                        info!("accepting connections again");
                    }
                    self.admit(stream, peer, now);
                }
                // Drained: the next connection brings a new event.
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                // The peer gave up in the backlog, or a signal: go on.
                Err(e)
                    if matches!(
                        e.kind(),
                        io::ErrorKind::Interrupted | io::ErrorKind::ConnectionAborted
                    ) =>
                {
                    continue;
                }
                // EMFILE, ENFILE, ENOBUFS, ENOMEM...: pending connections
                // stay in the backlog and, edge-triggered, bring no new
                // event, so retry on a timer rather than wait forever.
                Err(e) => {
                    if !self.accept_stalled {
                        self.accept_stalled = true;
                        warn!(
                            "accept failed ({e}); pausing accepts, {} connections open",
                            self.conns.len()
                        );
                    }
                    self.accept_retry = Some(now + ACCEPT_RETRY);
                    return;
                }
            }
        }
    }

    fn admit(&mut self, mut stream: TcpStream, peer: SocketAddr, now: Instant) {
        if self.conns.len() >= self.config.max_clients {
            // Best effort: the line fits any fresh socket buffer. (A TLS
            // client cannot read it; it sees the connection close.)
            let _ = (&stream).write(FULL_LINE);
            self.warn_limit(Hit::ServerFull, Source::of(peer.ip()), now);
            return;
        }
        let admission = match self.limits.admit(peer.ip()) {
            Ok(admission) => admission,
            Err(refusal) => {
                // Refused before any state is kept for it: one line, best
                // effort, and the socket is closed.
                let _ = (&stream).write(refusal.line());
                self.warn_limit(refusal.hit(), Source::of(peer.ip()), now);
                return;
            }
        };
        if let Err(e) = stream.set_nodelay(true) {
            debug!("{peer}: set_nodelay: {e}");
        }
        // A client that vanished without closing (a phone that lost its
        // network) is found out within about two minutes.
        let keepalive = socket2::TcpKeepalive::new()
            .with_time(Duration::from_secs(60))
            .with_interval(Duration::from_secs(10))
            .with_retries(6);
        if let Err(e) = socket2::SockRef::from(&stream).set_tcp_keepalive(&keepalive) {
            debug!("{peer}: keepalive: {e}");
        }
        let entry = self.conns.vacant_entry();
        let id = ConnId {
            key: entry.key(),
            serial: self.next_serial,
        };
        self.next_serial += 1;
        if let Err(e) =
            self.poll
                .registry()
                .register(&mut stream, Token(id.key), Interest::READABLE)
        {
            warn!("{peer}: cannot register connection: {e}");
            let mut admission = admission;
            self.limits.release(&mut admission);
            return;
        }
        let local = peer.ip().is_loopback() || is_mapped_loopback(peer.ip());
        let proxied = self.config.proxy_from.iter().any(|c| c.contains(peer.ip()));
        entry.insert(Conn {
            stream,
            id,
            peer,
            transport: Transport::new(local, proxied),
            session: Session::new(id, now, &self.session_config),
            out: Outbox::default(),
            interest: Interest::READABLE,
            closing: None,
            reason: "",
            dirty: false,
            job: None,
            paced: false,
            admission,
            attempt: None,
        });
        debug!("conn {}: open from {peer}", id.key);
        // The login deadline counts from accept: a half-done TLS handshake
        // or a silent client is held no longer than anybody else.
        if let Some(deadline) = now.checked_add(self.config.login_timeout) {
            self.login_deadlines.push_back((deadline, id));
        }
        // Entries of closed connections wait for their deadline; under a
        // fast connect/close churn, drop them before they pile up.
        if self.login_deadlines.len() > 2 * self.conns.len() + 1024 {
            let conns = &self.conns;
            self.login_deadlines
                .retain(|(_, id)| conns.get(id.key).is_some_and(|c| c.id == *id));
        }
        // The client may have spoken already; if not, the transport sets
        // its 0.3 s deadline.
        self.read(id.key, now);
    }

    // ---- reading ----

    /// Reads and handles input until the socket is drained, the session
    /// wants no more, or the connection has had its share of this turn.
    /// Input the transport already holds (after a password check, or at a
    /// deadline) is handled first.
    fn read(&mut self, key: usize, now: Instant) {
        for round in 0..READS_PER_TURN {
            let Some(conn) = self.conns.get_mut(key) else {
                return;
            };
            if conn.closing == Some(Closing::Draining) {
                self.drain_input(key);
                return;
            }
            if conn.closing.is_some() {
                return;
            }
            let id = conn.id;
            // Only chatting users broadcast; logins are never held up.
            // While anyone is held, others queue behind them.
            let held =
                !(self.pacer.has_room() && self.paced.is_empty() && self.paced_back.is_empty());
            if held && conn.session.is_chatting() {
                // Readers' output is growing too fast: this input waits
                // until the turn's output is written and the pacer refills.
                if !conn.paced {
                    conn.paced = true;
                    if round == 0 {
                        self.paced.push(id);
                    } else {
                        self.paced_back.push(id);
                    }
                }
                return;
            }
            // The socket first, even when only a deadline brought us here:
            // a ClientHello already in the kernel must not be taken for a
            // silent client.
            let mut drained = !conn.wants_bytes();
            if !drained {
                match conn.stream.read(&mut self.scratch) {
                    // The peer finished sending; a last partial line counts.
                    Ok(0) => conn.transport.receive_eof(),
                    Ok(n) => conn.transport.receive(&self.scratch[..n]),
                    // Drained: wait for the next edge.
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => drained = true,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                    // Reset and friends: nothing more can be said to it.
                    Err(e) => {
                        debug!("conn {key}: read error: {e}");
                        self.mark_closing(id, Closing::Now, "read error");
                        return;
                    }
                }
            }
            // Input the transport holds (after a password check, or at a
            // deadline) is handled even when nothing new arrived.
            self.pump(key, now);
            if drained {
                return;
            }
        }
        // Still readable: come back after the others had their turn.
        if let Some(conn) = self.conns.get(key) {
            self.again.push(conn.id);
        }
    }

    /// Hands what the transport has to the session (lines, while it wants
    /// them) or to the reactor (a deadline, a proxied address, a close),
    /// then carries out the session's actions.
    fn pump(&mut self, key: usize, now: Instant) {
        loop {
            let Some(conn) = self.conns.get_mut(key) else {
                return;
            };
            if conn.closing.is_some() {
                return;
            }
            let id = conn.id;
            let mut ctx = Ctx {
                now,
                config: &self.session_config,
                roster: &mut self.roster,
                actions: &mut self.actions,
            };
            let mut next = None;
            while !conn.transport.is_chat() || conn.session.wants_input() {
                let Some(input) = conn.transport.next_input(now, &self.transport) else {
                    break;
                };
                match input {
                    Input::Start => conn.session.start(&mut ctx),
                    Input::Line(line) => conn.session.handle_line(line, &mut ctx),
                    Input::TooLong => conn.session.handle_too_long(&mut ctx),
                    Input::End => conn.session.handle_eof(&mut ctx),
                    Input::Deadline(at) => {
                        self.transport_deadlines
                            .push(Reverse((at, id.key, id.serial)));
                    }
                    Input::Client(addr) => {
                        next = Some(Ok(addr));
                        break;
                    }
                    Input::Close(reason) => {
                        next = Some(Err(reason));
                        break;
                    }
                }
            }
            // A TLS handshake answer, a pong or an HTTP answer: output that
            // did not come from the session.
            if conn.transport.has_pending() && !conn.dirty {
                conn.dirty = true;
                self.dirty.push(key);
            }
            self.apply(id);
            match next {
                None => return,
                Some(Ok(client)) => self.rehome(id, client, now),
                Some(Err(reason)) => {
                    debug!("conn {key}: {reason}");
                    self.mark_closing(id, Closing::AfterFlush, reason);
                    return;
                }
            }
        }
    }

    /// A trusted proxy named the real client: from now on the limits and
    /// the log see that address.
    fn rehome(&mut self, id: ConnId, client: SocketAddr, now: Instant) {
        let Some(conn) = self.conns.get_mut(id.key).filter(|c| c.id == id) else {
            return;
        };
        let ip = match client.ip() {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(IpAddr::V6(v6), IpAddr::V4),
            v4 => v4,
        };
        match self.limits.admit(ip) {
            Ok(admission) => {
                let mut old = std::mem::replace(&mut conn.admission, admission);
                self.limits.release(&mut old);
                debug!("conn {}: {} is a proxy for {ip}", id.key, conn.peer);
                conn.peer = SocketAddr::new(ip, client.port());
            }
            Err(refusal) => {
                conn.out.push_always(refusal.line());
                if !conn.dirty {
                    conn.dirty = true;
                    self.dirty.push(id.key);
                }
                self.warn_limit(refusal.hit(), Source::of(ip), now);
                self.mark_closing(id, Closing::AfterFlush, "refused by a limit");
            }
        }
    }

    /// The socket reports an error (a reset, usually). A session that reads
    /// would find out from `read`; one paused for a password check would
    /// not, and would hold its slot until bcrypt is done.
    fn on_socket_error(&mut self, key: usize) {
        if let Some(conn) = self.conns.get(key)
            && conn.closing.is_none()
            && !conn.session.wants_input()
        {
            let id = conn.id;
            self.mark_closing(id, Closing::Now, "connection error");
        }
    }

    // ---- carrying out what sessions ask ----

    /// Carries out the actions a handler of `id`'s session pushed.
    fn apply(&mut self, id: ConnId) {
        let mut actions = std::mem::take(&mut self.actions);
        for action in actions.drain(..) {
            match action {
                Action::Send(line) => self.queue(id, &line),
                Action::Broadcast(line) => self.broadcast(id.key, &line),
                Action::SendTo(to, line) => self.queue(to, &line),
                Action::Kick(to, line) => {
                    self.queue(to, &line);
                    self.mark_closing(to, Closing::AfterFlush, "taken over");
                }
                Action::Auth(request) => self.start_auth(id, request),
                Action::Close(reason) => self.mark_closing(id, Closing::AfterFlush, reason),
            }
        }
        // Hand the (empty) allocation back for the next handler.
        self.actions = actions;
    }

    /// Checks the limits for an account operation, then hands it to the
    /// workers; a refusal is answered on the loop, with no job.
    fn start_auth(&mut self, id: ConnId, request: AuthRequest) {
        let now = Instant::now();
        let Some(conn) = self.conns.get_mut(id.key).filter(|c| c.id == id) else {
            return;
        };
        let admission = conn.admission;
        let (attempt, refusal) = match &request {
            AuthRequest::Login { name, .. } => match self.limits.check_login(&admission, name, now)
            {
                Ok(()) => {
                    self.limits.login_started(&admission, name, now);
                    (Attempt::Login(name.clone(), now), None)
                }
                Err(t) => {
                    let outcome = AuthOutcome::TooManyAttempts {
                        retry_secs: t.secs(),
                    };
                    (Attempt::Login(name.clone(), now), Some((t.hit, outcome)))
                }
            },
            AuthRequest::Register { .. } => {
                if self.limits.reserve_registration(&admission, now) {
                    (Attempt::Register, None)
                } else {
                    let outcome = AuthOutcome::TooManyRegistrations;
                    (Attempt::Register, Some((Hit::Registrations, outcome)))
                }
            }
        };
        if let Some((hit, outcome)) = refusal {
            self.warn_limit(hit, admission.source, now);
            self.local_results.push_back(Done {
                conn: id,
                outcome,
                known_account: false,
            });
            return;
        }
        let cancel = Arc::new(AtomicBool::new(false));
        conn.job = Some(cancel.clone());
        conn.attempt = Some(attempt);
        let job = Job {
            conn: id,
            request,
            cancel,
        };
        if self.auth.submit(job).is_err() {
            conn.job = None;
            match conn.attempt.take() {
                Some(Attempt::Register) => self.limits.registration_failed(&admission),
                Some(Attempt::Login(name, started)) => {
                    self.limits.login_answered(
                        &admission,
                        &name,
                        LoginAnswer::NotChecked,
                        started,
                        now,
                    );
                }
                None => {}
            }
            self.warn_limit(Hit::AuthQueue, admission.source, now);
            self.local_results.push_back(Done {
                conn: id,
                outcome: AuthOutcome::Busy,
                known_account: false,
            });
        }
    }

    /// Logs a limit hit at warn, at most once a minute per source and kind:
    /// an attack must not flood the log.
    fn warn_limit(&mut self, hit: Hit, source: Source, now: Instant) {
        if self.limits.should_warn(hit, source, now) {
            warn!("{source}: {hit} (logged at most once a minute per address and limit)");
        } else {
            debug!("{source}: {hit}");
        }
    }

    /// Appends a line to one live connection's output.
    fn queue(&mut self, id: ConnId, bytes: &[u8]) {
        let Some(conn) = self.conns.get_mut(id.key) else {
            return;
        };
        if conn.id != id || conn.closing.is_some() {
            return;
        }
        if let Err(refused) = push_output(conn, bytes, self.config.max_output, &mut self.dirty) {
            self.cut_off(id, refused);
        }
    }

    /// Appends one line to every Chatting connection but `except`: the
    /// bytes were formatted once by the session; this is only copies.
    fn broadcast(&mut self, except: usize, bytes: &[u8]) {
        self.pacer.spend(bytes.len());
        let limit = self.config.max_output;
        // Rare, so no allocation unless someone is over the limit.
        let mut over = Vec::new();
        for (key, conn) in self.conns.iter_mut() {
            if key == except || conn.closing.is_some() || !conn.session.is_chatting() {
                continue;
            }
            if let Err(refused) = push_output(conn, bytes, limit, &mut self.dirty) {
                over.push((conn.id, refused));
            }
        }
        for (id, refused) in over {
            self.cut_off(id, refused);
        }
    }

    /// A consumer that stopped reading: drop it and its buffer at once.
    fn cut_off(&mut self, id: ConnId, refused: Refused) {
        if refused == Refused::WriteFailed {
            debug!("conn {}: write error while making room", id.key);
            self.mark_closing(id, Closing::Now, "write error");
            return;
        }
        if let Some(conn) = self.conns.get(id.key) {
            let source = conn.admission.source;
            self.warn_limit(Hit::SlowConsumer, source, Instant::now());
        }
        self.mark_closing(id, Closing::Now, "slow consumer");
    }

    fn mark_closing(&mut self, id: ConnId, how: Closing, reason: &'static str) {
        let Some(conn) = self.conns.get_mut(id.key) else {
            return;
        };
        if conn.id != id || conn.closing == Some(Closing::Now) {
            return;
        }
        // Nobody will hear the answer: do not spend a bcrypt on it.
        if let Some(cancel) = conn.job.take() {
            cancel.store(true, Ordering::Relaxed);
        }
        if how == Closing::Now {
            conn.out.discard();
        } else if conn.closing.is_none() {
            conn.transport.finish();
            if !conn.dirty {
                conn.dirty = true;
                self.dirty.push(id.key);
            }
            self.linger_deadlines
                .push_back((Instant::now() + LINGER, id));
        }
        conn.closing = Some(how);
        conn.reason = reason;
        self.doomed.push(id);
    }

    // ---- writing ----

    /// Writes what `key` has queued; adjusts WRITABLE interest to match.
    fn flush(&mut self, key: usize) {
        let Some(conn) = self.conns.get_mut(key) else {
            return;
        };
        if conn.closing == Some(Closing::Now) {
            return;
        }
        let want = match conn.transport.flush(&mut conn.stream, &mut conn.out) {
            Ok(Flushed::All) => Interest::READABLE,
            Ok(Flushed::Partly) => Interest::READABLE | Interest::WRITABLE,
            Err(e) => {
                debug!("conn {key}: write error: {e}");
                let id = conn.id;
                self.mark_closing(id, Closing::Now, "write error");
                return;
            }
        };
        if conn.closing == Some(Closing::AfterFlush) && conn.all_written() {
            self.doomed.push(conn.id);
        }
        if want != conn.interest {
            // `reregister` replaces the set, so pass all of it.
            match self
                .poll
                .registry()
                .reregister(&mut conn.stream, Token(key), want)
            {
                Ok(()) => conn.interest = want,
                Err(e) => {
                    debug!("conn {key}: reregister: {e}");
                    let id = conn.id;
                    self.mark_closing(id, Closing::Now, "reregister failed");
                }
            }
        }
    }

    // ---- closing ----

    /// Removes a connection marked closing, once it may go: at once, or
    /// when its output is written and the peer has closed its side (or the
    /// linger deadline passed).
    fn reap(&mut self, id: ConnId, now: Instant) {
        let Some(conn) = self.conns.get_mut(id.key) else {
            return;
        };
        if conn.id != id {
            return;
        }
        match conn.closing {
            Some(Closing::Now) => {}
            Some(Closing::AfterFlush) if conn.all_written() => {
                // Our last byte is queued in the kernel: send FIN after it,
                // then wait for the peer's FIN while dropping its input.
                if let Err(e) = conn.stream.shutdown(std::net::Shutdown::Write) {
                    debug!("conn {}: shutdown: {e}", id.key);
                }
                conn.closing = Some(Closing::Draining);
                self.drain_input(id.key);
                return;
            }
            _ => return,
        }
        let mut conn = self.conns.remove(id.key);
        self.limits.release(&mut conn.admission);
        if let Some(Attempt::Login(name, _)) = conn.attempt.take() {
            self.limits.login_abandoned(&conn.admission, &name);
        }
        deregister(self.poll.registry(), &mut conn.stream);
        debug!("conn {}: closed ({}): {}", id.key, conn.peer, conn.reason);
        conn.session.handle_closed(&mut Ctx {
            now,
            config: &self.session_config,
            roster: &mut self.roster,
            actions: &mut self.actions,
        });
        self.apply(id);
        if self.accept_retry.is_some() {
            // A descriptor just came free.
            self.accept_retry = Some(now);
        }
    }

    /// Reads and drops whatever a closing peer still sends; once it has
    /// closed its side (or errs), the connection can go.
    fn drain_input(&mut self, key: usize) {
        let Some(conn) = self.conns.get_mut(key) else {
            return;
        };
        for _ in 0..READS_PER_TURN {
            match conn.stream.read(&mut self.scratch) {
                Ok(0) => break,
                Ok(_) => continue,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(_) => break,
            }
        }
        // Closed, failed, or still sending after a turn's worth: done.
        conn.closing = Some(Closing::Now);
        self.doomed.push(conn.id);
    }

    // ---- auth results and timers ----

    fn drain_results(&mut self, now: Instant) {
        while let Some(done) = self
            .local_results
            .pop_front()
            .or_else(|| self.auth.try_recv())
        {
            let id = done.conn;
            // A result for a connection that is gone (or whose slot holds a
            // newer one) must not log anybody in.
            if !self.is_live(id) {
                continue;
            }
            let conn = &mut self.conns[id.key];
            conn.job = None;
            match (conn.attempt.take(), &done.outcome) {
                (Some(Attempt::Login(name, started)), outcome) => {
                    let answer = match outcome {
                        AuthOutcome::LoggedIn(_) => LoginAnswer::LoggedIn,
                        AuthOutcome::WrongCredentials if done.known_account => {
                            LoginAnswer::WrongPassword
                        }
                        AuthOutcome::WrongCredentials => LoginAnswer::UnknownAccount,
                        _ => LoginAnswer::NotChecked,
                    };
                    self.limits
                        .login_answered(&conn.admission, &name, answer, started, now);
                }
                (Some(Attempt::Register), outcome)
                    if !matches!(outcome, AuthOutcome::Registered(_)) =>
                {
                    self.limits.registration_failed(&conn.admission);
                }
                _ => {}
            }
            conn.session.handle_auth_result(
                done.outcome,
                &mut Ctx {
                    now,
                    config: &self.session_config,
                    roster: &mut self.roster,
                    actions: &mut self.actions,
                },
            );
            if conn.session.is_chatting() {
                self.limits.chatting(&mut conn.admission);
            }
            self.apply(id);
            // Reading paused during the check; bytes may be waiting.
            self.again.push(id);
        }
    }

    fn run_timers(&mut self, now: Instant) {
        // Deadlines are pushed with a fixed offset from "now", so each queue
        // is already in order: pop from the front while due.
        while let Some(&(at, id)) = self.login_deadlines.front() {
            if at > now {
                break;
            }
            self.login_deadlines.pop_front();
            if !self.is_live(id) {
                continue;
            }
            let conn = &mut self.conns[id.key];
            conn.session.handle_login_timeout(&mut Ctx {
                now,
                config: &self.session_config,
                roster: &mut self.roster,
                actions: &mut self.actions,
            });
            self.apply(id);
        }
        while let Some(&(at, id)) = self.linger_deadlines.front() {
            if at > now {
                break;
            }
            self.linger_deadlines.pop_front();
            if self.conns.get(id.key).is_some_and(|c| c.id == id) {
                debug!("conn {}: did not finish closing in time", id.key);
                self.mark_closing(id, Closing::Now, "did not finish closing in time");
            }
        }
        while let Some(&Reverse((at, key, serial))) = self.transport_deadlines.peek() {
            if at > now {
                break;
            }
            self.transport_deadlines.pop();
            if self.conns.get(key).is_some_and(|c| c.id.serial == serial) {
                self.read(key, now);
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
        if self.accept_retry.is_some_and(|t| t <= now) {
            self.accept_retry = None;
            for which in 0..self.listeners.len() {
                self.accept(which, now);
            }
        }
        if now >= self.next_release {
            self.next_release = now + RELEASE_EVERY;
            self.release_buffers();
            self.limits.prune(now);
        }
    }

    /// Frees the output buffers of connections with nothing pending. A busy
    /// connection keeps its buffer from turn to turn (no malloc per write);
    /// this sweep makes sure an idle one holds none. Once a second over the
    /// whole slab is a few microseconds per thousand connections.
    fn release_buffers(&mut self) {
        let mut freed = 0usize;
        for (_, conn) in self.conns.iter_mut() {
            freed += usize::from(conn.out.release());
            freed += usize::from(conn.transport.release());
        }
        if freed > 0 {
            debug!("freed {freed} idle output buffers");
        }
        // glibc keeps freed memory in its heap, where holes between live
        // blocks never go back to the system on their own: after a burst
        // (thousands joining, each sent the online list) that would leave
        // the resident size high for good. Hand the free pages back.
        #[cfg(all(target_os = "linux", target_env = "gnu"))]
        if freed >= 64 {
            // SAFETY: malloc_trim only releases free memory of the allocator.
            unsafe {
                libc::malloc_trim(0);
            }
        }
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
        for (key, conn) in self.conns.iter_mut() {
            if matches!(conn.closing, Some(Closing::Now | Closing::Draining)) {
                continue;
            }
            // Nobody is told that anybody left: the shutdown line is last.
            conn.session.handle_shutdown(&mut Ctx {
                now,
                config: &self.session_config,
                roster: &mut self.roster,
                actions: &mut self.actions,
            });
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
        self.actions.clear();
    }
}

/// A token bucket of bytes: how much every reader's output may still grow.
/// It may go below zero by one read's worth of lines (a read is handled
/// whole); reading resumes once it is above zero again.
struct Pacer {
    tokens: f64,
    capacity: f64,
    rate: f64,
    last: Instant,
}

impl Pacer {
    fn new(capacity: usize, rate: f64) -> Pacer {
        Pacer {
            tokens: capacity as f64,
            capacity: capacity as f64,
            rate,
            last: Instant::now(),
        }
    }

    fn refill(&mut self, now: Instant) {
        let elapsed = now.saturating_duration_since(self.last).as_secs_f64();
        self.last = now;
        self.tokens = (self.tokens + elapsed * self.rate).min(self.capacity);
    }

    fn spend(&mut self, bytes: usize) {
        self.tokens -= bytes as f64;
    }

    fn has_room(&self) -> bool {
        self.tokens > 0.0
    }

    /// Held connections are let go only once a real share of the room is
    /// back (a quarter), not for every byte of refill: each then gets a
    /// useful read, and the loop sleeps in between.
    fn may_resume(&self) -> bool {
        self.tokens >= self.capacity / 4.0
    }

    fn resume_at(&self, now: Instant) -> Instant {
        let missing = self.capacity / 4.0 - self.tokens;
        if missing <= 0.0 {
            return now;
        }
        now + Duration::from_secs_f64(missing / self.rate)
    }
}

/// Appends to a connection's output and puts it on the dirty list; false if
/// that would pass the output limit.
///
/// The limit is on output the peer has not taken. Output is normally
/// written once at the end of a turn, so a burst within one turn (many
/// senders at once) could pass the limit for a reader that keeps up. So
/// before refusing, hand the socket what it takes now: a reader that is
/// reading has room in its socket buffers; one that stopped has none, and
/// is refused.
fn push_output(
    conn: &mut Conn,
    bytes: &[u8],
    limit: usize,
    dirty: &mut Vec<usize>,
) -> Result<(), Refused> {
    if !conn.out.push(bytes, limit) {
        if conn
            .transport
            .flush(&mut conn.stream, &mut conn.out)
            .is_err()
        {
            return Err(Refused::WriteFailed);
        }
        if !conn.out.push(bytes, limit) {
            return Err(Refused::OverLimit);
        }
    }
    if !conn.dirty {
        conn.dirty = true;
        dirty.push(conn.id.key);
    }
    Ok(())
}

/// Why output could not be queued.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Refused {
    /// More than `--max-output` unsent: a slow consumer.
    OverLimit,
    /// Writing to make room failed: the peer is gone.
    WriteFailed,
}

/// `::ffff:127.0.0.1` and the like: an IPv4 loopback peer on a dual-stack
/// socket.
fn is_mapped_loopback(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().is_some_and(|v4| v4.is_loopback()),
        IpAddr::V4(_) => false,
    }
}

fn deregister(registry: &Registry, source: &mut impl mio::event::Source) {
    if let Err(e) = registry.deregister(source) {
        debug!("deregister: {e}");
    }
}

/// A non-blocking listener with a real backlog (mio's own `bind` uses 128).
fn listen(addr: SocketAddr) -> io::Result<std::net::TcpListener> {
    use socket2::{Domain, Socket, Type};
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, None)?;
    if addr.is_ipv6() {
        socket.set_only_v6(true)?;
    }
    socket.set_reuse_address(true)?;
    socket.bind(&addr.into())?;
    socket.listen(LISTEN_BACKLOG)?;
    socket.set_nonblocking(true)?;
    Ok(socket.into())
}

/// Raises the soft limit on open files to the hard limit, so that
/// `--max-clients` can be reached. Returns the new soft limit.
pub fn raise_fd_limit() -> io::Result<u64> {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: `lim` is a valid, writable rlimit for the duration of the call.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) } != 0 {
        return Err(io::Error::last_os_error());
    }
    if lim.rlim_cur < lim.rlim_max {
        let raised = libc::rlimit {
            rlim_cur: lim.rlim_max,
            rlim_max: lim.rlim_max,
        };
        // SAFETY: `raised` is a valid rlimit; the call only reads it.
        if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &raised) } != 0 {
            return Err(io::Error::last_os_error());
        }
        lim = raised;
    }
    Ok(lim.rlim_cur)
}
