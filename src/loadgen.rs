//! Load generation: the scenarios behind `neochat-bench` and `cargo bench`.
//!
//! One thread, one `mio::Poll`, non-blocking sockets: the generator must not
//! be what limits the figures. It speaks NeoChat and, for comparison, Redis
//! pub/sub (SUBSCRIBE/PUBLISH on one channel), with the same message sizes,
//! the same closed loop and the same clock, so one tool measures both.
//!
//! How it keeps up: every benchmark message has the same length on the wire
//! (senders' names are of equal length, payloads are padded), so a receiver
//! counts messages by counting bytes; only a sample of receivers parses each
//! message for its timestamp. Latency is from the moment a message was meant
//! to be sent to the moment a receiver read it.
//!
//! Knows nothing of the server's internals: it is a client like any other.

mod files;
mod web;
pub use files::{FilesOpts, FilesReport, files};
pub use web::{WebOpts, WebReport, web};

use std::fmt;
use std::io::{self, IsTerminal, Read, Write};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::str::FromStr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use mio::net::TcpStream;
use mio::{Events, Interest, Poll, Token};

/// Which server, and which protocol to speak to it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Target {
    NeoChat(SocketAddr),
    Redis(SocketAddr),
}

impl Target {
    pub fn addr(&self) -> SocketAddr {
        match *self {
            Target::NeoChat(a) | Target::Redis(a) => a,
        }
    }

    pub fn kind(&self) -> &'static str {
        match self {
            Target::NeoChat(_) => "neochat",
            Target::Redis(_) => "redis",
        }
    }
}

impl FromStr for Target {
    type Err = String;
    fn from_str(s: &str) -> Result<Target, String> {
        let (kind, rest) = match s.split_once("://") {
            Some((k, r)) => (k, r),
            None => ("neochat", s),
        };
        let addr = rest
            .trim_end_matches('/')
            .parse::<SocketAddr>()
            .map_err(|e| format!("bad address `{rest}`: {e} (want HOST:PORT)"))?;
        match kind {
            "neochat" => Ok(Target::NeoChat(addr)),
            "redis" => Ok(Target::Redis(addr)),
            _ => Err(format!(
                "unknown scheme `{kind}`: use neochat:// or redis://"
            )),
        }
    }
}

impl fmt::Display for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}://{}", self.kind(), self.addr())
    }
}

/// Settings every scenario shares.
#[derive(Clone, Debug)]
pub struct Common {
    pub target: Target,
    /// Speak TLS to the target. The generator accepts any certificate: it
    /// measures a server, it does not protect a user.
    pub tls: bool,
    /// Account names start with this (NeoChat), channel name (Redis).
    pub prefix: String,
    /// Password of the generator's accounts (created if missing).
    pub password: String,
    /// Print a progress line on stderr while running.
    pub progress: bool,
    /// How long setup (connecting, logging in) may take.
    pub setup_timeout: Duration,
    /// NeoChat: a room (name without `#`, lowercase) that receivers and
    /// senders `/join` after logging in; senders' lines then go there and
    /// arrive as `#room name: text`. `None`: the lobby. Ignored for Redis.
    pub room: Option<String>,
    /// The chat pair's two threads run real-time (`SCHED_FIFO`, priority
    /// 1) where the system allows it: see [`raise_pair_priority`].
    pub pair_realtime: bool,
}

impl Common {
    pub fn new(target: Target) -> Common {
        Common {
            target,
            tls: false,
            prefix: "bench".into(),
            password: "bench-password".into(),
            progress: io::stderr().is_terminal(),
            setup_timeout: Duration::from_secs(300),
            room: None,
            pair_realtime: true,
        }
    }
}

/// The error of a failed run, with a line for the user.
#[derive(Debug)]
pub struct Error(String);

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Error {}

impl From<io::Error> for Error {
    fn from(e: io::Error) -> Error {
        Error(e.to_string())
    }
}

fn fail<T>(msg: impl Into<String>) -> Result<T, Error> {
    Err(Error(msg.into()))
}

/// Latency percentiles in microseconds.
#[derive(Clone, Copy, Debug, Default)]
pub struct Percentiles {
    pub samples: u64,
    pub p50_us: f64,
    pub p99_us: f64,
    pub p999_us: f64,
    pub max_us: f64,
}

impl Percentiles {
    fn of(h: &Histogram<u64>) -> Percentiles {
        let q = |p: f64| h.value_at_quantile(p) as f64 / 1000.0;
        Percentiles {
            samples: h.len(),
            p50_us: q(0.5),
            p99_us: q(0.99),
            p999_us: q(0.999),
            max_us: h.max() as f64 / 1000.0,
        }
    }
}

fn histogram() -> Histogram<u64> {
    // Nanoseconds, 1 ns to 100 s, 3 significant figures.
    Histogram::new_with_bounds(1, 100_000_000_000, 3).expect("valid histogram bounds")
}

// ---------------------------------------------------------------------------
// Connections

struct Peer {
    stream: TcpStream,
    /// The TLS session over `stream`, when the run speaks TLS.
    tls: Option<Box<rustls::ClientConnection>>,
    /// Unparsed input: lines during setup, partial messages afterwards.
    input: Vec<u8>,
    out: Vec<u8>,
    out_pos: usize,
    name: String,
    ready: bool,
    /// Benchmark messages received since measuring began.
    records: u64,
    /// Bytes of a partial message (receivers that only count).
    carry: usize,
    /// Parses each message for its timestamp.
    sampled: bool,
    closed: bool,
    /// Logged in (NeoChat: saw `* online (`), still waiting for its
    /// `/join` to be answered before it is ready.
    entered: bool,
    /// Plaintext bytes read so far.
    bytes_read: u64,
    /// Not read on events: joined notices pile up in the kernel and are
    /// read in bulk by `drain_muted`, instead of one syscall per notice.
    muted: bool,
}

impl Peer {
    fn queue(&mut self, bytes: &[u8]) {
        if self.out_pos == self.out.len() {
            self.out.clear();
            self.out_pos = 0;
        }
        self.out.extend_from_slice(bytes);
    }

