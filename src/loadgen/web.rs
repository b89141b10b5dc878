//! The `web` scenario: N browsers open the web client at once, each as on
//! a first visit, while a chat pair talks (as in the `logins` and `files`
//! scenarios). Reports the pair's latency before and during the burst,
//! the time until every browser had its login prompt, each browser's time
//! to its prompt, and the server's resident memory before and at its
//! highest (with its pid).
//!
//! A browser here does what a browser's first visit does, without a cache:
//! `GET /` on a fresh connection (TLS with ALPN `http/1.1` under `--tls`,
//! a full handshake), read until the server closes it (one request a
//! connection), take the page's versioned `"/app.js?v=..."`,
//! `"/boot.js?v=..."` and `"/style.css?v=..."` out of the HTML and fetch
//! them, each on a new connection and all at once (as a browser does),
//! then open `/ws` with the page's own `Origin`, read the welcome and the
//! `? choice` prompt, and close. Its later connections resume the TLS
//! session of its first, as a browser's do (each browser has its own
//! session store). It does not log in, nor fetch the icon and the
//! manifest.
//!
//! The browsers are spread over a few generator threads, each with its own
//! `mio::Poll` and non-blocking sockets, so that all N start at the same
//! moment; the threads run below the pair's priority, so that on a small
//! machine the generator's TLS work does not take the CPU the pair's timing
//! needs.

use std::io::{self, Read, Write};
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

use mio::net::TcpStream;
use mio::{Events, Interest, Poll, Registry, Token};
use tungstenite::client::IntoClientRequest;
use tungstenite::handshake::HandshakeError;
use tungstenite::handshake::MidHandshake;
use tungstenite::handshake::client::ClientHandshake;
use tungstenite::{Message, WebSocket};

use super::{
    Common, Error, Percentiles, RssPeak, Target, fail, histogram, join_pair, lower_priority,
    quiet_for, start_pair, tls_config,
};

/// What the browsers say they are.
const USER_AGENT: &str = "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 \
                          (KHTML, like Gecko) Chrome/131.0.0.0 Safari/537.36";

/// Options of the `web` scenario.
#[derive(Clone, Debug)]
pub struct WebOpts {
    /// Browsers that start at once.
    pub browsers: usize,
    /// Generator threads the browsers are spread over.
    pub threads: usize,
    /// Messages per second of the chat pair.
    pub pair_rate: f64,
    /// How long the pair is measured before the burst.
    pub quiet: Duration,
    /// How long a browser may take to reach its prompt and close.
    pub timeout: Duration,
    /// The server's process id, for its memory.
    pub pid: Option<u32>,
}

#[derive(Clone, Debug)]
pub struct WebReport {
    pub target: String,
    pub tls: bool,
    pub browsers: usize,
    /// Seconds from the start of the burst until the last browser that
    /// got its prompt got it.
    pub all_prompted_secs: f64,
    /// Seconds from the start until every browser was done (closed or
    /// failed): the pair's "during" window.
    pub burst_secs: f64,
    /// Each browser's time from the start to its prompt.
    pub prompt: Percentiles,
    /// Browsers that failed, and the first few reasons.
    pub errors: usize,
    pub first_errors: Vec<String>,
    /// Plaintext bytes one browser read (page, files, WebSocket), the
    /// median over browsers.
    pub bytes_per_browser: u64,
    /// The server's resident memory before the burst, and its highest
    /// during it (KiB), if its pid was given.
    pub rss_before_kib: Option<u64>,
    pub rss_peak_kib: Option<u64>,
    pub quiet: Percentiles,
    pub during: Percentiles,
}

impl WebReport {
    pub fn ratio(&self) -> f64 {
        self.during.p99_us / self.quiet.p99_us
    }

    /// An error if any browser failed.
    pub fn check(&self) -> Result<(), Error> {
        if self.errors == 0 {
            return Ok(());
        }
        fail(format!(
            "{} of {} browsers failed, e.g. {}",
            self.errors,
            self.browsers,
            self.first_errors.join("; ")
        ))
    }