    fn flush(&mut self) -> io::Result<()> {
        if let Some(tls) = &mut self.tls {
            return flush_tls(tls, &mut self.stream, &mut self.out, &mut self.out_pos);
        }
        while self.out_pos < self.out.len() {
            match self.stream.write(&self.out[self.out_pos..]) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(n) => self.out_pos += n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(()),
                // Not connected yet: the WRITABLE event comes when it is.
                Err(e) if e.kind() == io::ErrorKind::NotConnected => return Ok(()),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    fn pending(&self) -> usize {
        self.out.len() - self.out_pos
    }

    /// Reads plaintext: from the socket, or through TLS.
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.read_plain(buf)?;
        self.bytes_read += n as u64;
        Ok(n)
    }

    fn read_plain(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let Some(tls) = &mut self.tls else {
            return self.stream.read(buf);
        };
        loop {
            match tls.reader().read(buf) {
                Ok(n) => return Ok(n),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Ok(0),
                Err(e) => return Err(e),
            }
            match tls.read_tls(&mut self.stream) {
                Ok(0) => return Ok(0),
                Ok(_) => {
                    tls.process_new_packets().map_err(io::Error::other)?;
                    if tls.wants_write() {
                        let mut none = Vec::new();
                        let mut pos = 0;
                        flush_tls(tls, &mut self.stream, &mut none, &mut pos)?;
                    }
                }
                Err(e) => return Err(e),
            }
        }
    }
}

/// Hands `out[*pos..]` to TLS and writes the records, until done or the
/// socket would block.
fn flush_tls(
    tls: &mut rustls::ClientConnection,
    stream: &mut TcpStream,
    out: &mut [u8],
    pos: &mut usize,
) -> io::Result<()> {
    loop {
        while *pos < out.len() {
            let n = tls.writer().write(&out[*pos..])?;
            if n == 0 {
                break;
            }
            *pos += n;
        }
        if !tls.wants_write() {
            return Ok(());
        }
        while tls.wants_write() {
            match tls.write_tls(stream) {
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(()),
                Err(e) if e.kind() == io::ErrorKind::NotConnected => return Ok(()),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        if *pos == out.len() {
            return Ok(());
        }
    }
}

/// A client configuration that accepts any certificate: the generator
/// loads servers with self-signed certificates, and sends nothing secret.
fn tls_config() -> std::sync::Arc<rustls::ClientConfig> {
    use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
    use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
    use rustls::{DigitallySignedStruct, SignatureScheme};

    use crate::transport::tls::Signatures;

    #[derive(Debug)]
    struct AnyCert(Signatures);
    impl ServerCertVerifier for AnyCert {
        fn verify_server_cert(
            &self,
            _: &CertificateDer<'_>,
            _: &[CertificateDer<'_>],
            _: &ServerName<'_>,
            _: &[u8],
            _: UnixTime,
        ) -> Result<ServerCertVerified, rustls::Error> {
            Ok(ServerCertVerified::assertion())
        }
        fn verify_tls12_signature(
            &self,
            m: &[u8],
            c: &CertificateDer<'_>,
            d: &DigitallySignedStruct,
        ) -> Result<HandshakeSignatureValid, rustls::Error> {
            self.0.tls12(m, c, d)
        }
        fn verify_tls13_signature(
            &self,
            m: &[u8],
            c: &CertificateDer<'_>,
            d: &DigitallySignedStruct,
        ) -> Result<HandshakeSignatureValid, rustls::Error> {
            self.0.tls13(m, c, d)
        }
        fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
            self.0.schemes()
        }
    }

    static CONFIG: std::sync::OnceLock<std::sync::Arc<rustls::ClientConfig>> =
        std::sync::OnceLock::new();
    CONFIG
        .get_or_init(|| {
            let provider = crate::transport::tls::provider();
            let config = rustls::ClientConfig::builder_with_provider(provider.clone())
                .with_safe_default_protocol_versions()
                .expect("default TLS versions")
                .dangerous()
                .with_custom_certificate_verifier(std::sync::Arc::new(AnyCert(Signatures::new(
                    provider,
                ))))
                .with_no_client_auth();
            std::sync::Arc::new(config)
        })
        .clone()
}

/// Runs in one process (the load benchmark) rotate through source blocks.
static RUNS: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);

/// Picks a fresh source block for the scenario about to run.
fn next_source_block() -> u8 {
    let run = RUNS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    ((std::process::id().wrapping_add(run * 37)) % 250) as u8 + 1
}

/// How often peers muted during setup are drained.
const DRAIN_EVERY: Duration = Duration::from_secs(1);

/// The longest a timed sender sleeps without looking at its sockets.
const NAP: Duration = Duration::from_micros(50);

/// How long the chat pair runs before its quiet window opens: what setup
/// left the server to do (thousands of connections just closed, their
/// tokens being stored) is not quiet, and must not count as such.
const PAIR_SETTLE: Duration = Duration::from_secs(1);

/// How often the pair's receiver, blocked until bytes come, looks whether
/// the run is over.
const PAIR_WAKE: Duration = Duration::from_millis(20);

struct Net {
    /// Source block of this run's connections (`source_for`).
    block: u8,
    poll: Poll,
    events: Events,
    peers: Vec<Peer>,
    scratch: Vec<u8>,
}

impl Net {
    fn new() -> io::Result<Net> {
        // Naps of tens of microseconds need the default 50 us timer slack off.
        // SAFETY: PR_SET_TIMERSLACK takes a plain integer; no memory is passed.
        unsafe {
            libc::prctl(libc::PR_SET_TIMERSLACK, 1 as libc::c_ulong);
        }
        Ok(Net {
            block: next_source_block(),
            poll: Poll::new()?,
            events: Events::with_capacity(4096),
            peers: Vec::new(),
            scratch: vec![0; 256 * 1024],
        })
    }

    /// Starts a non-blocking connect from `source` (port chosen by the OS),
    /// speaking TLS over it if `tls`.
    fn connect(
        &mut self,
        to: SocketAddr,
        source: Option<IpAddr>,
        name: String,
        tls: bool,
    ) -> io::Result<usize> {
        use socket2::{Domain, Socket, Type};
        let socket = Socket::new(Domain::for_address(to), Type::STREAM, None)?;
        socket.set_nonblocking(true)?;
        socket.set_tcp_nodelay(true)?;
        if let Some(ip) = source {
            socket.bind(&SocketAddr::new(ip, 0).into())?;
        }
        match socket.connect(&to.into()) {
            Ok(()) => {}
            Err(e) if e.raw_os_error() == Some(libc::EINPROGRESS) => {}
            Err(e) => return Err(e),
        }
        let mut stream = TcpStream::from_std(socket.into());
        let i = self.peers.len();
        self.poll.registry().register(
            &mut stream,
            Token(i),
            Interest::READABLE | Interest::WRITABLE,
        )?;
        let tls = if tls {
            let server = rustls::pki_types::ServerName::IpAddress(to.ip().into());
            let conn =
                rustls::ClientConnection::new(tls_config(), server).map_err(io::Error::other)?;
            Some(Box::new(conn))
        } else {
            None
        };
        self.peers.push(Peer {
            stream,
            tls,
            input: Vec::new(),
            out: Vec::new(),
            out_pos: 0,
            name,
            ready: false,
            records: 0,
            carry: 0,
            sampled: false,
            closed: false,
            entered: false,
            bytes_read: 0,
            muted: false,
        });
        Ok(i)
    }

    /// Waits for events up to `timeout`, reads everything readable (handing
    /// each chunk to `on_data`) and writes everything pending.
    fn turn(
        &mut self,
        timeout: Duration,
        mut on_data: impl FnMut(usize, &mut Peer, &[u8]) -> Result<(), Error>,
    ) -> Result<usize, Error> {
        match self.poll.poll(&mut self.events, Some(timeout)) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::Interrupted => return Ok(0),
            Err(e) => return Err(e.into()),
        }
        let mut n = 0;
        for event in self.events.iter() {
            n += 1;
            let i = event.token().0;
            let peer = &mut self.peers[i];
            if peer.closed {
                continue;
            }
            if peer.muted {
                // Read later, in bulk; writes still go out.
                if event.is_writable() {
                    peer.flush()
                        .map_err(|e| Error(format!("{}: write: {e}", peer.name)))?;
                }
                continue;
            }
            if event.is_writable() {
                peer.flush()
                    .map_err(|e| Error(format!("{}: write: {e}", peer.name)))?;
            }
            if event.is_readable() || event.is_read_closed() || event.is_error() {
                loop {
                    match peer.read(&mut self.scratch) {
                        Ok(0) => {
                            peer.closed = true;
                            on_data(i, peer, &[])?;
                            break;
                        }
                        Ok(n) => on_data(i, peer, &self.scratch[..n])?,
                        Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                        Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                        Err(e) => return fail(format!("{}: read: {e}", peer.name)),
                    }
                }
            }
        }
        Ok(n)
    }

    /// A turn for timed sending: epoll's timeout has millisecond grain (mio
    /// rounds up), far too coarse for latency, so poll without waiting and,
    /// if nothing happened, nap briefly until `until`.
    fn turn_until(
        &mut self,
        until: Instant,
        on_data: impl FnMut(usize, &mut Peer, &[u8]) -> Result<(), Error>,
    ) -> Result<(), Error> {
        if self.turn(Duration::ZERO, on_data)? == 0 {
            let nap = until.saturating_duration_since(Instant::now());
            std::thread::sleep(nap.min(NAP));
        }
        Ok(())
    }

    /// Reads and drops everything waiting on muted peers, then unmutes
    /// them if `unmute`. Reads to `WouldBlock`, so the next byte brings a
    /// fresh edge-triggered event.
    fn drain_muted(&mut self, unmute: bool) -> Result<(), Error> {
        for (i, peer) in self.peers.iter_mut().enumerate() {
            if !peer.muted || peer.closed {
                continue;
            }
            loop {
                match peer.read(&mut self.scratch) {
                    Ok(0) => return fail(format!("{}: closed by the server", peer.name)),
                    Ok(_) => {}
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(e) => return fail(format!("{}: read: {e}", peer.name)),
                }
            }
            if unmute {
                peer.muted = false;
                self.poll.registry().reregister(
                    &mut peer.stream,
                    Token(i),
                    Interest::READABLE | Interest::WRITABLE,
                )?;
            }
        }
        Ok(())
    }

    /// Stops read events for a peer (each notice would be one), until
    /// `drain_muted` unmutes it.
    fn mute(&mut self, i: usize) -> Result<(), Error> {
        let peer = &mut self.peers[i];
        peer.muted = true;
        self.poll
            .registry()
            .reregister(&mut peer.stream, Token(i), Interest::WRITABLE)?;
        Ok(())
    }

    fn flush(&mut self, i: usize) -> Result<(), Error> {
        let peer = &mut self.peers[i];
        peer.flush()
            .map_err(|e| Error(format!("{}: write: {e}", peer.name)))
    }
}

/// Source address of connection `i` to `to`: one loopback address per
/// 20,000 connections, since one source address has only about 28,000
/// ephemeral ports. Each run (process) takes its own `127.0.X.*` block, so
/// the TIME_WAIT sockets a previous run left behind (the generator closes
/// first) do not exhaust this run's ports.
fn source_for(to: SocketAddr, i: usize, block: u8) -> Option<IpAddr> {
    match to.ip() {
        IpAddr::V4(ip) if ip.is_loopback() => {
            let n = u8::try_from(1 + i / 20_000).unwrap_or(u8::MAX);
            Some(IpAddr::V4(Ipv4Addr::new(127, 0, block, n)))
        }
        _ => None,
    }
}

/// Takes whole lines (without LF and CR) off the front of `buf`.
fn take_lines(
    buf: &mut Vec<u8>,
    mut each: impl FnMut(&[u8]) -> Result<(), Error>,
) -> Result<(), Error> {
    let mut start = 0;
    while let Some(n) = memchr::memchr(b'\n', &buf[start..]) {
        let line = &buf[start..start + n];
        each(line.strip_suffix(b"\r").unwrap_or(line))?;
        start += n + 1;
    }
    buf.drain(..start);
    Ok(())
}

// ---------------------------------------------------------------------------
// Setup: log in (NeoChat) or subscribe (Redis), then line everybody up.

/// Connections mid-handshake at once during setup (below the server's
/// default password-check queue of 1,024).
const HANDSHAKES_IN_FLIGHT: usize = 128;

/// How [`join_all`] brings its peers to "ready".
#[derive(Clone, Copy, Debug)]
struct How {
    /// Redis: SUBSCRIBE (else a Redis peer is ready once connected).
    subscribe: bool,
    /// NeoChat: log in (`L`) first instead of registering (`R`) first.
    login_first: bool,
    /// NeoChat: `/join` the run's room (`Common::room`) once logged in.
    room: bool,
    /// Handshakes in flight at most.
    window: usize,
}

impl How {
    /// Receivers: subscribe (Redis), join the room (NeoChat, if any).
    const RECEIVERS: How = How {
        subscribe: true,
        login_first: false,
        room: true,
        window: HANDSHAKES_IN_FLIGHT,
    };
    /// Senders: in the room, not subscribed.
    const SENDERS: How = How {
        subscribe: false,
        ..How::RECEIVERS
    };
    /// Logged in to the lobby only.
    const LOBBY: How = How {
        room: false,
        ..How::SENDERS
    };
}

/// The room's prefix on the wire (`#room `), if the run has a room and
/// speaks NeoChat.
fn room_prefix(c: &Common) -> Option<String> {
    match (c.target, &c.room) {
        (Target::NeoChat(_), Some(room)) => Some(format!("#{room} ")),
        _ => None,
    }
}

/// Connects peers named `names` and brings them to "ready": logged in on
/// NeoChat (registering first, logging in if the account exists, unless
/// `how.login_first`), and a member of the run's room if `how.room`; or
/// subscribed on Redis when `how.subscribe` is set. Lines the server sends
/// besides (history `~...`, `#room ...` lines, notices) are skipped.
fn join_all(
    net: &mut Net,
    c: &Common,
    names: &[String],
    how: How,
    label: &str,
) -> Result<Vec<usize>, Error> {
    join_with(net, c, names, None, how, label)
}

/// [`join_all`], logging peer `k` in with `tokens[k]` (`T`) instead of a
/// password when `tokens` is given (NeoChat only).
fn join_with(
    net: &mut Net,
    c: &Common,
    names: &[String],
    tokens: Option<&[String]>,
    how: How,
    label: &str,
) -> Result<Vec<usize>, Error> {
    let addr = c.target.addr();
    let first = net.peers.len();
    let mut ids: Vec<usize> = Vec::with_capacity(names.len());
    let password = c.password.clone();
    let redis = matches!(c.target, Target::Redis(_));
    let room = if how.room { c.room.clone() } else { None };
    let join_line = room.as_ref().map(|r| format!("/join #{r}\n"));
    let joined_online = room.as_ref().map(|r| format!("#{r} * online ("));
    let joined_again = room.as_ref().map(|r| format!("* talking in #{r}"));
    let deadline = Instant::now() + c.setup_timeout;
    let mut progress = Progress::new(c.progress, label);
    let mut next_drain = Instant::now() + DRAIN_EVERY;
    loop {
        // Handshakes go out in a window, not all at once: the server bounds
        // its password-check queue (`--max-auth-queue`) and answers
        // `! server busy` past it, as it should to a flood of logins.
        let mut in_flight = ids.iter().filter(|&&i| !net.peers[i].ready).count();
        while ids.len() < names.len() && in_flight < how.window.max(1) {
            let k = ids.len();
            let name = &names[k];
            let i = net
                .connect(
                    addr,
                    source_for(addr, first + k, net.block),
                    name.clone(),
                    c.tls,
                )
                .map_err(|e| Error(format!("cannot connect to {addr}: {e}")))?;
            let peer = &mut net.peers[i];
            match c.target {
                Target::NeoChat(_) => {
                    let hello = match tokens.and_then(|t| t.get(k)) {
                        Some(token) => format!("T\n{token}\n"),
                        None => {
                            let kind = if how.login_first { 'L' } else { 'R' };
                            format!("{kind}\n{name}\n{}\n", c.password)
                        }
                    };
                    peer.queue(hello.as_bytes());
                }
                Target::Redis(_) if how.subscribe => {
                    peer.queue(format!("SUBSCRIBE {}\r\n", c.prefix).as_bytes());
                }
                Target::Redis(_) => peer.ready = true,
            }
            in_flight += usize::from(!peer.ready);
            ids.push(i);
        }
        let waiting = in_flight + (names.len() - ids.len());
        progress.show(|| format!("{} of {} ready", names.len() - waiting, names.len()));
        if waiting == 0 {
            net.drain_muted(true)?;
            break;
        }
        if Instant::now() >= next_drain {
            // Bounded backlog: the server cuts off readers that fall 1 MiB
            // behind, and a drain every second reads it in big gulps.
            net.drain_muted(false)?;
            next_drain = Instant::now() + DRAIN_EVERY;
        }
        if Instant::now() > deadline {
            return fail(format!(
                "setup timed out: {waiting} of {} connections not ready",
                ids.len()
            ));
        }
        net.turn(Duration::from_millis(50), |_, peer, data| {
            if data.is_empty() {
                return fail(format!(
                    "{}: the server closed the connection during setup",
                    peer.name
                ));
            }
            if peer.ready {
                // Joined notices and the like: not needed.
                peer.input.clear();
                return Ok(());
            }
            peer.input.extend_from_slice(data);
            if redis {
                if memchr::memmem::find(&peer.input, b":1\r\n").is_some() {
                    peer.ready = true;
                    peer.input.clear();
                }
                return Ok(());
            }
            let mut input = std::mem::take(&mut peer.input);
            let mut relogin = false;
            let mut join = false;
            let mut ready = false;
            let mut entered = peer.entered;
            let name = peer.name.clone();
            take_lines(&mut input, |line| {
                if ready {
                    return Ok(());
                }
                if entered {
                    // Waiting for the room: its online line (joined now,
                    // or rejoined at login as a member), or "already in".
                    let is = |s: &Option<String>| {
                        s.as_ref().is_some_and(|s| line.starts_with(s.as_bytes()))
                    };
                    if is(&joined_online) || is(&joined_again) {
                        ready = true;
                    } else if line.starts_with(b"! ") {
                        return fail(format!(
                            "{name}: /join said `{}`",
                            String::from_utf8_lossy(line)
                        ));
                    }
                    return Ok(());
                }
                if line.starts_with(b"* online (") {
                    entered = true;
                    if join_line.is_some() {
                        join = true;
                    } else {
                        ready = true;
                    }
                } else if line == b"! username taken" {
                    relogin = true;
                } else if line.starts_with(b"! wrong username") {
                    return fail(format!(
                        "account {name} exists with another password (--password), \
                         or does not exist"
                    ));
                } else if line.starts_with(b"! invalid or expired token") {
                    return fail(format!(
                        "{name}: the server refused the token it handed out in setup"
                    ));
                } else if line.starts_with(b"! ") {
                    return fail(format!(
                        "{name}: server said `{}`",
                        String::from_utf8_lossy(line)
                    ));
                }
                Ok(())
            })?;
            peer.input = if ready { Vec::new() } else { input };
            peer.ready = ready;
            peer.entered = entered;
            if relogin {
                peer.queue(format!("L\n{name}\n{password}\n").as_bytes());
            }
            if join && let Some(j) = &join_line {
                peer.queue(j.as_bytes());
            }
            if relogin || join {
                peer.flush().map_err(|e| Error(format!("{name}: {e}")))?;
            }
            Ok(())
        })?;
        for &i in &ids {
            if net.peers[i].ready && !net.peers[i].muted {
                net.mute(i)?;
            }
        }
    }
    progress.done();
    Ok(ids)
}

/// Sends a unique marker from `sender` and waits until every receiver has
/// seen it, so that what follows in each stream is benchmark traffic only.
fn line_up(
    net: &mut Net,
    c: &Common,
    sender: usize,
    receivers: &[usize],
    timeout: Duration,
) -> Result<(), Error> {
    let nonce = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos())
        ^ u128::from(std::process::id());
    let marker = format!("bench-sync-{nonce:x}");
    let msg = encode_message(c, marker.as_bytes());
    for &r in receivers {
        net.peers[r].ready = false;
        net.peers[r].input.clear();
    }
    net.peers[sender].queue(&msg);
    net.flush(sender)?;
    let tail: Vec<u8> = match c.target {
        Target::NeoChat(_) => format!("{marker}\n").into_bytes(),
        Target::Redis(_) => format!("{marker}\r\n").into_bytes(),
    };
    let deadline = Instant::now() + timeout;
    let mut is_receiver = vec![false; net.peers.len()];
    for &r in receivers {
        is_receiver[r] = true;
    }
    while receivers.iter().any(|&r| !net.peers[r].ready) {
        if Instant::now() > deadline {
            return fail(
                "timed out lining receivers up (is the server dropping messages? NeoChat needs --rate off)",
            );
        }
        net.turn(Duration::from_millis(50), |i, peer, data| {
            if data.is_empty() {
                return fail(format!("{}: closed by the server", peer.name));
            }
            if !is_receiver[i] || peer.ready {
                // Senders and lined-up receivers: keep what follows.
                if is_receiver[i] {
                    peer.input.extend_from_slice(data);
                }
                return Ok(());
            }
            peer.input.extend_from_slice(data);
            if let Some(at) = memchr::memmem::find(&peer.input, &tail) {
                peer.input.drain(..at + tail.len());
                peer.ready = true;
            } else if peer.input.len() > tail.len() {
                // Keep only what could still hold the start of the marker.
                let keep = peer.input.len() - tail.len();
                peer.input.drain(..keep);
            }
            Ok(())
        })?;
    }
    Ok(())
}

/// One message as a sender puts it on the wire.
fn encode_message(c: &Common, payload: &[u8]) -> Vec<u8> {
    match c.target {
        Target::NeoChat(_) => {
            let mut m = payload.to_vec();
            m.push(b'\n');
            m
        }
        Target::Redis(_) => {
            let ch = &c.prefix;
            let mut m = format!(
                "*3\r\n$7\r\nPUBLISH\r\n${}\r\n{ch}\r\n${}\r\n",
                ch.len(),
                payload.len()
            )
            .into_bytes();
            m.extend_from_slice(payload);
            m.extend_from_slice(b"\r\n");
            m
        }
    }
}

/// The layout of a delivered benchmark message: its length on the wire and
/// where its payload starts.
#[derive(Clone, Copy, Debug)]
struct Layout {
    len: usize,
    payload_at: usize,
}

fn layout(c: &Common, sender_name_len: usize, size: usize) -> Layout {
    match c.target {
        // "name: payload\n", or "#room name: payload\n" in a room
        Target::NeoChat(_) => {
            let room = room_prefix(c).map_or(0, |p| p.len());
            Layout {
                len: room + sender_name_len + 2 + size + 1,
                payload_at: room + sender_name_len + 2,
            }
        }
        // *3 $7 message $n chan $size payload
        Target::Redis(_) => {
            let head = format!(
                "*3\r\n$7\r\nmessage\r\n${}\r\n{}\r\n${size}\r\n",
                c.prefix.len(),
                c.prefix
            );
            Layout {
                len: head.len() + size + 2,
                payload_at: head.len(),
            }
        }
    }
}