    pub fn json(&self) -> super::Json {
        let mut j = super::Json::new()
            .str("scenario", "web")
            .str("target", &self.target)
            .num("tls", if self.tls { 1.0 } else { 0.0 })
            .num("browsers", self.browsers as f64)
            .num("errors", self.errors as f64)
            .num("all_prompted_secs", self.all_prompted_secs)
            .num("burst_secs", self.burst_secs)
            .num("bytes_per_browser", self.bytes_per_browser as f64)
            .percentiles("prompt", &self.prompt);
        if let (Some(before), Some(peak)) = (self.rss_before_kib, self.rss_peak_kib) {
            j = j
                .num("rss_before_kib", before as f64)
                .num("rss_peak_kib", peak as f64);
        }
        j.percentiles("quiet", &self.quiet)
            .percentiles("during", &self.during)
            .num("p99_ratio", self.ratio())
    }
}

/// See the module documentation.
pub fn web(c: &Common, o: &WebOpts) -> Result<WebReport, Error> {
    let Target::NeoChat(addr) = c.target else {
        return fail("the web scenario is for NeoChat targets only");
    };
    if o.browsers == 0 {
        return fail("--browsers must be at least 1");
    }
    let limit = o.quiet + c.setup_timeout + o.timeout;
    let (clock, pair_thread) = start_pair(c, o.pair_rate, limit)?;
    let burst = (|| {
        if !quiet_for(&clock, &pair_thread, o.quiet) {
            return Ok(None);
        }
        let rss = RssPeak::start(o.pid)?;
        let threads = o.threads.clamp(1, o.browsers);
        let start = Barrier::new(threads + 1);
        let outcomes = std::thread::scope(|scope| {
            let handles: Vec<_> = (0..threads)
                .map(|t| {
                    // Browsers t, t + threads, t + 2 * threads, ...
                    let mine = (t..o.browsers).step_by(threads).count();
                    let start = &start;
                    std::thread::Builder::new()
                        .name(format!("browsers{t}"))
                        .spawn_scoped(scope, move || {
                            lower_priority();
                            browse(c.tls, addr, mine, o.timeout, start)
                        })
                })
                .collect::<Result<_, _>>()?;
            start.wait();
            let from = clock.epoch.elapsed().as_nanos() as u64;
            clock.from.store(from, Ordering::SeqCst);
            let started = Instant::now();
            let mut all = Vec::with_capacity(o.browsers);
            for h in handles {
                all.extend(
                    h.join()
                        .unwrap_or_else(|_| fail("a browsers' thread panicked"))?,
                );
            }
            let burst_secs = started.elapsed().as_secs_f64();
            clock
                .to
                .store(from + (burst_secs * 1e9) as u64, Ordering::SeqCst);
            Ok::<_, Error>((burst_secs, all))
        });
        let (rss_before, rss_peak) = rss.stop();
        let (burst_secs, outcomes) = outcomes?;
        Ok::<_, Error>(Some((burst_secs, outcomes, rss_before, rss_peak)))
    })();
    let ((burst_secs, outcomes, rss_before_kib, rss_peak_kib), times) =
        join_pair(&clock, pair_thread, burst, "the browsers")?;
    let mut prompt = histogram();
    let mut all_prompted = Duration::ZERO;
    let mut errors = 0;
    let mut first_errors = Vec::new();
    let mut bytes = Vec::new();
    for outcome in &outcomes {
        match outcome {
            Ok(done) => {
                prompt.saturating_record(done.prompt.as_nanos().max(1) as u64);
                all_prompted = all_prompted.max(done.prompt);
                bytes.push(done.bytes);
            }
            Err(e) => {
                errors += 1;
                if first_errors.len() < 3 {
                    first_errors.push(e.clone());
                }
            }
        }
    }
    bytes.sort_unstable();
    Ok(WebReport {
        target: c.target.to_string(),
        tls: c.tls,
        browsers: o.browsers,
        all_prompted_secs: all_prompted.as_secs_f64(),
        burst_secs,
        prompt: Percentiles::of(&prompt),
        errors,
        first_errors,
        bytes_per_browser: bytes.get(bytes.len() / 2).copied().unwrap_or(0),
        rss_before_kib,
        rss_peak_kib,
        quiet: Percentiles::of(&times.quiet),
        during: Percentiles::of(&times.busy),
    })
}

/// What became of a browser that got its prompt.
#[derive(Clone, Copy, Debug)]
struct Done {
    /// From the start of the burst.
    prompt: Duration,
    bytes: u64,
}

/// A socket whose "not connected yet" is "not yet": a write on a socket
/// still connecting waits for its WRITABLE event like any other. Keeps the
/// first bytes it read, for the error of a connection that went wrong.
struct Sock(TcpStream, Vec<u8>);

/// How many of the first bytes read a `Sock` keeps.
const FIRST_BYTES: usize = 48;