const STAMP_LEN: usize = 34;

/// `seq:time:` in fixed-width hex, padded with `x` to `size` bytes.
fn payload(seq: u64, t_ns: u64, size: usize, buf: &mut Vec<u8>) {
    buf.clear();
    let _ = write!(buf, "{seq:016x}:{t_ns:016x}:");
    buf.resize(size.max(STAMP_LEN), b'x');
}

fn stamp_of(payload: &[u8]) -> Option<u64> {
    let hex = payload.get(17..33)?;
    u64::from_str_radix(std::str::from_utf8(hex).ok()?, 16).ok()
}

/// Counts delivered messages (and times a sample of them) for a receiver.
fn receive(
    peer: &mut Peer,
    data: &[u8],
    lay: Layout,
    epoch: Instant,
    hist: &mut Histogram<u64>,
) -> Result<(), Error> {
    if data.is_empty() {
        return fail(format!(
            "{}: closed by the server while measuring (cut off as a slow consumer?)",
            peer.name
        ));
    }
    if !peer.sampled {
        let total = peer.carry + data.len();
        peer.records += (total / lay.len) as u64;
        peer.carry = total % lay.len;
        return Ok(());
    }
    peer.input.extend_from_slice(data);
    let now = epoch.elapsed().as_nanos() as u64;
    let mut at = 0;
    while peer.input.len() - at >= lay.len {
        let msg = &peer.input[at..at + lay.len];
        if msg[lay.len - 1] != b'\n' {
            return fail(format!(
                "{}: unexpected data in the message stream: {:?}",
                peer.name,
                String::from_utf8_lossy(&msg[..msg.len().min(80)])
            ));
        }
        let sent = stamp_of(&msg[lay.payload_at..])
            .ok_or_else(|| Error(format!("{}: malformed benchmark message", peer.name)))?;
        hist.saturating_record(now.saturating_sub(sent).max(1));
        peer.records += 1;
        at += lay.len;
    }
    peer.input.drain(..at);
    Ok(())
}

struct Progress {
    on: bool,
    label: String,
    last: Instant,
}

impl Progress {
    fn new(on: bool, label: &str) -> Progress {
        Progress {
            on,
            label: label.to_owned(),
            last: Instant::now(),
        }
    }

    fn show(&mut self, text: impl FnOnce() -> String) {
        if self.on && self.last.elapsed() >= Duration::from_millis(500) {
            self.last = Instant::now();
            eprint!("\r\x1b[K{}: {}", self.label, text());
        }
    }

    fn done(&self) {
        if self.on {
            eprint!("\r\x1b[K");
        }
    }
}

fn names(prefix: &str, role: &str, n: usize) -> Vec<String> {
    (0..n).map(|i| format!("{prefix}{role}{i:05}")).collect()
}

// ---------------------------------------------------------------------------
// Scenarios

/// Options of the `fanout` and `latency` scenarios.
#[derive(Clone, Debug)]
pub struct FanoutOpts {
    pub receivers: usize,
    pub senders: usize,
    /// Payload bytes per message (at least 34).
    pub size: usize,
    /// Closed loop: messages in flight (sent, not yet read by every receiver).
    pub window: usize,
    /// Open loop instead: messages per second in all, spread over senders.
    pub rate: Option<f64>,
    pub warmup: Duration,
    pub duration: Duration,
    /// Receivers that parse every message for its timestamp.
    pub sampled: usize,
    /// The server's process, to measure the CPU it spends per delivery.
    pub pid: Option<u32>,
}

impl Default for FanoutOpts {
    fn default() -> Self {
        FanoutOpts {
            receivers: 1000,
            senders: 1,
            size: 64,
            window: 64,
            rate: None,
            warmup: Duration::from_secs(1),
            duration: Duration::from_secs(5),
            sampled: 32,
            pid: None,
        }
    }
}

#[derive(Clone, Debug)]
pub struct FanoutReport {
    pub target: String,
    pub receivers: usize,
    pub senders: usize,
    pub size: usize,
    pub seconds: f64,
    pub messages: u64,
    pub deliveries: u64,
    pub deliveries_per_sec: f64,
    pub latency: Percentiles,
    /// Server CPU time (user + system) while measuring, when its pid was
    /// given.
    pub server_cpu_secs: Option<f64>,
    /// The same from the start of the measurement until the server went
    /// quiet after the run (its store thread done with the run's messages).
    pub server_cpu_drained_secs: Option<f64>,
    /// Messages sent in the whole run, warm-up included (not the line-up
    /// marker).
    pub sent: u64,
}

/// User plus system CPU time of process `pid`, from `/proc/PID/stat`.
pub fn cpu_secs(pid: u32) -> Result<f64, Error> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .map_err(|e| Error(format!("cannot read /proc/{pid}/stat: {e}")))?;
    // The command name may hold spaces: fields count from after its ')'.
    let rest = stat
        .rsplit_once(')')
        .map(|(_, r)| r)
        .ok_or_else(|| Error(format!("odd /proc/{pid}/stat")))?;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // utime and stime are fields 14 and 15 of the whole line, 12 and 13 here.
    let ticks = |i: usize| -> Result<f64, Error> {
        fields
            .get(i)
            .and_then(|f| f.parse::<f64>().ok())
            .ok_or_else(|| Error(format!("odd /proc/{pid}/stat")))
    };
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
    Ok((ticks(11)? + ticks(12)?) / hz.max(1.0))
}