fn not_yet(e: io::Error) -> io::Error {
    if e.kind() == io::ErrorKind::NotConnected {
        io::ErrorKind::WouldBlock.into()
    } else {
        e
    }
}

impl Read for Sock {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.0.read(buf).map_err(not_yet)?;
        let keep = n.min(FIRST_BYTES - self.1.len().min(FIRST_BYTES));
        self.1.extend_from_slice(&buf[..keep]);
        Ok(n)
    }
}

impl Write for Sock {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0.write(buf).map_err(not_yet)
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// A non-blocking connection to the server, plain or TLS (rustls's
/// `StreamOwned` passes `WouldBlock` through).
enum Io {
    Plain(Sock),
    Tls(Box<rustls::StreamOwned<rustls::ClientConnection, Sock>>),
}

/// A new browser's TLS settings: ALPN `http/1.1` and a session store of
/// its own.
fn browser_tls() -> Arc<rustls::ClientConfig> {
    let mut config = (*tls_config()).clone();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    config.resumption = rustls::client::Resumption::in_memory_sessions(8);
    Arc::new(config)
}

impl Io {
    /// Starts a connection, registered as `token`.
    fn open(
        tls: Option<&Arc<rustls::ClientConfig>>,
        addr: SocketAddr,
        registry: &Registry,
        token: Token,
    ) -> io::Result<Io> {
        let mut tcp = TcpStream::connect(addr)?;
        tcp.set_nodelay(true)?;
        registry.register(&mut tcp, token, Interest::READABLE | Interest::WRITABLE)?;
        let Some(config) = tls else {
            return Ok(Io::Plain(Sock(tcp, Vec::new())));
        };
        let config = config.clone();
        let name = rustls::pki_types::ServerName::IpAddress(addr.ip().into());
        let conn = rustls::ClientConnection::new(config, name).map_err(io::Error::other)?;
        Ok(Io::Tls(Box::new(rustls::StreamOwned::new(
            conn,
            Sock(tcp, Vec::new()),
        ))))
    }
}

impl Io {
    /// The first bytes read from the socket (TLS records, if TLS).
    fn first_bytes(&self) -> String {
        let bytes = match self {
            Io::Plain(s) => &s.1,
            Io::Tls(s) => &s.sock.1,
        };
        format!("{:?}", String::from_utf8_lossy(bytes))
    }
}

impl Read for Io {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Io::Plain(s) => s.read(buf),
            Io::Tls(s) => s.read(buf),
        }
    }
}

impl Write for Io {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Io::Plain(s) => s.write(buf),
            Io::Tls(s) => s.write(buf),
        }
    }
    fn flush(&mut self) -> io::Result<()> {
        match self {
            Io::Plain(s) => s.flush(),
            Io::Tls(s) => s.flush(),
        }
    }
}

fn would_block(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted
    )
}

/// An error on `io`, with what it read first.
fn failed(e: io::Error, io: &Io) -> String {
    format!("{e} (first bytes read: {})", io.first_bytes())
}

/// One `GET` on its own connection, read until the server closes it.
struct Get {
    io: Io,
    request: Vec<u8>,
    sent: usize,
    response: Vec<u8>,
    done: bool,
}

impl Get {
    fn new(
        tls: Option<&Arc<rustls::ClientConfig>>,
        addr: SocketAddr,
        path: &str,
        registry: &Registry,
        token: Token,
    ) -> io::Result<Get> {
        let request = format!(
            "GET {path} HTTP/1.1\r\nHost: {addr}\r\nUser-Agent: {USER_AGENT}\r\n\
             Accept: */*\r\nAccept-Language: en-US,en;q=0.9\r\n\
             Accept-Encoding: gzip, deflate, br\r\n\r\n"
        )
        .into_bytes();
        Ok(Get {
            io: Io::open(tls, addr, registry, token)?,
            request,
            sent: 0,
            response: Vec::new(),
            done: false,
        })
    }

    /// Sends what is left of the request and reads what came: true once
    /// the server has closed the connection.
    fn drive(&mut self, buf: &mut [u8]) -> io::Result<bool> {
        if self.done {
            return Ok(true);
        }
        while self.sent < self.request.len() {
            match self.io.write(&self.request[self.sent..]) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(n) => self.sent += n,
                Err(e) if would_block(&e) => return Ok(false),
                Err(e) => return Err(e),
            }
        }
        match self.io.flush() {
            Ok(()) => {}
            Err(e) if would_block(&e) => return Ok(false),
            Err(e) => return Err(e),
        }
        loop {
            match self.io.read(buf) {
                Ok(0) => break,
                Ok(n) => self.response.extend_from_slice(&buf[..n]),
                Err(e) if would_block(&e) => return Ok(false),
                // Closed without close_notify: the end all the same.
                Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => break,
                Err(e) => return Err(e),
            }
        }
        self.done = true;
        Ok(true)
    }

    /// The body of a complete `200` response.
    fn body(&self, what: &str) -> Result<&[u8], String> {
        let r = &self.response;
        let end = r
            .windows(4)
            .position(|w| w == b"\r\n\r\n")
            .ok_or_else(|| format!("{what}: no complete answer ({} bytes)", r.len()))?;
        let head = String::from_utf8_lossy(&r[..end]);
        let status = head.split(' ').nth(1).unwrap_or("");
        if status != "200" {
            let line = head.lines().next().unwrap_or("");
            return Err(format!("{what}: answered `{line}`"));
        }
        let body = &r[end + 4..];
        let length = head.lines().find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.eq_ignore_ascii_case("content-length")
                .then(|| v.trim().parse::<usize>().ok())?
        });
        if let Some(n) = length
            && n != body.len()
        {
            return Err(format!("{what}: {} bytes of a {n}-byte body", body.len()));
        }
        Ok(body)
    }
}

/// The versioned URL of `path` quoted in `html` (`"/app.js?v=..."`).
fn versioned_url(html: &str, path: &str) -> Option<String> {
    let quoted = format!("\"{path}?v=");
    let at = html.find(&quoted)? + 1;
    let len = html[at..].find('"')?;
    let url = &html[at..at + len];
    (url.len() > quoted.len() - 1).then(|| url.to_owned())
}

/// The versioned URLs of what the page loads: its script, its boot
/// script and its style.
fn page_urls(html: &str) -> Result<[String; 3], String> {
    let get =
        |path| versioned_url(html, path).ok_or_else(|| format!("no \"{path}?v=\" in the page"));
    Ok([get("/app.js")?, get("/boot.js")?, get("/style.css")?])
}

enum Ws {
    Mid(MidHandshake<ClientHandshake<Io>>),
    Open(WebSocket<Io>),
}

enum Phase {
    Page(Get),
    Files(Box<[Get; 3]>),
    Ws {
        ws: Option<Ws>,
        welcomed: bool,
    },
    /// Prompted; the close frame sent, waiting for the server's end.
    Closing(WebSocket<Io>),
    Over,
}

struct Browser {
    id: usize,
    /// The browser's own TLS settings, with its own session store: its
    /// later connections resume the session of its first, as a browser's
    /// do, and no browser resumes another's.
    tls: Option<Arc<rustls::ClientConfig>>,
    phase: Phase,
    bytes: u64,
    prompt: Option<Duration>,
    outcome: Option<Result<Done, String>>,
}

/// Slots of a browser's connections in its tokens.
const SLOTS: usize = 5;