/// Fan-out: S senders, R receivers in one room (or channel). Closed loop by
/// default; with `rate`, an open loop at that offered rate (`latency`).
///
/// Errors are not counted but fatal: a connection closed by the server, an
/// unexpected line in a message stream or a rate the target cannot sustain
/// ends the run with a message saying which.
pub fn fanout(c: &Common, o: &FanoutOpts) -> Result<FanoutReport, Error> {
    if o.size < STAMP_LEN {
        return fail(format!("--size must be at least {STAMP_LEN}"));
    }
    if o.receivers == 0 || o.senders == 0 {
        return fail("need at least one receiver and one sender");
    }
    let mut net = Net::new()?;
    let recv_names = names(&c.prefix, "r", o.receivers);
    let send_names = names(&c.prefix, "s", o.senders);
    let receivers = join_all(&mut net, c, &recv_names, How::RECEIVERS, "receivers")?;
    let senders = join_all(&mut net, c, &send_names, How::SENDERS, "senders")?;
    line_up(&mut net, c, senders[0], &receivers, c.setup_timeout)?;

    let lay = layout(c, send_names[0].len(), o.size);
    let step = (o.receivers / o.sampled.clamp(1, o.receivers)).max(1);
    for (k, &r) in receivers.iter().enumerate() {
        let peer = &mut net.peers[r];
        peer.sampled = o.rate.is_some() || k % step == 0;
        // What arrived after the marker is already benchmark traffic.
        let early = std::mem::take(&mut peer.input);
        peer.records = 0;
        peer.carry = 0;
        if !early.is_empty() {
            let mut scratch = histogram();
            receive(peer, &early, lay, Instant::now(), &mut scratch)?;
            peer.records = 0;
        }
    }
    let mut is_receiver = vec![false; net.peers.len()];
    for &r in &receivers {
        is_receiver[r] = true;
    }

    let epoch = Instant::now();
    let start_measuring = epoch + o.warmup;
    let end = start_measuring + o.duration;
    let mut hist = histogram();
    let mut sent: u64 = 0;
    let mut buf = Vec::with_capacity(o.size);
    let mut measuring = false;
    let mut cpu_at_start = None;
    let mut base_deliveries = 0;
    let mut base_sent = 0;
    let mut t0 = start_measuring;
    let mut progress = Progress::new(
        c.progress,
        if o.rate.is_some() {
            "latency"
        } else {
            "fanout"
        },
    );
    let mut last_report = (Instant::now(), 0u64);
    let backlog_limit = o.rate.map_or(u64::MAX, |r| (r * 5.0) as u64 + 1000);
    let mut completed = 0;
    loop {
        let now = Instant::now();
        if now >= end {
            break;
        }
        if !measuring && now >= start_measuring {
            measuring = true;
            t0 = now;
            base_deliveries = receivers.iter().map(|&r| net.peers[r].records).sum();
            base_sent = sent;
            hist.reset();
            if let Some(pid) = o.pid {
                cpu_at_start = Some(cpu_secs(pid)?);
            }
        }
        completed = receivers
            .iter()
            .map(|&r| net.peers[r].records)
            .min()
            .unwrap_or(0);
        // How many messages may go now.
        let allowed = match o.rate {
            None => (completed + o.window as u64).saturating_sub(sent),
            Some(rate) => {
                if sent - completed > backlog_limit {
                    return fail(format!(
                        "the target cannot sustain {rate} messages/s (backlog {})",
                        sent - completed
                    ));
                }
                // Message k is due at k / rate: at time 0, one is due.
                let due = (now.duration_since(epoch).as_secs_f64() * rate) as u64 + 1;
                due.saturating_sub(sent)
            }
        };
        for _ in 0..allowed {
            let s = senders[(sent % senders.len() as u64) as usize];
            // Open loop: stamp the time the message was due, so a stalled
            // sender does not hide latency (no coordinated omission).
            let t = match o.rate {
                Some(rate) => (sent as f64 / rate * 1e9) as u64,
                None => epoch.elapsed().as_nanos() as u64,
            };
            payload(sent, t, o.size, &mut buf);
            let msg = encode_message(c, &buf);
            net.peers[s].queue(&msg);
            sent += 1;
        }
        for &s in &senders {
            if net.peers[s].pending() > 0 {
                net.flush(s)?;
            }
        }
        let on_data = |i: usize, peer: &mut Peer, data: &[u8]| {
            if is_receiver[i] {
                receive(peer, data, lay, epoch, &mut hist)
            } else if data.is_empty() {
                fail(format!("{}: closed by the server", peer.name))
            } else {
                Ok(()) // replies to PUBLISH, or other senders' lines
            }
        };
        match o.rate {
            Some(rate) => {
                let next = epoch + Duration::from_secs_f64(sent as f64 / rate);
                net.turn_until(next, on_data)?;
            }
            None => {
                net.turn(Duration::from_millis(1), on_data)?;
            }
        }
        progress.show(|| {
            let total: u64 = receivers.iter().map(|&r| net.peers[r].records).sum();
            let (t, d) = last_report;
            let rate = (total - d) as f64 / t.elapsed().as_secs_f64();
            last_report = (Instant::now(), total);
            format!(
                "{:.1}s {:.2}M deliveries/s, {} sent",
                epoch.elapsed().as_secs_f64(),
                rate / 1e6,
                sent
            )
        });
    }
    progress.done();
    let seconds = t0.elapsed().as_secs_f64();
    let server_cpu_secs = match (o.pid, cpu_at_start) {
        (Some(pid), Some(start)) => Some(cpu_secs(pid)? - start),
        _ => None,
    };
    let total: u64 = receivers.iter().map(|&r| net.peers[r].records).sum();
    let deliveries = total - base_deliveries;
    // What the server still does for the messages of the run once sending
    // stops (the store thread committing what it has queued, the last
    // deliveries): counted until its CPU time stops moving.
    let server_cpu_drained_secs = match (o.pid, cpu_at_start) {
        (Some(pid), Some(start)) => {
            let mut last = cpu_secs(pid)?;
            let give_up = Instant::now() + DRAIN_WAIT;
            let mut check = Instant::now() + QUIET_CHECK;
            loop {
                net.turn(Duration::from_millis(10), |i, peer, data| {
                    if is_receiver[i] && data.is_empty() {
                        return fail(format!("{}: closed by the server", peer.name));
                    }
                    Ok(()) // the last deliveries: read, not counted
                })?;
                if Instant::now() >= check {
                    let now = cpu_secs(pid)?;
                    if now == last || Instant::now() >= give_up {
                        break Some(now - start);
                    }
                    last = now;
                    check = Instant::now() + QUIET_CHECK;
                }
            }
        }
        _ => None,
    };
    Ok(FanoutReport {
        target: c.target.to_string(),
        receivers: o.receivers,
        senders: o.senders,
        size: o.size,
        seconds,
        messages: completed.saturating_sub(base_sent),
        sent,
        deliveries,
        deliveries_per_sec: deliveries as f64 / seconds,
        latency: Percentiles::of(&hist),
        server_cpu_secs,
        server_cpu_drained_secs,
    })
}

/// The longest the generator waits for the server to go quiet after a
/// fan-out run.
const DRAIN_WAIT: Duration = Duration::from_secs(30);

/// How long the server's CPU time must stand still (less than one clock
/// tick, 10 ms) for it to count as quiet.
const QUIET_CHECK: Duration = Duration::from_millis(250);

/// Options of the `idle` scenario.
#[derive(Clone, Debug)]
pub struct IdleOpts {
    pub connections: usize,
    /// The server's process id, to read its resident memory.
    pub pid: u32,
    /// How long to hold the connections after setup before measuring.
    pub settle: Duration,
    /// NeoChat: messages one sender posts to the lobby before the idle
    /// users log in (after the first memory reading), so that the room's
    /// history ring is full and counted. 0: none.
    pub fill: usize,
    /// Payload bytes of each of those messages.
    pub fill_size: usize,
}

impl Default for IdleOpts {
    fn default() -> Self {
        IdleOpts {
            connections: 10_000,
            pid: 0,
            settle: Duration::from_secs(2),
            fill: 0,
            fill_size: 64,
        }
    }
}

#[derive(Clone, Debug)]
pub struct IdleReport {
    pub target: String,
    pub connections: usize,
    pub rss_before_kib: u64,
    pub rss_after_kib: u64,
    pub bytes_per_connection: f64,
    pub setup_seconds: f64,
}

/// Resident memory of a process, in KiB.
pub fn rss_kib(pid: u32) -> Result<u64, Error> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .map_err(|e| Error(format!("cannot read memory of process {pid}: {e}")))?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .ok_or_else(|| Error(format!("no VmRSS for process {pid}")))
}

/// A server's resident memory, read when made and then every 20 ms on a
/// thread of its own until [`RssPeak::stop`]; nothing without a pid.
struct RssPeak {
    before: Option<u64>,
    peak: std::sync::Arc<AtomicU64>,
    sampling: std::sync::Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl RssPeak {
    fn start(pid: Option<u32>) -> Result<RssPeak, Error> {
        let before = pid.map(rss_kib).transpose()?;
        let peak = std::sync::Arc::new(AtomicU64::new(before.unwrap_or(0)));
        let sampling = std::sync::Arc::new(AtomicBool::new(true));
        let thread = pid.map(|pid| {
            let (peak, sampling) = (peak.clone(), sampling.clone());
            std::thread::spawn(move || {
                while sampling.load(Ordering::SeqCst) {
                    if let Ok(kib) = rss_kib(pid) {
                        peak.fetch_max(kib, Ordering::SeqCst);
                    }
                    std::thread::sleep(Duration::from_millis(20));
                }
            })
        });
        Ok(RssPeak {
            before,
            peak,
            sampling,
            thread,
        })
    }

    /// Stops sampling: the memory at the start and the highest seen (KiB).
    fn stop(mut self) -> (Option<u64>, Option<u64>) {
        self.sampling.store(false, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        let peak = self.before.map(|_| self.peak.load(Ordering::SeqCst));
        (self.before, peak)
    }
}

/// Idle: K logged-in (or subscribed) connections that say nothing; reports
/// the server's resident memory per connection.
pub fn idle(c: &Common, o: &IdleOpts) -> Result<IdleReport, Error> {
    let before = rss_kib(o.pid)?;
    if o.fill > 0 {
        fill_lobby(c, o.fill, o.fill_size)?;
    }
    let started = Instant::now();
    let mut net = Net::new()?;
    let ids = join_all(
        &mut net,
        c,
        &names(&c.prefix, "i", o.connections),
        How::RECEIVERS,
        "idle",
    )?;
    let setup_seconds = started.elapsed().as_secs_f64();
    // Keep reading (joined notices) until the server has gone quiet.
    let settle_end = Instant::now() + o.settle;
    let mut quiet_since = Instant::now();
    while Instant::now() < settle_end || quiet_since.elapsed() < Duration::from_millis(500) {
        let mut got = false;
        net.turn(Duration::from_millis(100), |_, peer, data| {
            if data.is_empty() {
                return fail(format!("{}: closed by the server", peer.name));
            }
            got = true;
            Ok(())
        })?;
        if got {
            quiet_since = Instant::now();
        }
    }
    let after = rss_kib(o.pid)?;
    drop(ids);
    Ok(IdleReport {
        target: c.target.to_string(),
        connections: o.connections,
        rss_before_kib: before,
        rss_after_kib: after,
        bytes_per_connection: (after.saturating_sub(before) * 1024) as f64 / o.connections as f64,
        setup_seconds,
    })
}

/// One sender posts `n` messages of `size` bytes to the lobby, and waits
/// until the server has handled them all (its answer to a `/history`
/// sent after them), then leaves.
fn fill_lobby(c: &Common, n: usize, size: usize) -> Result<(), Error> {
    if !matches!(c.target, Target::NeoChat(_)) {
        return fail("--fill is for NeoChat targets only");
    }
    let mut net = Net::new()?;
    let s = join_all(&mut net, c, &names(&c.prefix, "f", 1), How::LOBBY, "fill")?[0];
    let mut buf = Vec::new();
    for seq in 0..n as u64 {
        payload(seq, 0, size, &mut buf);
        buf.push(b'\n');
        net.peers[s].queue(&buf);
    }
    net.peers[s].queue(b"/history 1\n");
    let deadline = Instant::now() + c.setup_timeout;
    let mut done = false;
    while !done {
        if Instant::now() > deadline {
            return fail("the lobby fill did not finish in time");
        }
        net.flush(s)?;
        net.turn(Duration::from_millis(50), |_, peer, data| {
            if data.is_empty() {
                return fail(format!("{}: closed by the server", peer.name));
            }
            peer.input.extend_from_slice(data);
            let mut input = std::mem::take(&mut peer.input);
            take_lines(&mut input, |line| {
                if line == b"* end of history" {
                    done = true;
                } else if line.starts_with(b"! ") {
                    return fail(format!(
                        "fill: server said `{}`",
                        String::from_utf8_lossy(line)
                    ));
                }
                Ok(())
            })?;
            peer.input = input;
            Ok(())
        })?;
    }
    Ok(())
}

/// Creates (or finds) the accounts `names` a few hundred at a time, each
/// batch closed before the next, so that setting up thousands of accounts
/// never has thousands online at once (the join notices of a server
/// without quiet presence grow with the square of that).
fn create_accounts(c: &Common, names: &[String]) -> Result<(), Error> {
    for (k, chunk) in names.chunks(CREATE_BATCH).enumerate() {
        let mut net = Net::new()?;
        let label = format!(
            "creating accounts ({} of {})",
            k * CREATE_BATCH,
            names.len()
        );
        join_all(&mut net, c, chunk, How::LOBBY, &label)?;
    }
    Ok(())
}

/// Accounts created (or checked) per batch by `create_accounts`.
const CREATE_BATCH: usize = 500;

/// Setup of a token storm: creates (or finds) the accounts `names` as
/// [`create_accounts`] does, a batch at a time with at most
/// [`HANDSHAKES_IN_FLIGHT`] password logins in flight, and while each batch
/// is logged in asks every account for a token (`/token`, answered
/// `* token <token>`). One password login per account, at the server's
/// bcrypt cost; the tokens do not depend on it. Returns the tokens in the
/// order of `names`.
fn fetch_tokens(c: &Common, names: &[String]) -> Result<Vec<String>, Error> {
    let mut tokens = Vec::with_capacity(names.len());
    for (k, chunk) in names.chunks(CREATE_BATCH).enumerate() {
        let mut net = Net::new()?;
        let label = format!("getting tokens ({} of {})", k * CREATE_BATCH, names.len());
        let ids = join_all(&mut net, c, chunk, How::LOBBY, &label)?;
        let mut got: Vec<Option<String>> = vec![None; net.peers.len()];
        for &i in &ids {
            net.peers[i].input.clear();
            net.peers[i].queue(b"/token\n");
            net.flush(i)?;
        }
        let deadline = Instant::now() + c.setup_timeout;
        let mut missing = ids.len();
        while missing > 0 {
            if Instant::now() > deadline {
                return fail(format!(
                    "setup timed out: {missing} of {} accounts got no token",
                    ids.len()
                ));
            }
            net.turn(Duration::from_millis(50), |i, peer, data| {
                if got[i].is_some() {
                    // After its `/quit`: `* bye`, then closed.
                    return Ok(());
                }
                if data.is_empty() {
                    return fail(format!(
                        "{}: the server closed the connection before its token",
                        peer.name
                    ));
                }
                peer.input.extend_from_slice(data);
                let mut input = std::mem::take(&mut peer.input);
                let name = peer.name.clone();
                let mut token = None;
                take_lines(&mut input, |line| {
                    if token.is_some() {
                        return Ok(());
                    }
                    if let Some(t) = line.strip_prefix(b"* token ") {
                        let t = String::from_utf8_lossy(t).trim().to_owned();
                        if t.is_empty() || t.contains(char::is_whitespace) {
                            return fail(format!("{name}: malformed token line"));
                        }
                        token = Some(t);
                    } else if line.starts_with(b"! ") {
                        return fail(format!(
                            "{name}: /token said `{}` (does the server support tokens?)",
                            String::from_utf8_lossy(line)
                        ));
                    }
                    Ok(())
                })?;
                if token.is_some() {
                    got[i] = token;
                    missing -= 1;
                    // Done with this one: say goodbye, ignore what follows.
                    peer.queue(b"/quit\n");
                    peer.flush()
                        .map_err(|e| Error(format!("{name}: write: {e}")))?;
                } else {
                    peer.input = input;
                }
                Ok(())
            })?;
        }
        for &i in &ids {
            let token = got[i]
                .take()
                .ok_or_else(|| Error(format!("{}: no token", net.peers[i].name)))?;
            tokens.push(token);
        }
    }
    Ok(tokens)
}

/// Options of the `logins` scenario.
#[derive(Clone, Debug)]
pub struct LoginOpts {
    pub logins: usize,
    /// Messages per second of the chat pair.
    pub pair_rate: f64,
    /// How long the pair is measured before the storm.
    pub quiet: Duration,
    /// No chat pair: only the storm, timed until every login is in
    /// Chatting (its `* online (` line), with the server's CPU if `pid`.
    pub no_pair: bool,
    /// The server's process id (storm without a pair: its CPU time).
    pub pid: Option<u32>,
    /// The storm logs in with tokens (`T`), fetched in setup (one password
    /// login and a `/token` per account, not timed), instead of passwords.
    pub token: bool,
}

#[derive(Clone, Debug)]
pub struct LoginReport {
    pub target: String,
    pub logins: usize,
    /// The storm logged in with tokens, not passwords.
    pub token: bool,
    pub storm_seconds: f64,
    pub logins_per_sec: f64,
    pub quiet: Percentiles,
    pub storm: Percentiles,
    /// Server CPU (user + system) from the first connect to the last login.
    pub server_cpu_secs: Option<f64>,
    /// Bytes the storm's connections read until the last was in Chatting
    /// (online lines, history, joined notices): what the storm cost on the
    /// wire.
    pub bytes_read: u64,
}

/// Logins: N accounts log in at once (at the server's bcrypt cost, or with
/// tokens if `o.token`) while a chat pair exchanges messages; reports
/// logins/s and the pair's latency before and during the storm. NeoChat
/// only.
///
/// The pair runs on its own thread with its own poll, so that the storm's
/// thousands of sockets (opened, read, drained) never delay it for the
/// generator's reasons. A pair message counts by when it was due: before
/// the storm (quiet), or from its start to the last login (storm, however
/// late it is read); the pair stops at the first message due after.
pub fn logins(c: &Common, o: &LoginOpts) -> Result<LoginReport, Error> {
    if !matches!(c.target, Target::NeoChat(_)) {
        return fail("the logins scenario is for NeoChat targets only");
    }
    let storm_names = names(&c.prefix, "l", o.logins);
    // Create the accounts first (once; later runs find them and log in),
    // and with --token get each a token while it is logged in.
    let tokens = if o.token {
        Some(fetch_tokens(c, &storm_names)?)
    } else {
        create_accounts(c, &storm_names)?;
        None
    };
    if o.no_pair {
        return storm_only(c, o, &storm_names, tokens.as_deref());
    }
    // With `--room`, the pair talks in that room, away from the storm's
    // users: in the lobby every pair message would also go to each user
    // logged in so far, and the run would measure that fan-out (10,000
    // recipients at 500 messages/s) rather than the logins.
    let (clock, pair_thread) = start_pair(c, o.pair_rate, o.quiet + c.setup_timeout)?;
    let storm = (|| {
        if !quiet_for(&clock, &pair_thread, o.quiet) {
            // It failed: its error is reported below.
            return Ok(None);
        }
        let started = Instant::now();
        let from = (started - clock.epoch).as_nanos() as u64;
        clock.from.store(from, Ordering::SeqCst);
        // Everybody at once: no window, all connections opened and their
        // logins sent before the first answer is read.
        let how = How {
            login_first: true,
            window: storm_names.len(),
            ..How::LOBBY
        };
        // On its own thread, below the pair's priority: on a small machine
        // the generator's storm of sockets must not take the CPU from the
        // pair it measures (nor from the server), or the pair's lateness
        // would be the generator's.
        let storm_net = std::thread::scope(|scope| {
            scope
                .spawn(|| {
                    lower_priority();
                    let mut storm_net = Net::new()?;
                    join_with(
                        &mut storm_net,
                        c,
                        &storm_names,
                        tokens.as_deref(),
                        how,
                        "login storm",
                    )?;
                    Ok::<_, Error>(storm_net)
                })
                .join()
                .unwrap_or_else(|_| fail("the login storm's thread panicked"))
        })?;
        let secs = started.elapsed().as_secs_f64();
        clock.to.store(from + (secs * 1e9) as u64, Ordering::SeqCst);
        // Held open until the pair has read its last storm message, so that
        // closing them does not delay it.
        Ok::<_, Error>(Some((secs, storm_net)))
    })();
    let ((secs, storm_net), times) = join_pair(&clock, pair_thread, storm, "the storm")?;
    drop(storm_net);
    Ok(LoginReport {
        target: c.target.to_string(),
        logins: o.logins,
        token: o.token,
        storm_seconds: secs,
        logins_per_sec: o.logins as f64 / secs,
        quiet: Percentiles::of(&times.quiet),
        storm: Percentiles::of(&times.busy),
        server_cpu_secs: None,
        bytes_read: 0,
    })
}

/// What the chat pair's thread hands back: its quiet and busy histograms.
type PairResult = Result<PairTimes, Error>;

/// The chat pair's latencies: before the measured load, during it, and
/// "during" split at the clock's `mid` (all of it `early` where no `mid`
/// was set), so that a load of two phases can tell them apart.
struct PairTimes {
    quiet: Histogram<u64>,
    busy: Histogram<u64>,
    early: Histogram<u64>,
    late: Histogram<u64>,
}

/// Logs the chat pair in (in `c.room`, if given) and starts it on its own
/// thread at `rate` messages a second, measuring from now; it gives up
/// `limit` after starting. The caller sets the clock's `from` and `to`
/// around what it measures (or `abort`), then joins the thread.
fn start_pair(
    c: &Common,
    rate: f64,
    limit: Duration,
) -> Result<
    (
        std::sync::Arc<StormClock>,
        std::thread::JoinHandle<PairResult>,
    ),
    Error,
> {
    if !(0.1..=1e6).contains(&rate) {
        return fail("the chat pair's rate must be between 0.1 and 1,000,000 messages a second");
    }
    let pair_how = How {
        room: true,
        ..How::LOBBY
    };
    // One connection per thread (see `pair_loop`).
    let pair_names = names(&c.prefix, "p", 2);
    let mut sender = Net::new()?;
    join_all(&mut sender, c, &pair_names[..1], pair_how, "pair")?;
    let mut receiver = Net::new()?;
    join_all(&mut receiver, c, &pair_names[1..], pair_how, "pair")?;
    let pair_prefix = room_prefix(c).unwrap_or_default();
    let clock = std::sync::Arc::new(StormClock {
        epoch: Instant::now(),
        from: AtomicU64::new(u64::MAX),
        mid: AtomicU64::new(u64::MAX),
        to: AtomicU64::new(u64::MAX),
        abort: AtomicBool::new(false),
    });
    let deadline = clock.epoch + PAIR_SETTLE + limit;
    let realtime = c.pair_realtime;
    let thread = {
        let clock = clock.clone();
        std::thread::Builder::new()
            .name("pair".into())
            .spawn(move || {
                pair_loop(
                    sender,
                    receiver,
                    &pair_prefix,
                    rate,
                    &clock,
                    deadline,
                    realtime,
                )
            })?
    };
    Ok((clock, thread))
}

/// Ends a run measured by the chat pair: stops the pair if what it measured
/// (`what`) failed, joins it, and hands back what was measured with the
/// pair's histograms; `Ok(None)` means the pair stopped first, and its own
/// error is the run's.
fn join_pair<T>(
    clock: &StormClock,
    pair: std::thread::JoinHandle<PairResult>,
    measured: Result<Option<T>, Error>,
    what: &str,
) -> Result<(T, PairTimes), Error> {
    if measured.is_err() {
        clock.abort.store(true, Ordering::SeqCst);
    }
    let pair_result = pair
        .join()
        .unwrap_or_else(|_| fail("the chat pair's thread panicked"));
    let Some(done) = measured? else {
        pair_result?;
        return fail(format!("the chat pair stopped before {what}"));
    };
    Ok((done, pair_result?))
}

/// Waits until `quiet` after the pair's epoch; false if the pair's thread
/// stopped meanwhile (its error is in its result).
fn quiet_for(
    clock: &StormClock,
    pair: &std::thread::JoinHandle<PairResult>,
    quiet: Duration,
) -> bool {
    let until = clock.epoch + PAIR_SETTLE + quiet;
    while Instant::now() < until {
        if pair.is_finished() {
            return false;
        }
        std::thread::sleep(Duration::from_millis(10).min(until - Instant::now()));
    }
    true
}

/// When the storm ran, in nanoseconds since the pair's epoch: shared by the
/// storm (the calling thread) and the pair's thread.
struct StormClock {
    epoch: Instant,
    /// `u64::MAX` until the storm starts.
    from: AtomicU64,
    /// Where a load of two phases begins its second (`u64::MAX`: none).
    mid: AtomicU64,
    /// `u64::MAX` until the last login is in.
    to: AtomicU64,
    /// The storm failed: the pair stops at once.
    abort: AtomicBool,
}

/// Puts the calling thread (a load generator's) below everything else:
/// `SCHED_IDLE`, or nice 10 where that is refused. On a small machine the
/// generator shares the CPUs with the server and the pair it measures;
/// at nice 10 a woken pair or server thread could still wait up to a
/// scheduler slice (1.5 ms on 2 CPUs) behind it, while an idle-class
/// thread gives way at once. A thread may always lower its own priority.
fn lower_priority() {
    // SAFETY: sched_setscheduler(0, ...) and setpriority with PRIO_PROCESS
    // and a thread id change only the calling thread; `param` is a valid
    // sched_param that outlives the call.
    #[cfg(target_os = "linux")]
    unsafe {
        let param = libc::sched_param { sched_priority: 0 };
        if libc::sched_setscheduler(0, libc::SCHED_IDLE, &param) != 0 {
            libc::setpriority(libc::PRIO_PROCESS, libc::gettid() as libc::id_t, 10);
        }
    }
}

/// Puts the calling thread (one of the chat pair's) ahead of everything
/// else on the machine: `SCHED_FIFO` at the lowest real-time priority.
/// The pair stands for two people's clients on their own machines, ready
/// the moment a line arrives; here they share two CPUs with the server and
/// the generator, and a woken pair thread that waited for a CPU would add
/// its wait to the server's latency. Each thread blocks in `poll` or
/// `sleep` and does microseconds of work per message, so it takes almost
/// nothing from the others (and the kernel's real-time throttling bounds
/// it regardless). Where that is refused (no `CAP_SYS_NICE`) the thread
/// keeps its normal priority, and a line on stderr says so: the figures
/// are then not comparable with real-time ones.
fn raise_pair_priority(role: &str) {
    // SAFETY: sched_setscheduler(0, ...) changes only the calling thread;
    // `param` is a valid sched_param that outlives the call.
    #[cfg(target_os = "linux")]
    let raised = unsafe {
        let param = libc::sched_param { sched_priority: 1 };
        libc::sched_setscheduler(0, libc::SCHED_FIFO, &param) == 0
    };
    #[cfg(not(target_os = "linux"))]
    let raised = false;
    if !raised {
        eprintln!(
            "neochat-bench: the chat pair's {role} runs at normal priority (real-time refused: {})",
            io::Error::last_os_error()
        );
    }
}

/// The chat pair of the load scenarios: `a` sends 64-byte messages at
/// `rate` a second (each stamped with the time it was due), `b` times them.
/// Returns the quiet and busy histograms once a message due after what was
/// measured has been read.
///
/// Each connection has its own thread, and neither spins: the sender
/// sleeps until a message is due (a timer of microseconds, the timer
/// slack is off), the receiver blocks in `poll` until bytes come. A client
/// on a user's machine does no more; one that polled every few tens of
/// microseconds would, on a small machine, take turns from the server it
/// measures (and wake in front of it).
fn pair_loop(
    sender: Net,
    receiver: Net,
    room_prefix: &str,
    rate: f64,
    clock: &StormClock,
    deadline: Instant,
    realtime: bool,
) -> PairResult {
    let Some(a_name) = sender.peers.first().map(|p| p.name.clone()) else {
        return fail("the chat pair has no sender");
    };
    let a_prefix = format!("{room_prefix}{a_name}: ");
    let done = AtomicBool::new(false);
    /// Tells the other thread this one stopped, however it stopped (a
    /// panic included: the other must not wait for the deadline).
    struct Stopped<'a>(&'a AtomicBool);
    impl Drop for Stopped<'_> {
        fn drop(&mut self) {
            self.0.store(true, Ordering::SeqCst);
        }
    }
    std::thread::scope(|scope| {
        let sending = std::thread::Builder::new()
            .name("pair-send".into())
            .spawn_scoped(scope, || {
                let _stopped = Stopped(&done);
                if realtime {
                    raise_pair_priority("sender");
                }
                pair_send(sender, rate, clock, &done, deadline)
            })?;
        let received = {
            let _stopped = Stopped(&done);
            if realtime {
                raise_pair_priority("receiver");
            }
            pair_receive(receiver, a_prefix.as_bytes(), clock, &done, deadline)
        };
        let sent = sending
            .join()
            .unwrap_or_else(|_| fail("the chat pair's sender panicked"));
        let histograms = received?;
        sent?;
        Ok(histograms)
    })
}