impl Browser {
    fn phase_name(&self) -> &'static str {
        match self.phase {
            Phase::Page(_) => "the page",
            Phase::Files(_) => "the scripts and the style",
            Phase::Ws { .. } if self.prompt.is_none() => "the WebSocket",
            _ => "closing the WebSocket",
        }
    }

    fn fail(&mut self, why: impl std::fmt::Display) {
        let what = format!("browser {}, {}: {why}", self.id, self.phase_name());
        self.phase = Phase::Over;
        self.outcome = Some(Err(what));
    }

    fn finish(&mut self) {
        self.phase = Phase::Over;
        let prompt = self.prompt.expect("finished after the prompt");
        self.outcome = Some(Ok(Done {
            prompt,
            bytes: self.bytes,
        }));
    }

    /// Moves this browser on as far as its sockets allow.
    fn drive(&mut self, ctx: &Ctx<'_>, buf: &mut [u8]) {
        if let Err(e) = self.step(ctx, buf) {
            self.fail(e);
        }
    }

    fn step(&mut self, ctx: &Ctx<'_>, buf: &mut [u8]) -> Result<(), String> {
        let token = |slot: usize| Token(self.id * SLOTS + slot);
        let tls = self.tls.clone();
        loop {
            match &mut self.phase {
                Phase::Page(get) => {
                    if !get.drive(buf).map_err(|e| failed(e, &get.io))? {
                        return Ok(());
                    }
                    self.bytes += get.response.len() as u64;
                    let html = String::from_utf8_lossy(get.body("GET /")?).into_owned();
                    let [script, boot, style] = page_urls(&html)?;
                    let open = |path: &str, slot| {
                        Get::new(tls.as_ref(), ctx.addr, path, ctx.registry, token(slot))
                            .map_err(|e| e.to_string())
                    };
                    self.phase = Phase::Files(Box::new([
                        open(&script, 1)?,
                        open(&boot, 2)?,
                        open(&style, 3)?,
                    ]));
                }
                Phase::Files(gets) => {
                    let mut all = true;
                    for get in gets.iter_mut() {
                        all &= get.drive(buf).map_err(|e| failed(e, &get.io))?;
                    }
                    if !all {
                        return Ok(());
                    }
                    for (get, what) in
                        gets.iter()
                            .zip(["GET /app.js", "GET /boot.js", "GET /style.css"])
                    {
                        get.body(what)?;
                        self.bytes += get.response.len() as u64;
                    }
                    let io = Io::open(tls.as_ref(), ctx.addr, ctx.registry, token(4))
                        .map_err(|e| e.to_string())?;
                    let (scheme, page) = if ctx.tls {
                        ("wss", "https")
                    } else {
                        ("ws", "http")
                    };
                    let mut request = format!("{scheme}://{}/ws", ctx.addr)
                        .into_client_request()
                        .map_err(|e| e.to_string())?;
                    let headers = request.headers_mut();
                    let origin = format!("{page}://{}", ctx.addr);
                    headers.insert("Origin", origin.parse().map_err(|_| "bad Origin")?);
                    headers.insert("User-Agent", USER_AGENT.parse().map_err(|_| "bad UA")?);
                    let ws = match tungstenite::client::client_with_config(request, io, None) {
                        Ok((ws, _)) => Ws::Open(ws),
                        Err(HandshakeError::Interrupted(mid)) => Ws::Mid(mid),
                        Err(HandshakeError::Failure(e)) => return Err(e.to_string()),
                    };
                    self.phase = Phase::Ws {
                        ws: Some(ws),
                        welcomed: false,
                    };
                }
                Phase::Ws { ws, welcomed } => {
                    let mut socket = match ws.take().expect("a WebSocket") {
                        Ws::Open(socket) => socket,
                        Ws::Mid(mid) => match mid.handshake() {
                            Ok((socket, _)) => socket,
                            Err(HandshakeError::Interrupted(mid)) => {
                                *ws = Some(Ws::Mid(mid));
                                return Ok(());
                            }
                            Err(HandshakeError::Failure(e)) => return Err(e.to_string()),
                        },
                    };
                    let prompted = loop {
                        match socket.read() {
                            Ok(Message::Text(t)) => {
                                self.bytes += t.len() as u64;
                                if !*welcomed {
                                    if !t.starts_with("* welcome to NeoChat") {
                                        return Err(format!("expected the welcome, got {t:?}"));
                                    }
                                    *welcomed = true;
                                } else if t.starts_with("? choice") {
                                    break true;
                                } else {
                                    return Err(format!("expected the prompt, got {t:?}"));
                                }
                            }
                            Ok(Message::Ping(_) | Message::Pong(_) | Message::Frame(_)) => {}
                            Ok(other) => return Err(format!("expected text, got {other:?}")),
                            Err(tungstenite::Error::Io(e)) if would_block(&e) => break false,
                            Err(e) => return Err(e.to_string()),
                        }
                    };
                    if !prompted {
                        *ws = Some(Ws::Open(socket));
                        return Ok(());
                    }
                    self.prompt = Some(ctx.started.elapsed());
                    match socket.close(None) {
                        Ok(()) => {}
                        Err(tungstenite::Error::Io(e)) if would_block(&e) => {}
                        // Already closed by the server, or gone: done.
                        Err(_) => {
                            self.finish();
                            return Ok(());
                        }
                    }
                    self.phase = Phase::Closing(socket);
                }
                Phase::Closing(socket) => {
                    // Until the server's close frame, or the end.
                    loop {
                        match socket.read() {
                            Ok(_) => {}
                            Err(tungstenite::Error::Io(e)) if would_block(&e) => return Ok(()),
                            Err(_) => break,
                        }
                    }
                    self.finish();
                    return Ok(());
                }
                Phase::Over => return Ok(()),
            }
        }
    }
}

/// What every browser of a thread shares.
struct Ctx<'a> {
    tls: bool,
    addr: SocketAddr,
    registry: &'a Registry,
    started: Instant,
}