/// The pair's sender: each message when it is due, stamped with that time.
fn pair_send(
    mut net: Net,
    rate: f64,
    clock: &StormClock,
    done: &AtomicBool,
    deadline: Instant,
) -> Result<(), Error> {
    let epoch = clock.epoch;
    let mut seq = 0u64;
    let mut buf = Vec::new();
    while !done.load(Ordering::SeqCst) && !clock.abort.load(Ordering::SeqCst) {
        let now = Instant::now();
        if now > deadline {
            return fail("the measured load did not finish in time");
        }
        let due = (now.duration_since(epoch).as_secs_f64() * rate) as u64 + 1;
        while seq < due {
            let t = (seq as f64 / rate * 1e9) as u64;
            payload(seq, t, 64, &mut buf);
            buf.push(b'\n');
            net.peers[0].queue(&buf);
            seq += 1;
        }
        net.flush(0)?;
        // What the server sends the sender (nothing, in its own room) is
        // read and dropped, so that it never piles up.
        net.turn(Duration::ZERO, |_, peer, data| {
            if data.is_empty() {
                return fail(format!("{}: closed by the server", peer.name));
            }
            Ok(())
        })?;
        let next = epoch + Duration::from_secs_f64(seq as f64 / rate);
        // At most PAIR_WAKE at a time, so that the end of the run is seen.
        std::thread::sleep(
            next.saturating_duration_since(Instant::now())
                .min(PAIR_WAKE),
        );
    }
    Ok(())
}

/// The pair's receiver: times every message from `a_prefix`, quiet before
/// the clock's `from`, busy up to its `to`; returns once one due after
/// `to` is read.
fn pair_receive(
    mut net: Net,
    a_prefix: &[u8],
    clock: &StormClock,
    done: &AtomicBool,
    deadline: Instant,
) -> PairResult {
    let epoch = clock.epoch;
    // Messages due before this count nowhere.
    let settled = PAIR_SETTLE.as_nanos() as u64;
    let mut times = PairTimes {
        quiet: histogram(),
        busy: histogram(),
        early: histogram(),
        late: histogram(),
    };
    let mut after_storm = false;
    while !after_storm && !clock.abort.load(Ordering::SeqCst) {
        if done.load(Ordering::SeqCst) {
            // The sender stopped (its error is the run's).
            return Ok(times);
        }
        if Instant::now() > deadline {
            return fail("the measured load did not finish in time");
        }
        // Blocks until bytes come; the timeout only looks at the flags.
        net.turn(PAIR_WAKE, |_, peer, data| {
            if data.is_empty() {
                return fail(format!("{}: closed by the server", peer.name));
            }
            let now = epoch.elapsed().as_nanos() as u64;
            // Read after the wait: the storm may have started or ended
            // while this thread was blocked.
            let from = clock.from.load(Ordering::SeqCst);
            let to = clock.to.load(Ordering::SeqCst);
            let mid = clock.mid.load(Ordering::SeqCst);
            peer.input.extend_from_slice(data);
            let mut input = std::mem::take(&mut peer.input);
            take_lines(&mut input, |line| {
                if let Some(p) = line.strip_prefix(a_prefix)
                    && let Some(t) = stamp_of(p)
                {
                    let took = now.saturating_sub(t).max(1);
                    if t < settled {
                        return Ok(());
                    } else if t < from {
                        times.quiet.saturating_record(took);
                    } else if t <= to {
                        times.busy.saturating_record(took);
                        if t > mid {
                            times.late.saturating_record(took);
                        } else {
                            times.early.saturating_record(took);
                        }
                    } else {
                        after_storm = true;
                    }
                }
                Ok(())
            })?;
            peer.input = input;
            Ok(())
        })?;
    }
    Ok(times)
}

/// The storm alone: every connection opened and its `L` (or `T`, with
/// `tokens`) sent at once (no window), timed until the last one is in
/// Chatting. Peers in Chatting are read in bulk once a second, as in setup,
/// so the generator keeps up with whatever the server sends them.
fn storm_only(
    c: &Common,
    o: &LoginOpts,
    storm_names: &[String],
    tokens: Option<&[String]>,
) -> Result<LoginReport, Error> {
    let mut net = Net::new()?;
    let cpu_before = o.pid.map(cpu_secs).transpose()?;
    let started = Instant::now();
    let how = How {
        login_first: true,
        window: storm_names.len(),
        ..How::LOBBY
    };
    let ids = join_with(&mut net, c, storm_names, tokens, how, "login storm")?;
    let secs = started.elapsed().as_secs_f64();
    let server_cpu_secs = match (o.pid, cpu_before) {
        (Some(pid), Some(b)) => Some(cpu_secs(pid)? - b),
        _ => None,
    };
    let bytes_read = ids.iter().map(|&i| net.peers[i].bytes_read).sum();
    Ok(LoginReport {
        target: c.target.to_string(),
        logins: o.logins,
        token: o.token,
        storm_seconds: secs,
        logins_per_sec: o.logins as f64 / secs,
        quiet: Percentiles::default(),
        storm: Percentiles::default(),
        server_cpu_secs,
        bytes_read,
    })
}

/// A trivial JSON writer for flat reports (no dependency for four structs).
pub struct Json(Vec<(String, String)>);

impl Json {
    pub fn new() -> Json {
        Json(Vec::new())
    }
    pub fn str(mut self, k: &str, v: &str) -> Json {
        let escaped: String = v
            .chars()
            .flat_map(|c| match c {
                '"' | '\\' => vec!['\\', c],
                c if c.is_control() => format!("\\u{:04x}", c as u32).chars().collect(),
                c => vec![c],
            })
            .collect();
        self.0.push((k.into(), format!("\"{escaped}\"")));
        self
    }
    pub fn num(mut self, k: &str, v: f64) -> Json {
        let v = if v.is_finite() {
            format!("{v}")
        } else {
            "null".into()
        };
        self.0.push((k.into(), v));
        self
    }
    pub fn percentiles(self, k: &str, p: &Percentiles) -> Json {
        self.num(&format!("{k}_samples"), p.samples as f64)
            .num(&format!("{k}_p50_us"), p.p50_us)
            .num(&format!("{k}_p99_us"), p.p99_us)
            .num(&format!("{k}_p999_us"), p.p999_us)
            .num(&format!("{k}_max_us"), p.max_us)
    }
}

impl Default for Json {
    fn default() -> Self {
        Json::new()
    }
}

impl fmt::Display for Json {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("{")?;
        for (i, (k, v)) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str(", ")?;
            }
            write!(f, "\"{k}\": {v}")?;
        }
        f.write_str("}")
    }
}

impl FanoutReport {
    pub fn json(&self, scenario: &str) -> Json {
        Json::new()
            .str("scenario", scenario)
            .str("target", &self.target)
            .num("receivers", self.receivers as f64)
            .num("senders", self.senders as f64)
            .num("size", self.size as f64)
            .num("seconds", self.seconds)
            .num("messages", self.messages as f64)
            .num("deliveries", self.deliveries as f64)
            .num("sent", self.sent as f64)
            .num("deliveries_per_sec", self.deliveries_per_sec)
            .num(
                "server_cpu_ns_per_delivery",
                self.server_cpu_secs
                    .map_or(0.0, |c| c * 1e9 / self.deliveries.max(1) as f64),
            )
            .num(
                "server_cpu_drained_ns_per_delivery",
                self.server_cpu_drained_secs
                    .map_or(0.0, |c| c * 1e9 / self.deliveries.max(1) as f64),
            )
            .percentiles("latency", &self.latency)
    }
}

impl IdleReport {
    pub fn json(&self) -> Json {
        Json::new()
            .str("scenario", "idle")
            .str("target", &self.target)
            .num("connections", self.connections as f64)
            .num("rss_before_kib", self.rss_before_kib as f64)
            .num("rss_after_kib", self.rss_after_kib as f64)
            .num("bytes_per_connection", self.bytes_per_connection)
            .num("setup_seconds", self.setup_seconds)
    }
}

impl LoginReport {
    pub fn json(&self) -> Json {
        Json::new()
            .str("scenario", "logins")
            .str("target", &self.target)
            .str("mode", if self.token { "token" } else { "password" })
            .num("logins", self.logins as f64)
            .num("storm_seconds", self.storm_seconds)
            .num("logins_per_sec", self.logins_per_sec)
            .percentiles("quiet", &self.quiet)
            .percentiles("storm", &self.storm)
            .num("server_cpu_secs", self.server_cpu_secs.unwrap_or(f64::NAN))
            .num("bytes_read", self.bytes_read as f64)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets_parse() {
        let a: SocketAddr = "127.0.0.1:59000".parse().unwrap();
        assert_eq!("127.0.0.1:59000".parse::<Target>(), Ok(Target::NeoChat(a)));
        assert_eq!(
            "neochat://127.0.0.1:59000".parse::<Target>(),
            Ok(Target::NeoChat(a))
        );
        assert_eq!(
            "redis://127.0.0.1:59000/".parse::<Target>(),
            Ok(Target::Redis(a))
        );
        assert!("ftp://127.0.0.1:1".parse::<Target>().is_err());
        assert!("redis://localhost".parse::<Target>().is_err());
    }

    #[test]
    fn payload_is_fixed_size_and_carries_its_stamp() {
        let mut buf = Vec::new();
        payload(7, 123_456_789, 64, &mut buf);
        assert_eq!(buf.len(), 64);
        assert_eq!(stamp_of(&buf), Some(123_456_789));
    }

    #[test]
    fn counting_receiver_counts_across_chunk_boundaries() {
        let c = Common::new(Target::NeoChat("127.0.0.1:1".parse().unwrap()));
        let lay = layout(&c, 10, 64);
        assert_eq!(lay.len, 10 + 2 + 64 + 1);
        let mut records = 0;
        let mut carry = 0;
        for chunk in [30usize, 100, 17, 7] {
            let total = carry + chunk;
            records += total / lay.len;
            carry = total % lay.len;
        }
        assert_eq!(records, 154 / 77);
    }

    #[test]
    fn redis_layout_matches_what_redis_sends() {
        let mut c = Common::new(Target::Redis("127.0.0.1:1".parse().unwrap()));
        c.prefix = "ch".into();
        let lay = layout(&c, 0, 64);
        let mut buf = Vec::new();
        payload(1, 2, 64, &mut buf);
        let mut wire = b"*3\r\n$7\r\nmessage\r\n$2\r\nch\r\n$64\r\n".to_vec();
        wire.extend_from_slice(&buf);
        wire.extend_from_slice(b"\r\n");
        assert_eq!(wire.len(), lay.len);
        assert_eq!(&wire[lay.payload_at..lay.payload_at + 64], &buf[..]);
    }
}