/// Runs `n` browsers on this thread, all started once `start` is passed:
/// each one's outcome.
fn browse(
    tls: bool,
    addr: SocketAddr,
    n: usize,
    timeout: Duration,
    start: &Barrier,
) -> Result<Vec<Result<Done, String>>, Error> {
    let mut poll = Poll::new()?;
    let mut events = Events::with_capacity(1024);
    let mut buf = vec![0u8; 64 * 1024];
    let registry = poll.registry().try_clone()?;
    start.wait();
    let ctx = Ctx {
        tls,
        addr,
        registry: &registry,
        started: Instant::now(),
    };
    let deadline = ctx.started + timeout;
    let mut browsers: Vec<Browser> = Vec::with_capacity(n);
    for id in 0..n {
        let mut b = Browser {
            id,
            tls: tls.then(browser_tls),
            phase: Phase::Over,
            bytes: 0,
            prompt: None,
            outcome: None,
        };
        match Get::new(b.tls.as_ref(), addr, "/", ctx.registry, Token(id * SLOTS)) {
            Ok(get) => {
                b.phase = Phase::Page(get);
                // The ClientHello (or the request) goes out at once, as a
                // browser's does: the server greets a connection that says
                // nothing for 300 ms as a person at netcat, in plain text.
                b.drive(&ctx, &mut buf);
            }
            Err(e) => b.fail(format!("connect: {e}")),
        }
        browsers.push(b);
    }
    let mut left = browsers.iter().filter(|b| b.outcome.is_none()).count();
    while left > 0 {
        let now = Instant::now();
        if now >= deadline {
            for b in browsers.iter_mut().filter(|b| b.outcome.is_none()) {
                b.fail(format!("not done after {timeout:?}"));
            }
            break;
        }
        match poll.poll(
            &mut events,
            Some((deadline - now).min(Duration::from_millis(100))),
        ) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e.into()),
        }
        for event in &events {
            let b = &mut browsers[event.token().0 / SLOTS];
            if b.outcome.is_some() {
                continue;
            }
            b.drive(&ctx, &mut buf);
            if b.outcome.is_some() {
                left -= 1;
                // Its sockets close now.
                b.phase = Phase::Over;
            }
        }
    }
    Ok(browsers
        .into_iter()
        .map(|b| b.outcome.expect("every browser has an outcome"))
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versioned_urls_come_out_of_the_page() {
        let html = "<link rel=\"manifest\" href=\"/manifest.webmanifest?v=11\">\n\
                    <link rel=\"stylesheet\" href=\"/style.css?v=0123abcd\">\n\
                    <script src=\"/boot.js?v=77\"></script>\n\
                    <script type=\"module\" src=\"/app.js?v=89ef4567\"></script>";
        assert_eq!(
            page_urls(html),
            Ok([
                "/app.js?v=89ef4567".to_owned(),
                "/boot.js?v=77".to_owned(),
                "/style.css?v=0123abcd".to_owned()
            ])
        );
    }

    #[test]
    fn unversioned_or_unquoted_urls_are_not_taken() {
        assert_eq!(versioned_url("<script src=\"/app.js\">", "/app.js"), None);
        assert_eq!(versioned_url("<script src=/app.js?v=12>", "/app.js"), None);
        // Unterminated, or an empty version.
        assert_eq!(versioned_url("src=\"/app.js?v=12", "/app.js"), None);
        assert_eq!(versioned_url("src=\"/app.js?v=\"", "/app.js"), None);
        // Not a prefix of a longer name.
        assert_eq!(versioned_url("\"/app.json?v=1\"", "/app.js"), None);
        assert!(page_urls("\"/app.js?v=1\"").is_err());
    }

    #[test]
    fn the_served_page_names_both_files() {
        // The page as the server builds it from `web/`, and its answer to
        // each URL taken out of it: the versioned (immutable) copy.
        use crate::transport::http::Request;
        use crate::transport::web::{find, serve};
        let get = |path: &str| {
            let request = Request {
                method: "GET".into(),
                path: path.into(),
                ..Request::default()
            };
            let index = find(path.split('?').next().unwrap_or_default()).expect("a file");
            String::from_utf8_lossy(&serve(index, &request, true)).into_owned()
        };
        let page = get("/");
        let urls = page_urls(&page).expect("both URLs in the page");
        for url in urls {
            assert!(
                get(&url).contains("immutable"),
                "{url} is not the current version"
            );
        }
    }
}
